"""Checkpoints: safe to load (weights_only=True), complete per docs/design.md, atomic, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mura.config import config_from_dict
from mura.constants import BODY_PARTS
from mura.data.transforms import Preprocessing
from mura.errors import MuraError
from mura.training.checkpoint import load_checkpoint, load_model, save_checkpoint
from mura.training.loop import train

BEST_KEYS = {
    "format_version",
    "model_state",
    "config",
    "body_parts",
    "preprocessing",
    "threshold",
    "temperature",
    "val_metrics",
    "epoch",
    "versions",
}
RESUME_KEYS = {"optimizer", "scheduler", "scaler", "rng", "early_stopping", "history"}


@pytest.fixture(scope="module")
def trained_run(synthetic_mura, tmp_path_factory):
    from mura.config import load_config

    out = tmp_path_factory.mktemp("ckpt") / "run"
    cfg = load_config(
        overrides={
            "data.cache": str(synthetic_mura.cache_dir),
            "data.workers": 0,
            "model.name": "custom_cnn",
            "model.freeze": "full",
            "model.size": 32,
            "train.epochs": 1,
            "train.batch_size": 16,
            "out": str(out),
        }
    )
    return train(cfg)


def test_checkpoints_hold_the_design_contents_and_load_with_weights_only(trained_run) -> None:
    best = torch.load(trained_run.best_checkpoint, weights_only=True)
    last = torch.load(trained_run.last_checkpoint, weights_only=True)
    assert set(best) >= BEST_KEYS
    assert set(last) >= BEST_KEYS | RESUME_KEYS
    assert best["body_parts"] == list(BODY_PARTS)
    assert set(best["threshold"]) >= {"default", "youden", "sensitivity_0.90"}
    assert best["threshold"]["default"] == 0.5 and 0.0 <= best["threshold"]["youden"] <= 1.0
    assert best["temperature"] > 0
    pre = Preprocessing.from_dict(best["preprocessing"])
    assert pre.size == 32 and pre.resize_mode == "stretch"
    assert config_from_dict(best["config"]).model.name == "custom_cnn"
    assert best["val_metrics"]["monitor"] == "val_loss"
    assert (trained_run.run_dir / "config.yaml").is_file()
    assert (trained_run.run_dir / "metrics.csv").read_text().count("\n") == 2  # header + 1 epoch
    assert any((trained_run.run_dir / "tensorboard").iterdir())


def test_load_model_rebuilds_the_trained_model(trained_run, synthetic_mura) -> None:
    model, checkpoint = load_model(trained_run.best_checkpoint)
    assert not model.training
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, checkpoint["model_state"][name]), name
    x = torch.zeros(2, 1, 32, 32)
    fracture, body = model(x, torch.tensor([0, -1]))
    assert fracture.shape == (2, 2) and body.shape == (2, 7)


def test_missing_and_corrupt_checkpoints_are_one_line_errors(tmp_path: Path, trained_run) -> None:
    with pytest.raises(MuraError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(trained_run.best_checkpoint.read_bytes()[:1000])
    with pytest.raises(MuraError, match="truncated.pt"):
        load_checkpoint(truncated)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(1)}, foreign)
    with pytest.raises(MuraError, match="not a mura checkpoint"):
        load_checkpoint(foreign)


def test_save_is_atomic_when_writing_fails(tmp_path: Path) -> None:
    path = tmp_path / "best.pt"
    save_checkpoint(path, {"model_state": {}, "config": {}, "n": 1})

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        save_checkpoint(path, {"model_state": {}, "config": {}, "bad": Unpicklable()})
    assert torch.load(path, weights_only=True)["n"] == 1  # the old file survives intact
    assert [p.name for p in tmp_path.iterdir()] == ["best.pt"]  # no temp file left behind


def test_refuses_to_overwrite_a_run_without_resume(trained_run) -> None:
    from mura.config import load_config

    cfg = load_config(overrides={"data.cache": "x", "out": str(trained_run.run_dir)})
    with pytest.raises(MuraError, match="--resume"):
        train(cfg)

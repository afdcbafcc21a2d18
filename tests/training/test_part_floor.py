"""The body-part confidence floor: its fit, and a small FracAtlas run that never calls a hand, leg or hip
film SHOULDER unless it is as sure as it was validated to be."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from mura.checkpoint import load_checkpoint
from mura.config import load_config
from mura.data.cache import build_cache
from mura.data.folders import build_folder_index
from mura.data.index import write_index
from mura.inference.predictor import Predictor
from mura.training.loop import train
from mura.training.part_floor import NO_TRUSTED_GUESS, drop_body_parts, fit_body_part_floor

FILMS_PER_REGION = {"HAND": 60, "LEG": 60, "HIP": 60, "SHOULDER": 60}


def test_the_floor_is_the_lowest_confidence_whose_films_are_named_right_95_percent() -> None:
    top = np.linspace(1.0, 0.3, 100)
    correct = np.ones(100, bool)
    correct[[10, 50, 70, 71, 72, 73, 74, 75]] = False
    # the 71 surest are 68/71 = 95.8% right, the 72 surest 68/72 = 94.4%
    assert fit_body_part_floor(top, correct) == top[70]
    assert fit_body_part_floor(top[:0], correct[:0]) == NO_TRUSTED_GUESS  # nothing measured: trust none
    assert fit_body_part_floor(top, np.zeros(100, bool)) == NO_TRUSTED_GUESS


def test_part_dropout_hides_about_its_share_of_given_parts() -> None:
    parts = torch.arange(9).repeat(1000)
    fed = drop_body_parts(parts, torch.Generator().manual_seed(0))
    hidden = fed == -1
    assert 0.13 < float(hidden.float().mean()) < 0.17 and torch.equal(fed[~hidden], parts[~hidden])


def test_fracatlas_hand_leg_and_hip_films_are_shoulder_only_above_the_floor(
    fracatlas_dir, tmp_path: Path
) -> None:
    started = time.process_time()
    frame, _ = build_folder_index(fracatlas_dir)
    picked = pd.concat(
        [frame[frame["body_part"] == part].iloc[::7].head(n) for part, n in FILMS_PER_REGION.items()]
    )
    picked = picked.assign(split=np.resize(["train", "train", "train", "val", "test"], len(picked)))
    write_index(picked, tmp_path / "index.csv")
    build_cache(tmp_path / "index.csv", tmp_path / "cache", size=64, progress=False)
    cfg = load_config(
        overrides={
            "data.cache": str(tmp_path / "cache"),
            "data.index": str(tmp_path / "index.csv"),
            "data.workers": 0,
            "model.name": "custom_cnn",
            "model.size": 64,
            "model.freeze": "full",
            "train.epochs": 4,
            "train.batch_size": 16,
            "train.threads": 0,
            "out": str(tmp_path / "run"),
        }
    )
    result = train(cfg)
    floor = load_checkpoint(result.best_checkpoint).meta.body_part_floor
    assert floor is not None and 0.0 < floor <= 1.0
    predictor = Predictor.from_checkpoints([result.best_checkpoint], device="cpu")
    test = predictor.predict_cache(tmp_path / "cache", split="test", body_part_mode="predicted")
    others = test[test["body_part"].isin(["HAND", "LEG", "HIP"])]
    called_shoulder = others["body_part_fed"] == "SHOULDER"
    assert len(others) >= 20 and (others.loc[called_shoulder, "body_part_prob"] >= floor).all()
    assert set(test["body_part_pred"]) - {"SHOULDER"}  # the head learned the other regions too
    assert time.process_time() - started < 180

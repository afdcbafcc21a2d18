"""`mura cv` passes its out-of-fold rows through the scope gate (layer 2, as `mura evaluate` does): a
refused film is listed apart and never reaches the OOF figures, the calibration or the operating points."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
from PIL import Image

from mura.checkpoint import load_checkpoint
from mura.config_loading import load_config
from mura.data.cache import build_cache
from mura.data.index import write_index
from mura.experiments.cv import cross_validate


def test_out_of_scope_oof_rows_are_listed_apart_and_left_out_of_the_decision_fit(
    make_radiograph, tmp_path
) -> None:
    folder = tmp_path / "films"
    folder.mkdir()
    rows = []
    for i in range(16):
        path = folder / f"film{i:02d}.png"
        Image.fromarray(make_radiograph("WRIST", abnormal=i % 2 == 0, seed=i, view=i % 2)).save(path)
        rows.append((path, i % 2))
    Image.fromarray(np.zeros((200, 200), np.uint8)).save(folder / "black.png")
    noise = np.random.default_rng(1).integers(0, 256, (200, 200), dtype=np.uint8)
    Image.fromarray(noise).save(folder / "noise.png")
    rows += [(folder / "black.png", 1), (folder / "noise.png", 0)]
    index = pd.DataFrame(
        {
            "path": [str(p) for p, _ in rows],
            "split": "train",
            "body_part": "WRIST",
            "patient_id": [f"p{i}" for i in range(len(rows))],
            "study_id": [f"s{i}" for i in range(len(rows))],
            "label": [label for _, label in rows],
            "view": 0,
        }
    )
    build_cache(write_index(index, tmp_path / "index.csv"), tmp_path / "cache", size=32, progress=False)
    cfg = load_config(
        overrides={
            "data.cache": str(tmp_path / "cache"),
            "data.workers": 0,
            "data.fold_splits": "train",
            "model.name": "custom_cnn",
            "model.size": 32,
            "train.epochs": 1,
            "train.batch_size": 8,
            "out": str(tmp_path / "cv"),
        }
    )
    result = cross_validate(cfg, 2, tta=False, n_bootstrap=0)
    oof = pd.read_csv(result.oof_predictions)
    assert len(oof) == 16 and not oof["path"].str.contains("black|noise").any()
    listed = pd.read_csv(result.out_dir / "oof" / "not_assessed.csv")
    assert sorted(listed["path"].str.rsplit("/", n=1).str[-1]) == ["black.png", "noise.png"]
    summary = json.loads((result.out_dir / "cv.json").read_text())
    assert summary["n_images"] == 16 and summary["not_assessed"]["by_layer"] == {"pixels": 2}
    assert summary["headline"].endswith("; 2 of 18 not assessed (pixels 2)")
    decision = load_checkpoint(result.final_checkpoints[0]).meta.decision
    assert "(16 images)" in decision.fitted_on  # calibration and operating points: the assessed rows only

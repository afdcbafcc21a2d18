"""Folder data sets: Kaggle-style class folders and FracAtlas (real radiographs)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from mura.cli import main
from mura.data.cache import build_cache, open_cache
from mura.data.folders import build_folder_index
from mura.data.splits import block_ids, split_blocks


def _write_png(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((20, 30), value, np.uint8)).save(path)


def test_kaggle_layout_keeps_its_splits(tmp_path: Path) -> None:
    for split in ("train", "val", "test"):
        for cls, value in (("fractured", 200), ("not fractured", 50)):
            for k in range(3):
                _write_png(tmp_path / "Bone_Break" / split / cls / f"{k}.png", value)
    (tmp_path / "Bone_Break" / "train" / "fractured" / ".DS_Store").write_bytes(b"x")
    _write_png(tmp_path / "Bone_Break" / "train" / "unsure" / "9.png", 0)
    frame, report = build_folder_index(tmp_path)
    assert len(frame) == 18 and report.junk_skipped == 1
    assert any("unsure/9.png" in w for w in report.warnings)
    assert (frame["label"] == frame["path"].str.contains("/fractured/")).all()
    assert (frame["split"] == frame["path"].str.extract(r"/(train|val|test)/")[0]).all()
    assert (frame["source"] == "folders").all() and (frame["body_part"] == "").all()


def test_custom_class_names_and_missing_splits_carved(tmp_path: Path) -> None:
    for k in range(40):
        _write_png(
            tmp_path / "XR_WRIST" / ("Abnormal" if k % 3 == 0 else "Normal_Films") / f"img{k:03d}.png", 9
        )
    frame, _ = build_folder_index(
        tmp_path, positive_classes=["abnormal"], negative_classes=["normal films"], block_size=5
    )
    assert len(frame) == 40 and frame["label"].sum() == 14
    assert set(frame["split"]) == {"train", "val", "test"}
    assert (frame["body_part"] == "WRIST").all()


def test_block_split_never_cuts_a_block() -> None:
    names = [f"IMG{i:07d}.jpg" for i in [*range(0, 60), *range(100, 160), *range(400, 480)]]
    splits = split_blocks(names, {"train": 0.6, "val": 0.2, "test": 0.2}, seed=1)
    blocks = block_ids(names)
    frame = pd.DataFrame({"block": blocks, "split": splits})
    assert (frame.groupby("block")["split"].nunique() == 1).all()
    shares = frame["split"].value_counts(normalize=True)
    assert abs(shares["train"] - 0.6) < 0.1 and set(shares.index) == {"train", "val", "test"}


def test_fracatlas_index_and_cache(fracatlas_dir: Path, tmp_path: Path) -> None:
    frame, report = build_folder_index(fracatlas_dir)
    table = pd.read_csv(fracatlas_dir / "dataset.csv")
    assert len(frame) == len(table) == 2826
    assert (frame["source"] == "fracatlas").all()
    # dataset.csv wins over the folder, with a warning naming the file
    row = frame[frame["path"].str.endswith("IMG0003298.jpg")].iloc[0]
    assert row["label"] == 0 and "/Fractured/" in row["path"]
    assert any("IMG0003298.jpg" in w for w in report.warnings)
    assert frame["label"].sum() == table["fractured"].sum() == 509
    for column in (
        "hardware",
        "frontal",
        "lateral",
        "oblique",
        "multiscan",
        "fracture_count",
        "region",
        "hand",
    ):
        assert column in frame.columns
    assert set(frame["body_part"]) == {"", "HAND", "LEG", "HIP", "SHOULDER"}
    ids = frame["path"].str.extract(r"IMG(\d+)")[0].astype(int) // 20
    assert (frame.groupby(ids)["split"].nunique() == 1).all()  # blocks of 20 ids never straddle splits
    info = build_cache(frame, tmp_path / "cache", size=64, progress=False)
    failures = pd.read_csv(tmp_path / "cache" / "failures.csv")
    assert info.images + len(failures) == 2826  # every image accounted for: cached or reported
    assert info.failed == len(failures) == 0  # truncated JPEGs and mixed modes all decode
    cache = open_cache(tmp_path / "cache")
    assert cache.images.shape == (2826, 64, 64) and cache.images.reshape(2826, -1).std(axis=1).min() > 5


def test_mura_index_gives_fracatlas_films_their_region(fracatlas_dir: Path, tmp_path: Path) -> None:
    """Hand, leg and hip films are their region's class (not unknown, never SHOULDER); films flagged
    with several regions have no body part."""
    assert main(["index", str(fracatlas_dir), "--format", "folders", "--out", str(tmp_path / "i.csv")]) == 0
    frame = pd.read_csv(tmp_path / "i.csv", keep_default_na=False)
    table = pd.read_csv(fracatlas_dir / "dataset.csv")
    flags = table[["hand", "leg", "hip", "shoulder"]]
    parts = dict(zip(frame["path"].map(lambda p: Path(p).name), frame["body_part"], strict=True))
    for region, part in {"hand": "HAND", "leg": "LEG", "hip": "HIP", "shoulder": "SHOULDER"}.items():
        only = table.loc[(flags[region] == 1) & (flags.sum(axis=1) == 1), "image_id"]
        assert len(only) > 50 and {parts[name] for name in only} == {part}
    several = table.loc[flags.sum(axis=1) > 1, "image_id"]
    assert len(several) > 50 and {parts[name] for name in several} == {""}

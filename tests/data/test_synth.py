"""Synthetic MURA: exact layout, deterministic, with the nuisances of real data, and learnable."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score

from mura.constants import BODY_PARTS
from mura.data.cache import open_cache
from mura.data.synth import generate_synthetic_mura, plan_studies


def _digest(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha1(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_same_seed_same_bytes_whatever_the_workers(tmp_path: Path) -> None:
    generate_synthetic_mura(tmp_path / "a", patients=8, seed=5, workers=1)
    generate_synthetic_mura(tmp_path / "b", patients=8, seed=5, workers=2)
    generate_synthetic_mura(tmp_path / "c", patients=8, seed=6, workers=1)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")


def test_layout_and_headerless_csvs(synthetic_mura) -> None:
    mura = synthetic_mura.root / "MURA-v1.1"
    paths = (mura / "train_image_paths.csv").read_text().splitlines()
    assert paths[0].startswith("MURA-v1.1/train/XR_") and paths[0].endswith(".png")
    studies = (mura / "valid_labeled_studies.csv").read_text().splitlines()
    assert studies[0].startswith("MURA-v1.1/valid/XR_") and studies[0][-2:] in (",0", ",1")
    for line in studies:
        study, label = line.rsplit(",", 1)
        assert study.endswith(("_positive/", "_negative/")) and (label == "1") == ("_positive/" in study)
        n_images = len(list((synthetic_mura.root / study).glob("image*.png")))
        assert 1 <= n_images <= 4


def test_plan_is_mura_like() -> None:
    plans = plan_studies(2000, seed=0)
    patients = {(p.split, p.patient) for p in plans}
    valid_share = sum(s == "valid" for s, _ in patients) / len(patients)
    positive_rate = np.mean([p.label for p in plans])
    assert 0.08 < valid_share < 0.12 and 0.33 < positive_rate < 0.47
    assert {p.part for p in plans} == set(BODY_PARTS)
    assert {p.views for p in plans} == {1, 2, 3, 4}


def test_real_data_nuisances_present(synthetic_mura) -> None:
    files = sorted((synthetic_mura.root / "MURA-v1.1").rglob("image*.png"))
    modes, sizes = set(), []
    for path in files:
        with Image.open(path) as image:
            modes.add(image.mode)
            sizes.append(image.size)
    assert {"L", "RGB"} <= modes and modes & {"I;16", "I"}
    sides = np.array(sizes)
    assert sides.max() == 512 and sides.min() < 300 and len(set(sizes)) > 10
    assert list((synthetic_mura.root / "MURA-v1.1").rglob("._*"))


def test_body_part_carries_signal(synthetic_mura) -> None:
    """A linear model on 16x16 thumbnails finds body part far above chance (anatomy differs)."""
    cache = open_cache(synthetic_mura.cache_dir)
    thumbs = cache.images.reshape(-1, 16, 4, 16, 4).mean(axis=(2, 4)).reshape(len(cache.images), -1) / 255
    parts = cache.index["body_part"].to_numpy()
    accuracy = cross_val_score(LogisticRegression(max_iter=2000), thumbs, parts, cv=3).mean()
    assert accuracy > 0.5  # chance is about 0.2

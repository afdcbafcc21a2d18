"""Shared fixtures, one factory each: a synthetic MURA tree with its index and caches, checkpoints, tiny
training configs, radiographs and DICOM files, and the FracAtlas path.

The data and the checkpoints are built once per test session, so every area's tests can train,
evaluate and serve on them without paying for them again. The factories themselves live in
`tests/factories/`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytest

from mura.config import Config
from mura.config_loading import load_config
from mura.data.boxes import write_index_boxes
from mura.data.cache import build_cache
from mura.data.index import build_mura_index, write_index
from mura.data.synth import generate_synthetic_mura, render_image
from tests.factories.checkpoints import smooth_images as smooth_image_list
from tests.factories.checkpoints import write_checkpoint
from tests.factories.dicom import dicom_bytes, dicom_dataset, twelve_bit

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = REPO_ROOT / ".." / "shared"

CheckpointFactory = Callable[..., Path]


class SyntheticMura(NamedTuple):
    root: Path  # the directory that contains MURA-v1.1/
    index_csv: Path  # index written by build_mura_index (patient split, seed 0)
    cache_dir: Path  # cache of that index at 64 px, stretch
    small_cache_dir: Path  # the same at 32 px (fast training tests; a model reads only its own size)


@pytest.fixture(scope="session")
def synthetic_mura(tmp_path_factory: pytest.TempPathFactory) -> SyntheticMura:
    base = tmp_path_factory.mktemp("synthetic_mura")
    root = base / "data"
    generate_synthetic_mura(root, patients=60, seed=0)
    frame, report = build_mura_index(root)
    index_csv = write_index(frame, base / "index.csv")
    write_index_boxes(report.boxes, index_csv)  # the planted findings' boxes: the caches carry them
    cache_dir = base / "cache64"
    build_cache(index_csv, cache_dir, size=64, resize="stretch", progress=False)
    small_cache_dir = base / "cache32"
    build_cache(index_csv, small_cache_dir, size=32, resize="stretch", progress=False)
    return SyntheticMura(root, index_csv, cache_dir, small_cache_dir)


@pytest.fixture(scope="session")
def fracatlas_dir() -> Path:
    path = (SHARED_DIR / "data" / "fracatlas").resolve()
    if not (path / "dataset.csv").is_file():
        pytest.skip(f"FracAtlas not found at {path}")
    return path


@pytest.fixture(scope="session")
def make_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> CheckpointFactory:
    """`make_checkpoint("a.pt", "custom_cnn", 32, seed=1, threshold=..., temperature=..., resize_mode=...,
    body_part_head=..., epoch=..., val_metrics=..., test_metrics=...)` -> path (`write_checkpoint`).

    One file per name per session: asking for a name again with other arguments is a mistake in the
    test, refused rather than answered with the first file."""
    directory = tmp_path_factory.mktemp("checkpoints")
    made: dict[str, tuple[Path, tuple[Any, ...], dict[str, Any]]] = {}

    def make(filename: str, *args: Any, **kwargs: Any) -> Path:
        if filename not in made:
            made[filename] = (write_checkpoint(directory / filename, *args, **kwargs), args, kwargs)
        path, first_args, first_kwargs = made[filename]
        assert (first_args, first_kwargs) == (args, kwargs), f"{filename} was made with other arguments"
        return path

    return make


@pytest.fixture(scope="session")
def tiny_checkpoint(make_checkpoint: CheckpointFactory) -> Path:
    """custom_cnn at 32 px as a finished run leaves it: best epoch 3, two operating points, validation
    metrics, and test metrics recorded by `mura evaluate --record` (the service and DICOM node model)."""
    return make_checkpoint(
        "best.pt",
        threshold={"default": 0.5, "youden": 0.47},
        epoch=3,
        val_metrics={"auc": 0.61, "kappa": 0.12, "loss": 0.69},
        test_metrics={
            "data": "index.csv",
            "n_images": 40,
            "image": {"default": {"roc_auc": 0.58}},
            "study": {},
        },
    )


@pytest.fixture(scope="session")
def make_cfg(
    synthetic_mura: SyntheticMura, tmp_path_factory: pytest.TempPathFactory
) -> Callable[..., Config]:
    """`make_cfg("name", **overrides)`: custom_cnn at 32 px on the 32 px cache, 2 epochs, 0 workers,
    writing to a new folder `.../name*/run`."""

    def make(out: str = "run", **overrides: Any) -> Config:
        settings = {
            "data.cache": str(synthetic_mura.small_cache_dir),
            "data.index": str(synthetic_mura.index_csv),
            "data.workers": 0,
            "model.name": "custom_cnn",
            "model.freeze": "full",
            "model.size": 32,
            "train.epochs": 2,
            "train.batch_size": 16,
            "train.threads": 0,
            "out": str(tmp_path_factory.mktemp(out) / "run"),
        }
        return load_config(overrides={**settings, **overrides})

    return make


@pytest.fixture(scope="session")
def smooth_images() -> Callable[..., list[np.ndarray]]:
    """`smooth_images(n, seed=1)`: uint8 radiograph-like images like those the test models saw."""
    return smooth_image_list


@pytest.fixture(scope="session")
def make_radiograph() -> Callable[..., np.ndarray]:
    """`make_radiograph(part, abnormal, seed, view)` -> a synthetic radiograph, uint8 [H, W]."""

    def make(part: str = "WRIST", abnormal: bool = True, seed: int = 0, view: int = 0) -> np.ndarray:
        return render_image(part, abnormal, [seed, 1, 1], view)

    return make


@pytest.fixture(scope="session")
def make_dicom() -> Callable[..., bytes]:
    """`make_dicom(image, body_part="WRIST", **fields)`: a uint8 radiograph as the bytes of a 12-bit DX
    file (what an upload or a C-STORE carries); `fields` as `dicom_dataset` takes them."""

    def make(image: np.ndarray, body_part: str | None = "WRIST", **fields: Any) -> bytes:
        return dicom_bytes(dicom_dataset(twelve_bit(image), body_part=body_part, **fields))

    return make

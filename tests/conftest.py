"""Shared fixtures: a small synthetic MURA tree with its index and 64 px cache, and the FracAtlas path.

Built once per test session (about 190 images) so every area's tests can train, evaluate and serve on
the same data without paying for it again.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import pytest

from mura.data.cache import build_cache
from mura.data.index import build_mura_index, write_index
from mura.data.synth import generate_synthetic_mura

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = REPO_ROOT / ".." / "shared"


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
    frame, _ = build_mura_index(root)
    index_csv = write_index(frame, base / "index.csv")
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

"""Fixtures for the training tests: small, fast configs on the shared synthetic MURA cache."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mura.config import Config, load_config


@pytest.fixture
def make_cfg(synthetic_mura: Any, tmp_path: Path):
    """Config factory: custom_cnn at 32 px on the 32 px cache, 2 epochs, 0 workers."""

    def make(out: str = "run", **overrides: Any) -> Config:
        base = {
            "data.cache": str(synthetic_mura.small_cache_dir),
            "data.index": str(synthetic_mura.index_csv),
            "data.workers": 0,
            "model.name": "custom_cnn",
            "model.freeze": "full",
            "model.size": 32,
            "train.epochs": 2,
            "train.batch_size": 16,
            "train.threads": 0,
            "out": str(tmp_path / out),
        }
        base.update(overrides)
        return load_config(overrides=base)

    return make

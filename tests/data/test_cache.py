"""The image cache: one memory-mapped array, reused when nothing changed, robust to bad files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mura.cli import main
from mura.data import cache as cache_module
from mura.data.cache import build_cache, open_cache
from mura.data.images import load_grayscale
from mura.data.index import read_index
from mura.data.synth import generate_synthetic_mura
from mura.errors import MuraError
from mura.preprocessing import resize_image


def test_cache_holds_every_image_resized(synthetic_mura) -> None:
    cache = open_cache(synthetic_mura.cache_dir)
    index = read_index(synthetic_mura.index_csv)
    assert cache.images.shape == (len(index), 64, 64) and cache.images.dtype == np.uint8
    assert not cache.images.flags.writeable
    assert cache.index["cache_row"].tolist() == list(range(len(index)))
    assert cache.index["path"].tolist() == index["path"].tolist()
    for row in (0, len(index) // 2, len(index) - 1):
        expected = resize_image(load_grayscale(index["path"].iloc[row]), 64, "stretch")
        assert np.array_equal(cache.images[row], expected)
    assert cache.settings["size"] == 64 and cache.settings["resize"] == "stretch"
    assert set(cache.rows("train")) | set(cache.rows("val")) | set(cache.rows("test")) == set(
        range(len(index))
    )


def test_second_build_is_reused_without_decoding(synthetic_mura, monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*_args, **_kwargs):
        raise AssertionError("decoded although the cache was up to date")

    monkeypatch.setattr(cache_module, "load_grayscale", fail)
    info = build_cache(synthetic_mura.index_csv, synthetic_mura.cache_dir, size=64, workers=1, progress=False)
    assert info.reused and info.images == len(read_index(synthetic_mura.index_csv))


def test_changed_settings_or_inputs_rebuild(synthetic_mura, tmp_path: Path) -> None:
    index = read_index(synthetic_mura.index_csv).iloc[:12]
    first = build_cache(index, tmp_path / "c", size=32, workers=1, progress=False)
    assert not first.reused
    assert build_cache(index, tmp_path / "c", size=32, workers=1, progress=False).reused
    boxed = build_cache(index, tmp_path / "c", size=32, resize="letterbox", workers=1, progress=False)
    assert not boxed.reused and open_cache(tmp_path / "c").settings["resize"] == "letterbox"
    relabelled = index.assign(label=1 - index["label"])
    assert not build_cache(
        relabelled, tmp_path / "c", size=32, resize="letterbox", workers=1, progress=False
    ).reused


def test_bad_files_are_reported_and_left_out(synthetic_mura, tmp_path: Path) -> None:
    index = read_index(synthetic_mura.index_csv).iloc[:20].copy()
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 50)
    index.loc[index.index[3], "path"] = str(tmp_path / "corrupt.png")
    index.loc[index.index[7], "path"] = str(tmp_path / "gone.png")
    info = build_cache(index, tmp_path / "c", size=32, workers=2, progress=False)
    assert (info.images, info.failed) == (18, 2)
    failures = pd.read_csv(tmp_path / "c" / "failures.csv")
    assert failures["path"].tolist() == [str(tmp_path / "corrupt.png"), str(tmp_path / "gone.png")]
    assert "not found" in failures["reason"].iloc[1]
    cache = open_cache(tmp_path / "c")
    kept = index.drop(index.index[[3, 7]])
    assert cache.index["path"].tolist() == kept["path"].tolist()
    assert np.array_equal(cache.images[5], resize_image(load_grayscale(kept["path"].iloc[5]), 32))


def test_corrupt_png_in_tree_via_cli_exits_zero(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    generate_synthetic_mura(tmp_path / "d", patients=6, seed=1, workers=1)
    victim = sorted((tmp_path / "d").rglob("image1.png"))[0]
    victim.write_bytes(victim.read_bytes()[:40])  # header survives, pixel data is gone
    assert main(["index", str(tmp_path / "d"), "--out", str(tmp_path / "i.csv")]) == 0
    assert (
        main(["prepare", str(tmp_path / "i.csv"), "--size", "32", "--out", str(tmp_path / "c"), "--quiet"])
        == 0
    )
    failures = pd.read_csv(tmp_path / "c" / "failures.csv")
    assert failures["path"].tolist() == [str(victim.resolve())]
    settings = json.loads((tmp_path / "c" / "settings.json").read_text())
    assert settings["counts"]["failed"] == 1
    assert settings["counts"]["cached"] == settings["counts"]["indexed"] - 1
    assert "1 failed" in capsys.readouterr().out


def test_open_cache_errors_are_clear(synthetic_mura, tmp_path: Path) -> None:
    with pytest.raises(MuraError, match="not found"):
        open_cache(tmp_path / "none")
    (tmp_path / "half").mkdir()
    with pytest.raises(MuraError, match="unfinished or corrupt"):
        open_cache(tmp_path / "half")
    index = read_index(synthetic_mura.index_csv).iloc[:5]
    build_cache(index, tmp_path / "c", size=16, workers=1, progress=False)
    np.save(tmp_path / "c" / "images.npy", np.zeros((3, 16, 16), np.uint8))
    with pytest.raises(MuraError, match="rerun `mura prepare`"):
        open_cache(tmp_path / "c")

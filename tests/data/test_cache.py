"""The image cache: one memory-mapped array, reused when nothing changed, robust to bad files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import mura
from mura.cli import main
from mura.data import cache as cache_module
from mura.data.cache import build_cache, open_cache
from mura.data.cache_settings import CacheSettings
from mura.data.images import load_grayscale
from mura.data.index import read_index, write_index
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
    assert cache.settings.input_spec == (64, "stretch")
    assert set(cache.rows("train")) | set(cache.rows("val")) | set(cache.rows("test")) == set(
        range(len(index))
    )


def test_second_build_is_reused_without_decoding(synthetic_mura, monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*_args, **_kwargs):
        raise AssertionError("decoded although the cache was up to date")

    monkeypatch.setattr(cache_module, "read_image", fail)
    info = build_cache(synthetic_mura.index_csv, synthetic_mura.cache_dir, size=64, workers=1, progress=False)
    assert info.reused and info.images == len(read_index(synthetic_mura.index_csv))


def test_changed_settings_or_inputs_rebuild(synthetic_mura, tmp_path: Path) -> None:
    index = read_index(synthetic_mura.index_csv).iloc[:12]
    first = build_cache(index, tmp_path / "c", size=32, workers=1, progress=False)
    assert not first.reused
    assert build_cache(index, tmp_path / "c", size=32, workers=1, progress=False).reused
    boxed = build_cache(index, tmp_path / "c", size=32, resize="letterbox", workers=1, progress=False)
    assert not boxed.reused and open_cache(tmp_path / "c").settings.resize == "letterbox"
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
    (tmp_path / "empty").mkdir()
    with pytest.raises(MuraError, match="not a mura cache"):
        open_cache(tmp_path / "empty")
    index = read_index(synthetic_mura.index_csv).iloc[:5]
    build_cache(index, tmp_path / "c", size=16, workers=1, progress=False)
    (tmp_path / "c" / "settings.json").unlink()  # as after a killed build
    with pytest.raises(MuraError, match="unfinished or corrupt.*`mura prepare` will rebuild it"):
        open_cache(tmp_path / "c")
    build_cache(index, tmp_path / "c", size=16, workers=1, progress=False)
    np.save(tmp_path / "c" / "images.npy", np.zeros((3, 16, 16), np.uint8))
    with pytest.raises(MuraError, match="damaged: images.npy has .* bytes.*`mura prepare` will rebuild it"):
        open_cache(tmp_path / "c")
    assert not build_cache(index, tmp_path / "c", size=16, workers=1, progress=False).reused
    settings = json.loads((tmp_path / "c" / "settings.json").read_text())
    (tmp_path / "c" / "settings.json").write_text(json.dumps({**settings, "format": 1}))
    with pytest.raises(MuraError, match="cache format 1.*will rebuild it"):
        open_cache(tmp_path / "c")
    assert not build_cache(index, tmp_path / "c", size=16, workers=1, progress=False).reused
    assert len(open_cache(tmp_path / "c").index) == 5


def test_settings_of_every_cache_format_are_read_into_one_type(synthetic_mura) -> None:
    written = json.loads((synthetic_mura.cache_dir / "settings.json").read_text())
    settings = CacheSettings.from_dict(written)
    assert settings.to_dict() == written  # reading changes nothing that feature-cache keys hash
    assert settings.files["images.npy"].shape == (settings.counts.cached, 64, 64)
    format_1 = {  # what the first `mura prepare` wrote: no file records, no warnings count
        "format": 1,
        "size": 32,
        "resize": "letterbox",
        "fingerprint": "abc",
        "counts": {"indexed": 5, "cached": 4, "failed": 1},
        "splits": {"train": 4},
        "created": "2026-01-01T00:00:00",
    }
    old = CacheSettings.from_dict(format_1)
    assert old.input_spec == (32, "letterbox") and old.counts.warned == 0 and not old.files
    unnamed = {k: v for k, v in format_1.items() if k != "resize"}
    assert CacheSettings.from_dict({**unnamed, "resize_mode": "letterbox"}).resize == "letterbox"
    assert CacheSettings.from_dict(unnamed).resize == "stretch"
    with pytest.raises(ValueError, match="resize mode 'crop'"):
        CacheSettings.from_dict({**format_1, "resize": "crop"})


def _listing(folder: Path) -> dict[str, bytes]:
    return {entry.name: entry.read_bytes() for entry in sorted(folder.iterdir()) if entry.is_file()}


def _subset(synthetic_mura, rows: slice) -> pd.DataFrame:
    return read_index(synthetic_mura.index_csv).iloc[rows].reset_index(drop=True)


def test_prepare_refuses_a_folder_holding_the_users_files(
    synthetic_mura, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    work = tmp_path / "work"
    write_index(_subset(synthetic_mura, slice(0, 6)), work / "index.csv")
    (work / "notes.txt").write_text("mine\n")
    before = _listing(work)
    argv = ["prepare", str(work / "index.csv"), "--out", str(work), "--size", "16", "--quiet"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert str(work) in err and "not a mura cache" in err and "new or empty folder" in err
    with pytest.raises(MuraError, match="not empty"):
        build_cache(work / "index.csv", work, size=16, workers=1, progress=False)
    (tmp_path / "file").write_text("x")
    with pytest.raises(MuraError, match="not a folder"):
        build_cache(work / "index.csv", tmp_path / "file", size=16, workers=1, progress=False)
    assert _listing(work) == before and sorted(p.name for p in work.iterdir()) == sorted(before)
    argv[3] = str(work / "cache")  # a new folder inside is fine, and the user's files stay as they were
    assert main(argv) == 0
    assert _listing(work) == before and open_cache(work / "cache").images.shape == (6, 16, 16)


def test_truncated_images_are_reported_then_rebuilt(synthetic_mura, tmp_path: Path) -> None:
    index = _subset(synthetic_mura, slice(0, 12))
    build_cache(index, tmp_path / "c", size=32, workers=1, progress=False)
    images = tmp_path / "c" / "images.npy"
    images.write_bytes(images.read_bytes()[:-1000])  # as after a full disk or an interrupted copy
    with pytest.raises(
        MuraError, match=r"the cache is damaged: images\.npy has .*`mura prepare` will rebuild"
    ):
        open_cache(tmp_path / "c")
    info = build_cache(index, tmp_path / "c", size=32, workers=1, progress=False)
    assert not info.reused and "images.npy has" in info.damage
    cache = open_cache(tmp_path / "c")
    assert np.array_equal(cache.images[11], resize_image(load_grayscale(index["path"].iloc[11]), 32))
    assert build_cache(index, tmp_path / "c", size=32, workers=1, progress=False).reused


@pytest.mark.parametrize("damage", ["foreign images", "flipped pixel", "edited index"])
def test_same_size_changes_are_caught_by_the_checksum(synthetic_mura, tmp_path: Path, damage: str) -> None:
    index = _subset(synthetic_mura, slice(0, 12))
    build_cache(index, tmp_path / "c", size=32, workers=1, progress=False)
    intact = _listing(tmp_path / "c")
    if damage == "foreign images":  # another cache of as many images at the same size
        build_cache(
            _subset(synthetic_mura, slice(12, 24)), tmp_path / "other", size=32, workers=1, progress=False
        )
        (tmp_path / "c" / "images.npy").write_bytes((tmp_path / "other" / "images.npy").read_bytes())
    elif damage == "flipped pixel":
        data = bytearray(intact["images.npy"])
        data[-1] ^= 0xFF
        (tmp_path / "c" / "images.npy").write_bytes(bytes(data))
    else:
        text = intact["index.csv"].decode()
        (tmp_path / "c" / "index.csv").write_text(text.replace("patient", "Patient", 1))
    assert _listing(tmp_path / "c") != intact
    info = build_cache(index, tmp_path / "c", size=32, workers=1, progress=False)
    assert not info.reused and "does not match its checksum" in info.damage
    rebuilt = _listing(tmp_path / "c")
    assert rebuilt["images.npy"] == intact["images.npy"] and rebuilt["index.csv"] == intact["index.csv"]
    assert len(open_cache(tmp_path / "c").index) == 12


def test_stale_temporary_of_a_killed_prepare_is_removed(synthetic_mura, tmp_path: Path) -> None:
    index = _subset(synthetic_mura, slice(0, 8))
    build_cache(index, tmp_path / "c", size=16, workers=1, progress=False)
    child = subprocess.Popen([sys.executable, "-c", "pass"])  # noqa: S603
    child.wait()  # its pid now belongs to no process, as with a prepare killed by -9
    stale = tmp_path / "c" / f".images.tmp-{child.pid}.npy"
    stale.write_bytes(b"\x00" * 4096)  # what kill -9 during a build leaves
    (tmp_path / "c" / "notes.txt").write_text("mine\n")
    intact = {k: v for k, v in _listing(tmp_path / "c").items() if k != stale.name}
    assert build_cache(index, tmp_path / "c", size=16, workers=1, progress=False).reused
    assert not stale.exists() and _listing(tmp_path / "c") == intact


def _big_index(synthetic_mura, path: Path) -> Path:
    """The session's images listed 20 times: thousands of rows, so a build runs for seconds."""
    return write_index(pd.concat([read_index(synthetic_mura.index_csv)] * 20, ignore_index=True), path)


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_during_prepare_leaves_no_temporary(
    synthetic_mura, tmp_path: Path, capsys: pytest.CaptureFixture, signum: int, status: int
) -> None:
    index_csv = _big_index(synthetic_mura, tmp_path / "big.csv")
    out = tmp_path / "c"
    env = {**os.environ, "PYTHONPATH": str(Path(mura.__file__).parents[1])}
    argv = [sys.executable, "-m", "mura", "prepare", str(index_csv), "--out", str(out), "--size", "32"]
    proc = subprocess.Popen(  # noqa: S603
        [*argv, "--workers", "2", "--quiet"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # A job started in the background inherits SIGINT ignored (and Python then keeps it ignored);
        # a terminal's prepare has the default disposition, which is what this test is about.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # noqa: PLW1509
    )
    try:
        temporary = out / f".images.tmp-{proc.pid}.npy"
        deadline = time.monotonic() + 60
        while not temporary.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert temporary.exists(), "the build never started its array"
        assert main([*argv[3:], "--quiet"]) == 2  # a second build into the same folder waits its turn
        assert "another `mura prepare` is writing this cache" in capsys.readouterr().err
        proc.send_signal(signum)  # SIGINT as a terminal's Ctrl-C, SIGTERM as `kill` or a service manager
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == status, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert sorted(p.name for p in out.iterdir()) == [".mura-cache"]  # no temporary, no half cache
    with pytest.raises(MuraError, match="unfinished or corrupt.*will rebuild"):
        open_cache(out)


def test_a_flipped_byte_in_the_images_is_caught_when_the_cache_is_opened(
    synthetic_mura, tmp_path: Path
) -> None:
    import shutil

    copy = tmp_path / "cache"
    shutil.copytree(synthetic_mura.small_cache_dir, copy)
    assert len(open_cache(copy).index) > 0  # intact: opens (and is remembered as checked)
    images = copy / "images.npy"
    data = bytearray(images.read_bytes())
    data[-100] ^= 0xFF  # a pixel, same size, same shape and dtype
    images.write_bytes(bytes(data))
    with pytest.raises(MuraError, match="images.npy does not match its checksum"):
        open_cache(copy)

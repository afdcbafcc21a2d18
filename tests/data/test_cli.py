"""The data commands end to end, and their one-line errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mura.cli import main
from mura.data.cache import open_cache
from mura.data.index import read_index, write_index
from mura.data.synth import generate_synthetic_mura


def _one_line_error(argv: list[str], capsys: pytest.CaptureFixture) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    return err


def test_synth_index_prepare(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["synth", str(tmp_path / "s"), "--patients", "10", "--seed", "4", "--workers", "1"]) == 0
    assert (tmp_path / "s" / "MURA-v1.1" / "train_image_paths.csv").is_file()
    assert (
        main(["index", str(tmp_path / "s"), "--out", str(tmp_path / "i.csv"), "--split-unit", "image"]) == 0
    )
    out = capsys.readouterr().out
    assert "body part" in out and "abnorm" in out and "studies" in out  # the Figure 1 table
    frame = read_index(tmp_path / "i.csv")
    assert f"all    ALL        {len(frame):>7}" in out
    assert (
        main(
            [
                "prepare",
                str(tmp_path / "i.csv"),
                "--size",
                "32",
                "--out",
                str(tmp_path / "c"),
                "--workers",
                "1",
                "--quiet",
            ]
        )
        == 0
    )
    assert open_cache(tmp_path / "c").images.shape == (len(frame), 32, 32)
    assert (
        main(["prepare", str(tmp_path / "i.csv"), "--size", "32", "--out", str(tmp_path / "c"), "--quiet"])
        == 0
    )
    assert "up to date" in capsys.readouterr().out


def test_missing_root_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    err = _one_line_error(["index", str(tmp_path / "nowhere"), "--out", str(tmp_path / "i.csv")], capsys)
    assert "nowhere: no such directory" in err
    err = _one_line_error(
        ["index", str(tmp_path / "nowhere"), "--format", "folders", "--out", "x.csv"], capsys
    )
    assert "nowhere" in err


def test_csv_pointing_at_missing_files_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    mura = tmp_path / "MURA-v1.1"
    mura.mkdir()
    rel = "MURA-v1.1/train/XR_WRIST/patient00001/study1_positive/image1.png"
    (mura / "train_image_paths.csv").write_text(rel + "\n")
    err = _one_line_error(["index", str(tmp_path), "--out", str(tmp_path / "i.csv")], capsys)
    assert "listed images are missing" in err and "patient00001" in err
    assert not (tmp_path / "i.csv").exists()


def test_empty_dataset_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "MURA-v1.1" / "train").mkdir(parents=True)
    (tmp_path / "MURA-v1.1" / "train" / ".DS_Store").write_bytes(b"x")
    err = _one_line_error(["index", str(tmp_path), "--out", str(tmp_path / "i.csv")], capsys)
    assert "no images found" in err
    (tmp_path / "folders").mkdir()
    err = _one_line_error(
        ["index", str(tmp_path / "folders"), "--format", "folders", "--out", "i.csv"], capsys
    )
    assert "no labelled images" in err


def test_prepare_with_missing_index_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    err = _one_line_error(["prepare", str(tmp_path / "none.csv"), "--out", str(tmp_path / "c")], capsys)
    assert "index file not found" in err


def test_prepare_reports_a_damaged_cache_and_stale_temporaries_in_one_line_each(
    synthetic_mura, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    index_csv = write_index(read_index(synthetic_mura.index_csv).iloc[:8], tmp_path / "i.csv")
    argv = [
        "prepare",
        str(index_csv),
        "--size",
        "16",
        "--out",
        str(tmp_path / "c"),
        "--workers",
        "1",
        "--quiet",
    ]
    assert main(argv) == 0
    capsys.readouterr()
    images = tmp_path / "c" / "images.npy"
    images.write_bytes(images.read_bytes()[:-100])
    child = subprocess.Popen([sys.executable, "-c", "pass"])  # noqa: S603
    child.wait()
    (tmp_path / "c" / f".images.tmp-{child.pid}.npy").write_bytes(b"\0" * 100)  # left by kill -9
    assert main(argv) == 0
    captured = capsys.readouterr()
    warnings = captured.err.strip().splitlines()
    assert len(warnings) == 2 and "Traceback" not in captured.err
    assert "removed 1 temporary file(s)" in warnings[0]
    assert "the cache is damaged (images.npy has" in warnings[1] and "rebuilding it" in warnings[1]
    assert captured.out.startswith("cached 8 images") and len(captured.out.strip().splitlines()) == 1
    assert open_cache(tmp_path / "c").images.shape == (8, 16, 16)
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == [
        ".mura-cache",
        "failures.csv",
        "images.npy",
        "index.csv",
        "settings.json",
        "warnings.csv",
    ]


def test_prepare_into_a_file_is_one_line(
    synthetic_mura, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    (tmp_path / "taken").write_text("user data\n")
    err = _one_line_error(
        ["prepare", str(synthetic_mura.index_csv), "--out", str(tmp_path / "taken")], capsys
    )
    assert "taken: exists and is not a folder" in err
    assert (tmp_path / "taken").read_text() == "user data\n"


def test_index_never_overwrites_a_file_that_is_not_an_index(tmp_path: Path, capsys) -> None:
    root = tmp_path / "data"
    generate_synthetic_mura(root, patients=4, seed=0)
    mine = tmp_path / "notes.csv"
    mine.write_text("patient,comment\n1,keep me\n")
    assert main(["index", str(root), "--out", str(mine)]) == 2
    assert (
        "is not a mura index" in capsys.readouterr().err
        and mine.read_text() == "patient,comment\n1,keep me\n"
    )
    ours = tmp_path / "index.csv"
    assert main(["index", str(root), "--out", str(ours)]) == 0
    assert main(["index", str(root), "--out", str(ours)]) == 0  # its own index: rewritten

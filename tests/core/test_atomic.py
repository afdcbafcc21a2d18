"""Atomic writes: the target holds the old or the new content, never a partial file or a stray temp."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mura.atomic import atomic_path, remove_stale_temporaries, temporary_name, write_text


def test_failure_keeps_old_file_and_removes_temp(tmp_path):
    target = tmp_path / "index.csv"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["index.csv"]


def test_success_replaces(tmp_path):
    target = write_text(tmp_path / "sub" / "a.json", "new")
    assert target.read_text() == "new"
    assert sorted(p.name for p in target.parent.iterdir()) == ["a.json"]


def test_stale_temporaries_of_dead_processes_are_removed(tmp_path):
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    stale = tmp_path / f".images.tmp-{int(dead.stdout)}.npy"
    stale.write_bytes(b"x" * 10)
    mine = temporary_name(tmp_path / "images.npy")
    mine.write_bytes(b"y")
    assert remove_stale_temporaries(tmp_path) == [stale]
    assert mine.exists() and not stale.exists()

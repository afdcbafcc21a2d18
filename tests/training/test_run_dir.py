"""No lost work in `mura train`: a run folder is never clobbered; a failed start leaves every file intact."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from mura.errors import MuraError
from mura.training.loop import train


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished_run(make_cfg):
    cfg = make_cfg("finished", **{"train.epochs": 1})
    train(cfg)
    return cfg


def test_a_finished_run_is_refused_without_resume_or_overwrite(finished_run) -> None:
    before = _snapshot(Path(finished_run.out))
    with pytest.raises(MuraError, match="already holds a run .*resume=True .*overwrite=True") as raised:
        train(finished_run)
    assert "--" not in str(raised.value)  # the Python API names its parameters, the CLI its flags
    with pytest.raises(MuraError, match="resume=True and overwrite=True contradict"):
        train(finished_run, resume=True, overwrite=True)
    assert _snapshot(Path(finished_run.out)) == before


def test_resume_with_nothing_to_resume_leaves_every_file_untouched(finished_run, tmp_path) -> None:
    run = Path(finished_run.out)
    before = _snapshot(run)
    (run / "last.pt").rename(tmp_path / "last.pt")  # e.g. deleted by hand, best.pt still good
    try:
        with pytest.raises(MuraError, match="nothing to resume"):
            train(finished_run, resume=True)
        assert _snapshot(run) == {k: v for k, v in before.items() if k != "last.pt"}
    finally:
        (tmp_path / "last.pt").rename(run / "last.pt")


def test_overwrite_starts_again_but_a_bad_input_keeps_the_old_run(finished_run) -> None:
    run = Path(finished_run.out)
    before = _snapshot(run)
    broken = finished_run.model_copy(deep=True)
    broken.model.size = 64  # the 32 px cache no longer fits: refused before anything is removed
    with pytest.raises(MuraError, match="the cache holds 32 px"):
        train(broken, overwrite=True)
    assert _snapshot(run) == before
    result = train(finished_run, overwrite=True)
    assert result.epochs_completed == 1 and (run / "best.pt").read_bytes() != before["best.pt"]


def test_the_index_given_is_read_and_must_be_the_caches(finished_run, synthetic_mura, tmp_path) -> None:
    other = pd.read_csv(synthetic_mura.index_csv, keep_default_na=False)
    other.loc[other["split"] == "train", "label"] = 1 - other.loc[other["split"] == "train", "label"]
    other.to_csv(tmp_path / "other.csv", index=False)
    cfg = finished_run.model_copy(deep=True)
    cfg.data.index, cfg.out = str(tmp_path / "other.csv"), str(tmp_path / "new_run")
    with pytest.raises(MuraError, match="built from another index"):
        train(cfg)
    cfg.data.index = str(tmp_path / "missing.csv")
    with pytest.raises(MuraError, match="index file not found"):
        train(cfg)
    assert not (tmp_path / "new_run").exists()


def test_cli_overwrite_and_resume_flags(finished_run) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mura", "train", "--config", str(Path(finished_run.out) / "config.yaml")],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2 and "already holds a run" in done.stderr
    assert "pass --resume to continue it or --overwrite to start it again" in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1

"""The run folder of `mura train`: which files a run owns, and whether this call may write them.

Checked before any data is read or anything written, so a refused start touches nothing. A folder
that already holds a run is refused unless the call resumes it (continue from `last.pt`; nothing to
resume is an error) or overwrites it; overwriting removes exactly the files listed here, and only
after the inputs were checked (`remove_run_files`), so a bad input never costs the old run.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

from mura.errors import MuraError

BEST_CHECKPOINT, LAST_CHECKPOINT = "best.pt", "last.pt"
# Files and folders a run writes into its folder; overwriting removes exactly these and nothing else.
RUN_FILES = (BEST_CHECKPOINT, LAST_CHECKPOINT, "config.yaml", "metrics.csv", "metrics.jsonl")
RUN_FOLDERS = ("tensorboard", "feature_cache")


def check_run_dir(run_dir: Path, *, resume: bool, overwrite: bool) -> list[Path]:
    """Refuse what would lose work (nothing is written); return what overwriting will remove."""
    if resume and overwrite:
        raise MuraError("resume=True and overwrite=True contradict each other: choose one")
    if resume:
        if not (run_dir / LAST_CHECKPOINT).is_file():
            raise MuraError(
                f"{run_dir}: nothing to resume (no {LAST_CHECKPOINT}); every file there is left as it was"
            )
        return []
    ours = [run_dir / name for name in RUN_FILES + RUN_FOLDERS if (run_dir / name).exists()]
    if ours and not overwrite:
        raise MuraError(
            f"{run_dir}: already holds a run ({', '.join(p.name for p in ours)}); pass resume=True to "
            "continue it or overwrite=True to start it again, or choose another run folder"
        )
    return ours


def remove_run_files(paths: Sequence[Path]) -> None:
    """Remove a previous run's files (what `check_run_dir` returned), once the new inputs are known good."""
    for path in paths:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)

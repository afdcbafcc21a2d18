"""Resuming `mura cv`: what each fold was trained from, so that a rerun reuses a fold only when nothing it
depends on has changed, and what a retrain removes.

Why: `mura cv` resumes (a finished fold is kept, an interrupted one continues). A fold kept after the
settings changed is dishonest: with 3 -> 4 folds, the kept 3-fold models had trained on films they then
predicted "out of fold", and calibration and operating points were fitted on those predictions. So
every fold folder carries `fold.json`, written before its training starts: the recipe (the config
less the keys that only say where and how fast it ran), the fold count and a digest of the fold of
every image, and the data (the cache's fingerprint). A fold is reused only when all of them match;
a stale fold is refused, or discarded with everything built on the folds (`discard`).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mura.config import Config
from mura.evaluation.report_folder import remove_report
from mura.training.run_dir import LAST_CHECKPOINT, check_run_dir, remove_run_files

FOLD_RECORD = "fold.json"
DONE = "done.json"  # a fold's seconds, written when it finished
CV_RESULTS = ("cv.json", "oof_predictions.csv")  # built on all folds; cv.json says the run finished
FOLD_NAME = re.compile(r"fold\d+")  # fold folders, and the fold ensemble's members in final/ (+ .pt)
# Where and how fast a fold ran, not what it learned: these may change between runs. The cache path
# is here because the data itself is compared by its fingerprint.
EXECUTION_KEYS = frozenset(
    {"out", "data.index", "data.cache", "data.workers", "data.persistent_workers"}
    | {"train.device", "train.threads"}
)
# Said by the fold count and assignment instead (and `data.fold` differs from fold to fold).
FOLD_KEYS = frozenset({"data.folds", "data.fold"})


def _flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def assignment_digest(paths: Iterable[str], folds: Iterable[int]) -> str:
    """SHA-256 of every (image path, fold) pair, in path order."""
    digest = hashlib.sha256()
    for path, fold in sorted(zip(paths, folds, strict=True)):
        digest.update(f"{path}\t{int(fold)}\n".encode())
    return digest.hexdigest()


@dataclass(frozen=True)
class FoldRecord:
    recipe: dict[str, Any]  # dotted config keys, less EXECUTION_KEYS and FOLD_KEYS
    folds: int
    assignment: str  # assignment_digest of the pooled images
    data: str  # the cache's fingerprint (index rows, files, size, resize mode)

    @classmethod
    def of(cls, cfg: Config, folds: int, assignment: str, data: str) -> FoldRecord:
        flat = _flatten(cfg.to_dict())
        recipe = {k: v for k, v in flat.items() if k not in EXECUTION_KEYS | FOLD_KEYS}
        return cls(recipe, folds, assignment, data)

    @classmethod
    def read(cls, run: Path) -> FoldRecord | None:
        """The record in a fold folder; None where there is none or it is not one."""
        try:
            return cls(**json.loads((run / FOLD_RECORD).read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1) + "\n"

    def changes_to(self, current: FoldRecord) -> list[str]:
        """What differs from `current`, as `folds 3 -> 4`, `train.lr 0.001 -> 0.01`, `data (cache ...)`."""
        changes = [f"folds {self.folds} -> {current.folds}"] if self.folds != current.folds else []
        for key in sorted(self.recipe.keys() | current.recipe.keys()):
            old, new = self.recipe.get(key, "(unset)"), current.recipe.get(key, "(unset)")
            if old != new:
                changes.append(f"{key} {old} -> {new}")
        if self.data != current.data:
            changes.append(f"data (cache fingerprint {self.data[:8]} -> {current.data[:8]})")
        if self.assignment != current.assignment and not changes:
            changes.append("the fold of some images")
        return changes


def _has_results(run: Path) -> bool:
    return (run / DONE).is_file() or (run / LAST_CHECKPOINT).is_file()


def trained_folds(out: Path) -> list[Path]:
    """Fold folders holding a finished or interrupted fold (any K, also those of a run with more folds)."""
    return sorted(p for p in out.glob("fold*") if FOLD_NAME.fullmatch(p.name) and _has_results(p))


def stale_folds(out: Path, current: FoldRecord) -> dict[Path, list[str]]:
    """The trained folds that `current` would not have produced, each with what changed."""
    stale = {}
    for run in trained_folds(out):
        record = FoldRecord.read(run)
        if record is None:
            stale[run] = [f"{run.name} has no {FOLD_RECORD} saying what it was trained from"]
        elif changes := record.changes_to(current):
            stale[run] = changes
    return stale


def discard(out: Path, runs: list[Path]) -> None:
    """Remove exactly what `mura cv` and training wrote for these folds, and every result built on folds."""
    for run in runs:
        remove_run_files(check_run_dir(run, resume=False, overwrite=True))
        for name in (DONE, FOLD_RECORD):
            (run / name).unlink(missing_ok=True)
        if not any(run.iterdir()):
            run.rmdir()
    for name in CV_RESULTS:
        (out / name).unlink(missing_ok=True)
    for member in (out / "final").glob("fold*.pt"):
        if FOLD_NAME.fullmatch(member.stem):
            member.unlink()
    remove_report(out / "oof")

"""`mura calibrate`: a checkpoint's (or an ensemble's) decision refitted on a site's labelled sample,
written into new checkpoint files, with before/after figures and what the sample can tell.

The sample is what `mura index` and `mura prepare` make (a MURA tree, folder data, or DICOM files
listed with their labels in an index CSV by hand): an index CSV and a cache at each member's input
size. The fitting and the sample-size rule are `mura.experiments.site_decision`.

The inputs are only read. The refitted checkpoints are new files in `out`, a folder this command claims
with its record `calibration.json`: it replaces only files an earlier `mura calibrate` wrote there (the
record lists them), never a file it did not write, nor an input. Each written decision says where it
was fitted: `fitted_on` (one line, which every answer carries as `model.decision_origin`) and `origin`
(site, index and its SHA-256, images, abnormal images, studies, date, method, targets, and the
checkpoint it was refitted from). When the sample is too small to set an operating point nothing is
written unless `allow_small_sample=True`: a decision fitted on a dozen positives should not be
deployed without someone choosing to.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mura import checkpoint as ckpt
from mura.atomic import write_text
from mura.data.cache import ImageCache, open_cache
from mura.data.index import read_index
from mura.decision import CALIBRATION_METHODS, margins_from_probs, point_figures
from mura.errors import MuraError
from mura.experiments.site_decision import POINT_TARGETS, figures, fit_site, report_text, too_small
from mura.inference.cache_predictions import predict_cache
from mura.inference.predictor import Predictor

CALIBRATION_RECORD = "calibration.json"
CALIBRATION_TEXT = "calibration.md"


def output_paths(sources: Sequence[Path], out: Path) -> list[Path]:
    """OUT/<name>.pt per input; `<folder>_<name>.pt` when names repeat (best.pt of several runs)."""
    names = [s.name for s in sources]
    if len(set(names)) < len(names):
        names = [f"{s.parent.name}_{s.name}" for s in sources]
    if len(set(names)) < len(names):
        raise MuraError(f"checkpoints={[str(s) for s in sources]}: two inputs share a folder and file name")
    return [out / name for name in names]


def check_out_folder(out: Path, sources: Sequence[Path], targets: Sequence[Path]) -> list[str]:
    """The files an earlier `mura calibrate` wrote in `out` (empty for a new or empty folder); MuraError
    when writing `targets` would replace an input or a file this command did not write."""
    if out.exists() and not out.is_dir():
        raise MuraError(f"{out}: is a file; choose a folder for the calibrated checkpoints")
    record = out / CALIBRATION_RECORD
    ours: list[str] = []
    if record.is_file():
        try:
            ours = list(json.loads(record.read_text())["written_files"])
        except (ValueError, KeyError, TypeError):
            raise MuraError(
                f"{record}: not a record mura calibrate wrote; choose a new or empty folder"
            ) from None
    elif out.is_dir() and any(out.iterdir()):
        shown = ", ".join(sorted(p.name for p in out.iterdir())[:3])
        raise MuraError(
            f"{out}: holds files mura calibrate did not write ({shown}); choose a new or empty folder"
        )
    inputs = {s.resolve() for s in sources}
    for target in targets:
        if target.resolve() in inputs:
            raise MuraError(f"{target}: is an input checkpoint; choose an out folder apart from the inputs")
        if target.exists() and target.name not in ours:
            raise MuraError(f"{target}: exists and mura calibrate did not write it; choose another folder")
    return ours


def check_index(index_file: Path, cache: ImageCache) -> None:
    """The cache must have been prepared from this index: every cached image in it, with the same label."""
    index = read_index(index_file).drop_duplicates("path").set_index("path")["label"]
    cached = cache.index.assign(path=cache.index["path"].astype(str))
    absent = cached.loc[~cached["path"].isin(index.index), "path"]
    if len(absent):
        raise MuraError(
            f"{cache.directory}: was not prepared from {index_file} ({absent.iloc[0]} is not in it); give "
            "the index the cache was prepared from"
        )
    differ = cached.loc[index.loc[cached["path"]].to_numpy() != cached["label"].to_numpy(), "path"]
    if len(differ):
        raise MuraError(
            f"{index_file}: labels differ from {cache.directory}'s (first: {differ.iloc[0]}); prepare the "
            "cache again from this index"
        )


def member_margins(
    predictor: Predictor, caches: Sequence[ImageCache], split: str | None, body_part_source: str
) -> tuple[list[np.ndarray], pd.DataFrame]:
    """Each member's raw margins on the sample's rows (aligned by path), and those rows."""
    frames = [
        predict_cache(
            Predictor([member], batch_size=predictor.batch_size), list(caches), split, body_part_source
        ).set_index("path", drop=False)
        for member in predictor.members
    ]
    rows = frames[0]
    for member, frame in zip(predictor.members[1:], frames[1:], strict=True):
        if set(frame.index) != set(rows.index):
            raise MuraError(f"{member.source}: its cache holds other images than the first member's")
    margins = [margins_from_probs(frame.loc[rows.index, "uncalibrated_prob"].to_numpy()) for frame in frames]
    return margins, rows.reset_index(drop=True)


def _targets(predictor: Predictor, sensitivity: float | None, specificity: float | None) -> dict[str, float]:
    stored = predictor.members[0].decision.targets
    targets = {
        "sensitivity": float(sensitivity if sensitivity is not None else stored.get("sensitivity", 0.9)),
        "specificity": float(specificity if specificity is not None else stored.get("specificity", 0.9)),
    }
    for name, value in targets.items():
        if not 0.0 < value < 1.0:
            raise MuraError(f"target_{name}={value}: a target rate lies strictly between 0 and 1")
    return targets


def calibrate_checkpoints(
    checkpoints: Sequence[str | Path],
    cache: str | Path | Sequence[str | Path],
    out: str | Path,
    *,
    site: str,
    index_path: str | Path | None = None,
    split: str | None = None,
    method: str = "platt",
    target_sensitivity: float | None = None,
    target_specificity: float | None = None,
    body_part_source: str = "given",
    n_bootstrap: int = 1000,
    seed: int = 0,
    device: str = "auto",
    allow_small_sample: bool = False,
) -> dict[str, Any]:
    """Refit calibration and operating points on `split` of the cache(s) (None: every row); write
    OUT/<checkpoint>.pt, calibration.json and calibration.md unless the sample is too small; return the
    report (`report["written"]` lists the files, empty when nothing was written)."""
    if not site.strip():
        raise MuraError("site='': name the site the sample comes from (any words: St Elsewhere radiology)")
    if method not in CALIBRATION_METHODS:
        raise MuraError(f"method={method!r} is not one of {', '.join(CALIBRATION_METHODS)}")
    sources = [Path(c) for c in checkpoints]
    if not sources:
        raise MuraError("checkpoints=[]: give at least one .pt checkpoint")
    for source in sources:
        if source.suffix != ".pt":
            raise MuraError(f"{source}: give the .pt checkpoint (an exported model is not rewritten)")
    out = Path(out)
    targets_out = output_paths(sources, out)
    previous = check_out_folder(out, sources, targets_out)  # before any work
    caches = [open_cache(c) for c in ([cache] if isinstance(cache, str | Path) else cache)]
    index_file = Path(index_path) if index_path else caches[0].directory / "index.csv"
    if index_path:
        check_index(index_file, caches[0])
    predictor = Predictor.from_checkpoints(sources, device=device)
    targets = _targets(predictor, target_sensitivity, target_specificity)
    margins, rows = member_margins(predictor, caches, split, body_part_source)
    labels = rows["label"].to_numpy(dtype=int)
    if len(set(labels)) < 2:
        raise MuraError(
            f"{index_file}: the sample ({len(labels)} images, {int(labels.sum())} abnormal) needs both "
            "abnormal and normal images"
        )
    studies = [s or p for s, p in zip(rows["study_id"].astype(str), rows["path"].astype(str), strict=True)]
    fit = fit_site(margins, labels, method, targets)
    stored = {p: _stored(predictor, p) for p in POINT_TARGETS}
    before_probs = np.mean(
        [m.decision.probabilities(z) for m, z in zip(predictor.members, margins, strict=True)], axis=0
    )
    after_points = {p: fit.thresholds[p] for p in POINT_TARGETS}
    after = figures(studies, labels, fit.probabilities, after_points, n_bootstrap, seed)
    small = too_small(after, targets)
    date = datetime.now().astimezone().isoformat(timespec="seconds")
    index_sha = ckpt.file_sha256(index_file)
    sample = {"images": len(labels), "abnormal": int(labels.sum()), "studies": len(set(studies))}
    fitted_on = (
        f"site {site}: {sample['images']} images ({sample['abnormal']} abnormal) of {index_file.name} "
        f"(sha256 {index_sha[:12]}), {date[:10]}"
    )
    report: dict[str, Any] = {
        "site": site,
        "index": str(index_file),
        "index_sha256": index_sha,
        "split": split or "all",
        "date": date,
        "method": method,
        "targets": targets,
        "sample": sample,
        "decision_origin": fitted_on,
        "before": figures(studies, labels, before_probs, stored, n_bootstrap, seed),
        "after": after,
        "thresholds": fit.thresholds,
        "too_small": small,
        "inputs": {str(s): ckpt.file_sha256(s) for s in sources},
        "written": [],
    }
    if small and not allow_small_sample:
        report["not_written"] = (
            "the sample is too small to set " + " and ".join(small) + "; label more images (or write the "
            "checkpoints anyway: allow_small_sample=True)"
        )
        return report
    origin = {k: report[k] for k in ("site", "index", "index_sha256", "split", "date", "method")}
    origin |= sample
    written = {t.name for t in targets_out}
    claim = {"written_files": sorted(written | set(previous)), "complete": False}
    write_text(out / CALIBRATION_RECORD, json.dumps(claim) + "\n")  # first: a crash leaves the folder ours
    figures_at_points = point_figures(labels, fit.probabilities, fit.thresholds)
    for source, target, calibration in zip(sources, targets_out, fit.calibrations, strict=True):
        checkpoint = ckpt.load_checkpoint(source)
        decision = replace(
            checkpoint.meta.decision,
            calibration=calibration,
            thresholds=dict(fit.thresholds),
            targets=targets,
            fitted_on=fitted_on,
            figures=figures_at_points,
            origin=origin | {"checkpoint": str(source), "checkpoint_sha256": report["inputs"][str(source)]},
        )
        ckpt.save_checkpoint(target, checkpoint.model_state, checkpoint.meta.replace(decision=decision))
    for stale in set(previous) - written:  # an earlier calibration of other checkpoints: one model per folder
        (out / stale).unlink(missing_ok=True)
    report["written"] = [str(t) for t in targets_out]
    report["written_files"] = sorted(written)
    report["written_sha256"] = {t.name: ckpt.file_sha256(t) for t in targets_out}
    write_text(out / CALIBRATION_TEXT, report_text(report))
    report["complete"] = True
    write_text(out / CALIBRATION_RECORD, json.dumps(report, indent=1) + "\n")
    return report


def _stored(predictor: Predictor, point: str) -> float | None:
    """The ensemble's stored threshold for `point` (the members' mean, as the Predictor decides it), if
    every member stores it."""
    if not all(point in m.decision.thresholds for m in predictor.members):
        return None
    return predictor.operating_point(point)[1]

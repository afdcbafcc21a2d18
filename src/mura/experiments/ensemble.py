"""`mura ensemble`: several cross-validated recipes as one deployed model, its operating points fitted on
the ensemble's own out-of-fold predictions.

`mura cv` makes the same folds for every recipe of one index, so each film's out-of-fold probabilities
from several recipes all come from models that did not see it; their mean is the ensemble's OOF
probability (what `Predictor` computes from the members: the mean of their calibrated probabilities).
Each member keeps its own calibration; the operating points are chosen on the OOF mean and written
into every member, so the ensemble decides exactly at them (the Predictor takes the mean of its
members' thresholds, here all equal). When one of the runs has a map head and its index carried boxes,
the ensemble's localisation is scored out of fold too (`_with_map_boxes`).

`ENSEMBLE/ensemble.json` records the runs it was built from and a hash of each member, so the folder
always describes one ensemble: built again from the same runs it is simply refitted; from other runs,
or from runs cross-validated again since, it is refused unless asked to overwrite, and each run's
members must be exactly the fold ensemble its cv.json lists (not the leftovers of an earlier run).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mura import checkpoint as ckpt
from mura.atomic import write_text
from mura.decision import operating_points, point_figures
from mura.errors import MuraError
from mura.evaluation.calibration import expected_calibration_error
from mura.evaluation.localisation import predictions_localisation, rescored_map_boxes, truth_by_row
from mura.evaluation.report import evaluate_predictions, write_report
from mura.evaluation.report_folder import remove_report

ENSEMBLE_FITTED_ON = "out-of-fold mean of the ensemble"  # how an ensemble's members are recognised
ENSEMBLE_RECORD = "ensemble.json"
# What a map-head run's out-of-fold rows carry for localisation (`mura cv`), in its cache's input frame.
MAP_COLUMNS = ("cache_row", "map_boxes", "map_peak_x", "map_peak_y", "true_boxes")


def ensemble_oof(runs: list[Path]) -> tuple[pd.DataFrame, str | None]:
    """The runs' out-of-fold predictions with `fracture_prob` the mean of theirs, indexed by path, and the
    localisation status (`_with_map_boxes`); MuraError unless every run is a finished `mura cv` of the
    same images and folds."""
    frames = []
    for run in runs:
        if not (run / "cv.json").is_file():
            raise MuraError(f"{run}: not a finished `mura cv` folder (no cv.json)")
        frames.append(pd.read_csv(run / "oof_predictions.csv").set_index("path"))
    first = frames[0]
    for run, frame in zip(runs[1:], frames[1:], strict=True):
        if set(frame.index) != set(first.index) or (frame.loc[first.index, "fold"] != first["fold"]).any():
            raise MuraError(f"{run}: was not cross-validated on the same images and folds as {runs[0]}")
    oof = first.drop(columns=[c for c in MAP_COLUMNS[1:] if c in first])  # the first run's boxes: not ours
    oof["fracture_prob"] = np.mean([f.loc[first.index, "fracture_prob"].to_numpy() for f in frames], axis=0)
    return _with_map_boxes(oof, runs, frames)


def _with_map_boxes(
    oof: pd.DataFrame, runs: list[Path], frames: list[pd.DataFrame]
) -> tuple[pd.DataFrame, str | None]:
    """The ensemble's boxes out of fold, when they can be known: the deployed ensemble reads its findings
    off the mean map of its map-head members and scores each box at the ensemble's probability. With
    one such run, its out-of-fold boxes (and its true boxes, `truth_column`) are exactly that, restated
    at the ensemble's probability. With several, the mean of their maps is not in their files (`mura cv`
    keeps boxes, not maps): a status says so rather than scoring one run's boxes as the ensemble's."""
    mapped = [(run, f) for run, f in zip(runs, frames, strict=True) if set(MAP_COLUMNS) <= set(f.columns)]
    if not mapped:
        return oof, None
    if len(mapped) > 1:
        names = ", ".join(run.name for run, _ in mapped)
        return oof, (
            f"not scored: the deployed ensemble averages the maps of {names}, and `mura cv` keeps "
            "boxes, not maps"
        )
    frame = mapped[0][1].loc[oof.index]
    oof = oof.assign(**{c: frame[c] for c in MAP_COLUMNS})  # cache_row: the map run's own cache
    oof["map_boxes"] = rescored_map_boxes(frame["map_boxes"], frame["fracture_prob"], oof["fracture_prob"])
    return oof, "fracture map"


def run_members(run: Path) -> dict[str, str]:
    """A finished `mura cv` run's fold ensemble, {file name: SHA-256}: exactly the members its cv.json
    lists, else MuraError (final/ then mixes in models the out-of-fold predictions did not come from)."""
    listed = sorted(Path(p).name for p in json.loads((run / "cv.json").read_text())["final_checkpoints"])
    found = sorted(p.name for p in (run / "final").glob("fold*.pt"))
    if found != listed:
        raise MuraError(
            f"{run}: final/ holds {', '.join(found) or 'no members'} but its cv.json lists "
            f"{', '.join(listed)}; cross-validate it again before ensembling it"
        )
    return {name: ckpt.file_sha256(run / "final" / name) for name in listed}


def _record(runs: list[Path]) -> list[dict[str, Any]]:
    return [{"run": str(run.resolve()), "members": run_members(run)} for run in runs]


def _check_rebuild(out: Path, record: list[dict[str, Any]], overwrite: bool) -> None:
    """Refuse to replace an ensemble built from other runs (or from these before they changed)."""
    if not (out / ENSEMBLE_RECORD).is_file() or overwrite:
        return
    previous = json.loads((out / ENSEMBLE_RECORD).read_text()).get("runs")
    if previous is not None and sorted(previous, key=str) == sorted(record, key=str):  # any order
        return
    if previous is None:
        change = "no record of its runs"
    elif sorted(r["run"] for r in previous) != sorted(r["run"] for r in record):
        names = [" + ".join(Path(r["run"]).name for r in runs) for runs in (previous, record)]
        change = f"runs {names[0]} -> {names[1]}"
    else:
        moved = [Path(r["run"]).name for r in record if r not in previous]
        change = f"{', '.join(moved)} cross-validated again since"
    raise MuraError(
        f"{out}: holds an ensemble built from other runs ({change}): use a new output folder, or "
        "overwrite=True to replace it"
    )


def _remove_previous_members(out: Path, keep: set[str]) -> None:
    """`OUT/final/*.pt` must be exactly this ensemble: once its members (`keep`) are written, those an
    earlier `mura ensemble` wrote there (recognised by their decision's provenance) are removed; any
    other file stays, and a failed run leaves the earlier ensemble whole."""
    for path in sorted((out / "final").glob("*.pt")):
        if path.name in keep:
            continue
        try:
            fitted_on = ckpt.load_checkpoint(path).meta.decision.fitted_on
        except MuraError:  # not a checkpoint: not ours
            continue
        if fitted_on.startswith(ENSEMBLE_FITTED_ON):
            path.unlink()


def ensemble_runs(
    runs: list[Path], out: Path, n_bootstrap: int = 1000, *, overwrite: bool = False
) -> dict[str, Any]:
    """Write OUT/final/<run>_fold<k>.pt for every member, OUT/oof_predictions.csv and OUT/ensemble.json.

    An ensemble already in `out` is replaced only if built from the same, unchanged runs, or with
    `overwrite`; everything is computed before the first file is written.
    """
    if len(runs) < 2:
        raise MuraError("an ensemble needs at least two `mura cv` folders")
    oof, map_status = ensemble_oof(runs)
    if out.exists() and any(out.iterdir()) and not (out / ENSEMBLE_RECORD).is_file():
        raise MuraError(f"{out}: exists and is not a `mura ensemble` folder; choose another output folder")
    record = _record(runs)
    _check_rebuild(out, record, overwrite)
    labels, probs = oof["label"].to_numpy(dtype=int), oof["fracture_prob"].to_numpy()
    members = [
        (run, run / "final" / name, ckpt.load_checkpoint(run / "final" / name))
        for run, entry in zip(runs, record, strict=True)
        for name in entry["members"]
    ]
    targets = members[0][2].meta.decision.targets
    thresholds = operating_points(
        labels, probs, targets.get("sensitivity", 0.9), targets.get("specificity", 0.9)
    )
    names = " + ".join(run.name for run in runs)
    fitted_on = f"{ENSEMBLE_FITTED_ON} {names} ({len(oof)} images)"
    oof = oof.reset_index()
    oof["decision"] = (probs >= thresholds["suspicious"]).astype(int)
    meta = {"split": f"out-of-fold, ensemble of {names}", "models": [names], "threshold_source": fitted_on}
    kept = {k: v for k, v in thresholds.items() if k != "default"}
    first_member = members[0][2].meta  # the OOF body-part answers are the first run's
    result = evaluate_predictions(
        oof,
        kept,
        body_parts=first_member.body_parts,
        body_part_floor=first_member.body_part_floor,
        calibration_method="per member",
        n_bootstrap=n_bootstrap,
        meta=meta,
    )
    if map_status == "fracture map":  # findings graded at the ensemble's own points
        result["localisation"] = predictions_localisation(oof, truth_by_row(oof), n_bootstrap)
    elif map_status is not None:
        result["localisation"] = {"status": map_status}
    written = [out / "final" / f"{run.name}_{path.name}" for run, path, _ in members]
    summary = _summary(result, thresholds, labels, probs, written) | {
        "runs": record,
        "localisation": result.get("localisation"),
    }
    figures = point_figures(labels, probs, thresholds)
    for (_, _, member), target in zip(members, written, strict=True):
        decision = replace(member.meta.decision, thresholds=thresholds, fitted_on=fitted_on, figures=figures)
        ckpt.save_checkpoint(target, member.model_state, member.meta.replace(decision=decision))
    _remove_previous_members(out, keep={p.name for p in written})
    write_text(out / "oof_predictions.csv", oof.to_csv(index=False))
    remove_report(out / "oof")  # the earlier ensemble's report (its operating points may have other names)
    write_report(result, oof, out / "oof")
    write_text(out / ENSEMBLE_RECORD, json.dumps(summary, indent=1, default=float) + "\n")
    return summary


def _summary(
    result: dict[str, Any],
    thresholds: dict[str, float],
    labels: np.ndarray,
    probs: np.ndarray,
    written: list[Path],
) -> dict[str, Any]:
    auc = result["bootstrap"]["default"]["image"]["roc_auc"]
    return {
        "members": [str(p) for p in written],
        "n_images": int(len(labels)),
        "oof_auc": result["image"]["default"]["roc_auc"],
        "oof_auc_ci": [auc.get("low"), auc.get("high")],
        "ece": expected_calibration_error(labels, probs),
        "operating_points": {
            name: {
                "threshold": value,
                **{k: result["image"][name][k] for k in ("sensitivity", "specificity", "ppv", "npv")},
                "ci": {  # Wilson intervals
                    k: [result["summary"][name][k]["low"], result["summary"][name][k]["high"]]
                    for k in ("sensitivity", "specificity", "ppv", "npv")
                },
            }
            for name, value in thresholds.items()
        },
    }

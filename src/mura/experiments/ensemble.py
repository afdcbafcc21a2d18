"""`mura ensemble`: several cross-validated recipes as one deployed model, its operating points fitted on
the ensemble's own out-of-fold predictions.

`mura cv` makes the same folds for every recipe of one index, so each film's out-of-fold probabilities
from several recipes all come from models that did not see it; their mean is the ensemble's OOF
probability (what `Predictor` computes from the members: the mean of their calibrated probabilities).
Each member keeps its own calibration; the operating points are chosen on the OOF mean and written
into every member, so the ensemble decides exactly at them (the Predictor takes the mean of its
members' thresholds, here all equal).
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
from mura.decision import operating_points
from mura.errors import MuraError
from mura.evaluation.calibration import expected_calibration_error
from mura.evaluation.report import evaluate_predictions, write_report

ENSEMBLE_FITTED_ON = "out-of-fold mean of the ensemble"  # how an ensemble's members are recognised


def ensemble_oof(runs: list[Path]) -> pd.DataFrame:
    """The runs' out-of-fold predictions with `fracture_prob` the mean of theirs, indexed by path;
    MuraError unless every run is a finished `mura cv` of the same images and folds."""
    frames = []
    for run in runs:
        if not (run / "cv.json").is_file():
            raise MuraError(f"{run}: not a finished `mura cv` folder (no cv.json)")
        frames.append(pd.read_csv(run / "oof_predictions.csv").set_index("path"))
    first = frames[0]
    for run, frame in zip(runs[1:], frames[1:], strict=True):
        if set(frame.index) != set(first.index) or (frame.loc[first.index, "fold"] != first["fold"]).any():
            raise MuraError(f"{run}: was not cross-validated on the same images and folds as {runs[0]}")
    oof = first.copy()
    oof["fracture_prob"] = np.mean([f.loc[first.index, "fracture_prob"].to_numpy() for f in frames], axis=0)
    return oof


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


def ensemble_runs(runs: list[Path], out: Path, n_bootstrap: int = 1000) -> dict[str, Any]:
    """Write OUT/final/<run>_fold<k>.pt for every member, OUT/oof_predictions.csv and OUT/ensemble.json."""
    if len(runs) < 2:
        raise MuraError("an ensemble needs at least two `mura cv` folders")
    oof = ensemble_oof(runs)
    if out.exists() and any(out.iterdir()) and not (out / "ensemble.json").is_file():
        raise MuraError(f"{out}: exists and is not a `mura ensemble` folder; choose another --out")
    labels, probs = oof["label"].to_numpy(dtype=int), oof["fracture_prob"].to_numpy()
    members = [
        (run, p, ckpt.load_checkpoint(p)) for run in runs for p in sorted((run / "final").glob("fold*.pt"))
    ]
    targets = members[0][2].meta.decision.targets
    thresholds = operating_points(
        labels, probs, targets.get("sensitivity", 0.9), targets.get("specificity", 0.9)
    )
    names = " + ".join(run.name for run in runs)
    fitted_on = f"{ENSEMBLE_FITTED_ON} {names} ({len(oof)} images)"
    written = []
    for run, path, member in members:
        decision = replace(member.meta.decision, thresholds=thresholds, fitted_on=fitted_on)
        meta = member.meta.replace(decision=decision)
        written.append(
            ckpt.save_checkpoint(out / "final" / f"{run.name}_{path.name}", member.model_state, meta)
        )
    _remove_previous_members(out, keep={p.name for p in written})
    oof = oof.reset_index()
    oof["decision"] = (probs >= thresholds["suspicious"]).astype(int)
    write_text(out / "oof_predictions.csv", oof.to_csv(index=False))
    meta = {"split": f"out-of-fold, ensemble of {names}", "models": [names], "threshold_source": fitted_on}
    kept = {k: v for k, v in thresholds.items() if k != "default"}
    result = evaluate_predictions(
        oof, kept, calibration_method="per member", n_bootstrap=n_bootstrap, meta=meta
    )
    write_report(result, oof, out / "oof")
    auc = result["bootstrap"]["default"]["image"]["roc_auc"]
    summary = {
        "members": [str(p) for p in written],
        "n_images": int(len(oof)),
        "oof_auc": result["image"]["default"]["roc_auc"],
        "oof_auc_ci": [auc.get("low"), auc.get("high")],
        "ece": expected_calibration_error(labels, probs),
        "operating_points": {
            name: {
                "threshold": value,
                **{k: result["image"][name][k] for k in ("sensitivity", "specificity", "ppv", "npv")},
                "ci": {
                    k: [
                        result["bootstrap"][name]["image"][k].get("low"),
                        result["bootstrap"][name]["image"][k].get("high"),
                    ]
                    for k in ("sensitivity", "specificity", "ppv", "npv")
                },
            }
            for name, value in thresholds.items()
        },
    }
    write_text(out / "ensemble.json", json.dumps(summary, indent=1, default=float) + "\n")
    return summary

"""`cv.json`: what a `mura cv` run reports once its out-of-fold predictions are scored.

Why apart from `mura.experiments.cv`: cv.py runs the protocol (train, predict out of fold, fit, stamp
the fold ensemble); this is the record a reader compares runs and recipes by, built only from what the
protocol produced: the headline, each stored operating point's figures with Wilson intervals, the AUC
with its bootstrap interval, localisation, the layer-3 detector's threshold and the compute spent.
Calibration is reported twice: in sample (the stored method on the OOF predictions it was fitted to)
and cross-fitted (each method fitted on the other folds and scored on fold k), so the choice of method
is judged on predictions it did not see.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from sklearn.isotonic import IsotonicRegression

from mura.decision import Decision, binary_nll, fit_calibration, margins_from_probs
from mura.evaluation.calibration import expected_calibration_error
from mura.evaluation.summary import PROPORTIONS

if TYPE_CHECKING:
    from mura.scope_detector import ScopeDetector

MEASURED_CALIBRATIONS = ("none", "temperature", "platt", "isotonic")


def cross_fitted_calibration(oof: pd.DataFrame, folds: int) -> dict[str, dict[str, float | None]]:
    """ECE and NLL of each calibration method, fitted on the other folds' OOF rows and applied to fold k
    (so a method is not scored on the predictions it was fitted to)."""
    labels = oof["label"].to_numpy(dtype=int)
    margins = margins_from_probs(oof["uncalibrated_prob"].to_numpy())
    fold = oof["fold"].to_numpy()
    out: dict[str, dict[str, float | None]] = {}
    for method in MEASURED_CALIBRATIONS:
        probs = np.zeros(len(oof))
        for k in range(folds):
            fit, apply = fold != k, fold == k
            if method == "isotonic":
                iso = IsotonicRegression(out_of_bounds="clip", y_min=1e-6, y_max=1 - 1e-6)
                probs[apply] = iso.fit(margins[fit], labels[fit]).predict(margins[apply])
            else:
                probs[apply] = fit_calibration(margins[fit], labels[fit], method).probabilities(
                    margins[apply]
                )
        out[method] = {
            "ece": expected_calibration_error(labels, probs),
            "nll": binary_nll(margins_from_probs(probs), labels),
        }
    return out


def cv_summary(
    result: dict[str, Any],
    decision: Decision,
    calibration: dict[str, Any],
    seconds: list[dict[str, float]],
    final: list[Path],
    detector: ScopeDetector,
) -> dict[str, Any]:
    """The content of cv.json from the OOF report's `result`, the decision fitted on OOF, the
    cross-fitted `calibration`, each fold's `seconds`, the fold ensemble and one fold's detector (they
    share its threshold)."""
    points = {}
    for name in decision.thresholds:
        image, wilson = result["image"][name], result["summary"][name]
        points[name] = {
            "threshold": image["threshold"],
            **{k: image[k] for k in ("sensitivity", "specificity", "ppv", "npv", "accuracy", "kappa")},
            "ci": {k: [wilson[k]["low"], wilson[k]["high"]] for k in PROPORTIONS},  # Wilson
        }
    auc = result["bootstrap"]["default"]["image"]["roc_auc"]
    return {
        "headline": result["headline"],
        "n_images": result["meta"]["n_images"],
        "not_assessed": result["meta"]["not_assessed"],  # {} or counts per layer and reason (oof/)
        "n_positive": result["meta"]["n_positive"],
        "prevalence": result["image"]["default"]["prevalence"],
        "oof_auc": result["image"]["default"]["roc_auc"],
        "oof_auc_ci": [auc.get("low"), auc.get("high")],
        "localisation": result.get("localisation"),  # None: the index has no boxes
        "calibration": {
            "stored": decision.calibration.to_dict(),
            "ece_before": result["calibration"]["ece_uncalibrated"],
            "ece_after_in_sample": result["calibration"]["ece"],
            "cross_fitted": calibration,
        },
        "operating_points": points,
        "default_operating_point": decision.default_point(),
        "seconds": {
            "wall": float(sum(s["wall_seconds"] for s in seconds)),
            "cpu": float(sum(s["cpu_seconds"] for s in seconds)),
            "per_fold_wall": [float(s["wall_seconds"]) for s in seconds],
        },
        "final_checkpoints": [str(p) for p in final],
        "scope_detector": {
            "threshold": detector.threshold,
            "target_rate": detector.target_rate,
            "rate_reached_out_of_fold": detector.rate_reached,
        },
    }

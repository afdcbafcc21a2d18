"""How well the deployed probabilities are calibrated: expected calibration error, NLL, reliability data.

The calibration itself is fitted in `mura.decision` (training, cross-validation); here it is only
measured, before (sigmoid of the raw margin) and after (what predict and serve return).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mura.decision import binary_nll, margins_from_probs


def reliability_data(labels: np.ndarray, probs: np.ndarray, bins: int = 15) -> dict[str, Any]:
    """Per equal-width bin of predicted abnormal probability: count, mean prediction, observed rate."""
    labels = np.asarray(labels, dtype=float)
    probs = np.asarray(probs, dtype=float)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(probs, edges[1:-1], right=False), 0, bins - 1)
    counts = np.bincount(which, minlength=bins)
    sum_p = np.bincount(which, weights=probs, minlength=bins)
    sum_y = np.bincount(which, weights=labels, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_p = np.where(counts > 0, sum_p / np.maximum(counts, 1), np.nan)
        rate = np.where(counts > 0, sum_y / np.maximum(counts, 1), np.nan)
    return dict(
        edges=edges.tolist(),
        counts=counts.astype(int).tolist(),
        mean_predicted=[None if np.isnan(v) else float(v) for v in mean_p],
        observed_rate=[None if np.isnan(v) else float(v) for v in rate],
    )


def expected_calibration_error(labels: np.ndarray, probs: np.ndarray, bins: int = 15) -> float | None:
    """Sum over bins of |observed rate - mean predicted probability| weighted by the bin's share."""
    labels = np.asarray(labels, dtype=float)
    if len(labels) == 0:
        return None
    data = reliability_data(labels, probs, bins)
    counts = np.asarray(data["counts"], dtype=float)
    gaps = [
        abs(r - p) if c else 0.0
        for c, p, r in zip(counts, data["mean_predicted"], data["observed_rate"], strict=True)
    ]
    return float(np.dot(counts / counts.sum(), gaps))


def calibration_summary(
    labels: np.ndarray, uncalibrated: np.ndarray, deployed: np.ndarray, method: str = "", bins: int = 15
) -> dict[str, Any]:
    """ECE and NLL of the probabilities before and after the stored calibration, with reliability data."""
    labels = np.asarray(labels, dtype=int)
    n = len(labels)
    return dict(
        method=method,
        bins=bins,
        n=n,
        ece_uncalibrated=expected_calibration_error(labels, uncalibrated, bins),
        ece=expected_calibration_error(labels, deployed, bins),
        nll_uncalibrated=binary_nll(margins_from_probs(uncalibrated), labels) if n else None,
        nll=binary_nll(margins_from_probs(deployed), labels) if n else None,
        reliability_uncalibrated=reliability_data(labels, uncalibrated, bins),
        reliability=reliability_data(labels, deployed, bins),
    )

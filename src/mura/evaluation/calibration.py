"""Calibration: temperature scaling fitted on validation, expected calibration error, reliability data.

Binary softmax probabilities depend only on the logit difference z = l1 - l0, so a probability table
can be turned back into logits (`probs_to_logits`) and rescaled without the model.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import expit, log_expit

log = logging.getLogger(__name__)

_LOG_T_BOUNDS = (np.log(0.05), np.log(20.0))


def _margins(logits: np.ndarray) -> np.ndarray:
    logits = np.asarray(logits, dtype=float)
    if logits.ndim == 2 and logits.shape[1] == 2:
        return logits[:, 1] - logits[:, 0]
    return logits.reshape(-1)


def binary_nll(margins: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of the labels under sigmoid(margin / T)."""
    z = np.asarray(margins, dtype=float) / temperature
    y = np.asarray(labels, dtype=float)
    return float(-(y * log_expit(z) + (1 - y) * log_expit(-z)).mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature T minimising validation NLL of softmax(logits / T); 1.0 when degenerate."""
    margins = _margins(logits)
    labels = np.asarray(labels, dtype=int).reshape(-1)
    if len(labels) == 0 or len(margins) != len(labels) or not np.isfinite(margins).all():
        log.warning("fit_temperature: no usable logits; temperature 1.0")
        return 1.0
    if labels.min() == labels.max():
        log.warning("fit_temperature: validation has one class only; temperature 1.0")
        return 1.0
    result = minimize_scalar(
        lambda lt: binary_nll(margins, labels, float(np.exp(lt))),
        bounds=_LOG_T_BOUNDS,
        method="bounded",
        options={"xatol": 1e-5},
    )
    if not result.success:
        return 1.0
    return float(np.exp(result.x))


def probs_to_logits(probs: np.ndarray, eps: float = 1e-7) -> np.ndarray:
    """[N] abnormal probabilities -> [N, 2] logits (0, z) with the same softmax."""
    p = np.clip(np.asarray(probs, dtype=float), eps, 1 - eps)
    return np.stack([np.zeros_like(p), np.log(p) - np.log1p(-p)], axis=1)


def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """Probabilities after dividing their logits by the temperature."""
    return expit(_margins(probs_to_logits(probs)) / temperature)


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
    labels: np.ndarray, probs: np.ndarray, temperature: float = 1.0, bins: int = 15
) -> dict[str, Any]:
    """ECE and NLL before and after the given temperature, and reliability data for both."""
    labels = np.asarray(labels, dtype=int)
    scaled = apply_temperature(probs, temperature)
    margins = _margins(probs_to_logits(probs))
    n = len(labels)
    return dict(
        temperature=float(temperature),
        bins=bins,
        n=n,
        ece=expected_calibration_error(labels, probs, bins),
        ece_scaled=expected_calibration_error(labels, scaled, bins),
        nll=binary_nll(margins, labels) if n else None,
        nll_scaled=binary_nll(margins, labels, temperature) if n else None,
        reliability=reliability_data(labels, probs, bins),
        reliability_scaled=reliability_data(labels, scaled, bins),
    )

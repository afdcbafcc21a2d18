"""Decision thresholds chosen on validation: 0.5, Youden's J, and a target sensitivity.

The spec's models miss too many fractures at 0.5, so training stores extra thresholds picked on the
validation split; evaluation applies them unchanged to test. One rule everywhere: an image is
predicted abnormal when `prob >= threshold`.
"""

from __future__ import annotations

import logging
import math

import numpy as np
from sklearn.metrics import roc_curve

log = logging.getLogger(__name__)

DEFAULT_THRESHOLD = 0.5


def apply_threshold(probs: np.ndarray, threshold: float) -> np.ndarray:
    """0/1 predictions: abnormal when the probability reaches the threshold."""
    return (np.asarray(probs, dtype=float) >= threshold).astype(int)


def sensitivity_key(target: float) -> str:
    return f"sensitivity_{target:.2f}"


def youden_threshold(labels: np.ndarray, probs: np.ndarray) -> float:
    """The threshold maximising TPR - FPR (ties: the highest such threshold)."""
    fpr, tpr, thresholds = roc_curve(labels, probs)
    j = tpr - fpr
    best = int(np.argmax(j))  # roc_curve lists thresholds in decreasing order: first max is highest
    return float(min(thresholds[best], 1.0))


def sensitivity_threshold(labels: np.ndarray, probs: np.ndarray, target: float) -> float:
    """The highest threshold whose sensitivity on these labels is at least `target`."""
    positives = np.sort(np.asarray(probs, dtype=float)[np.asarray(labels) == 1])[::-1]
    needed = max(1, math.ceil(target * len(positives) - 1e-9))
    return float(positives[min(needed, len(positives)) - 1])


def choose_thresholds(
    labels: np.ndarray, probs: np.ndarray, target_sensitivity: float = 0.9
) -> dict[str, float]:
    """{"default": 0.5, "youden": t, "sensitivity_<target>": t2}; 0.5 where a choice is impossible."""
    labels = np.asarray(labels, dtype=int)
    probs = np.asarray(probs, dtype=float)
    key = sensitivity_key(target_sensitivity)
    result = {"default": DEFAULT_THRESHOLD, "youden": DEFAULT_THRESHOLD, key: DEFAULT_THRESHOLD}
    n_pos = int(labels.sum())
    if len(labels) == 0 or not np.isfinite(probs).all():
        log.warning("choose_thresholds: no usable validation probabilities; keeping 0.5")
        return result
    if n_pos == 0:
        log.warning("choose_thresholds: validation has no positives; keeping 0.5")
        return result
    result[key] = sensitivity_threshold(labels, probs, target_sensitivity)
    if n_pos == len(labels):
        log.warning("choose_thresholds: validation has no negatives; Youden threshold kept at 0.5")
        return result
    result["youden"] = youden_threshold(labels, probs)
    return result

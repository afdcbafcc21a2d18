"""From fracture logits to a decision: calibration, operating points, and the figures that choose them.

One module, used by training (which fits a `Decision` on validation and stores it in `best.pt`), by
cross-validation (which fits one on out-of-fold predictions), by evaluation and by the predictor, so
the probability a report scores is the probability `predict` and `serve` return.

- Everything starts from the margin z = logit[1] - logit[0] (binary softmax depends on nothing else).
- Calibration maps z to the deployed probability: `none` sigmoid(z); `temperature` sigmoid(z / T);
  `platt` sigmoid(a z + b), a temperature plus a bias. The bias is what removes the upward shift that
  class-weighted training puts into every probability (a temperature alone cannot move the midpoint).
- Operating points are thresholds on the deployed probability, chosen on the data the calibration was
  fitted on: `default` 0.5, `youden` (max TPR - FPR), `suspicious` (the highest threshold reaching the
  target sensitivity; what predict and serve decide at unless told otherwise, as commercial fracture
  readers flag "suspicious" at high sensitivity) and `definite` (the lowest reaching the target
  specificity). One rule everywhere: abnormal when `probability >= threshold`.
- Each point's confusion counts on that same data (`PointFigures`) are kept with it: what the point
  was validated at, which every answer's tier restates (`mura.tiers`).
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from scipy.optimize import minimize
from scipy.special import expit, log_expit
from sklearn.metrics import cohen_kappa_score, roc_auc_score, roc_curve

log = logging.getLogger(__name__)

DEFAULT_THRESHOLD = 0.5
CalibrationMethod = Literal["none", "temperature", "platt"]
CALIBRATION_METHODS: tuple[str, ...] = ("none", "temperature", "platt")
SUSPICIOUS, DEFINITE = "suspicious", "definite"
# Decision points in the order a user would fall back on them when one is missing.
POINT_PREFERENCE: tuple[str, ...] = (SUSPICIOUS, "youden", "default")
_LOG_SLOPE_BOUNDS = (math.log(1 / 20), math.log(20))


def margins_from_logits(logits: np.ndarray) -> np.ndarray:
    """[N, 2] logits (or [N] margins already) -> [N] margins z = l1 - l0."""
    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim == 2 and logits.shape[1] == 2:
        return logits[:, 1] - logits[:, 0]
    return logits.reshape(-1)


def margins_from_probs(probs: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    p = np.clip(np.asarray(probs, dtype=np.float64), eps, 1 - eps)
    return np.log(p) - np.log1p(-p)


def apply_threshold(probs: np.ndarray, threshold: float) -> np.ndarray:
    """0/1 predictions: abnormal when the probability reaches the threshold."""
    return (np.asarray(probs, dtype=float) >= threshold).astype(int)


# --- the AUC / kappa edge cases ---------------------------------------------------------------------
def auc_or_nan(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC, NaN when only one class is present (AUC is undefined there, not 0.5)."""
    labels = np.asarray(labels, dtype=int)
    if len(np.unique(labels)) < 2:
        return math.nan
    return float(roc_auc_score(labels, scores))


def kappa_or_nan(labels: np.ndarray, predicted: np.ndarray) -> float:
    """Cohen's kappa; NaN with one true class, 0.0 for constant predictions (no agreement beyond chance)."""
    labels = np.asarray(labels, dtype=int)
    if len(np.unique(labels)) < 2:
        return math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = float(cohen_kappa_score(labels, np.asarray(predicted, dtype=int)))
    return 0.0 if math.isnan(value) else value


# --- calibration ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Calibration:
    """probability = sigmoid(slope * z + intercept); `none` is slope 1, intercept 0."""

    method: str = "none"
    slope: float = 1.0
    intercept: float = 0.0

    def probabilities(self, margins: np.ndarray) -> np.ndarray:
        return expit(self.slope * np.asarray(margins, dtype=np.float64) + self.intercept)

    @property
    def temperature(self) -> float:
        return 1.0 / self.slope

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "slope": float(self.slope), "intercept": float(self.intercept)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Calibration:
        return cls(str(data.get("method", "none")), float(data["slope"]), float(data["intercept"]))


def binary_nll(margins: np.ndarray, labels: np.ndarray, slope: float = 1.0, intercept: float = 0.0) -> float:
    """Mean negative log-likelihood of the labels under sigmoid(slope * z + intercept)."""
    z = slope * np.asarray(margins, dtype=float) + intercept
    y = np.asarray(labels, dtype=float)
    return float(-(y * log_expit(z) + (1 - y) * log_expit(-z)).mean())


def fit_calibration(margins: np.ndarray, labels: np.ndarray, method: str = "platt") -> Calibration:
    """Maximum-likelihood calibration of `method` on (margins, labels); identity when impossible."""
    if method not in CALIBRATION_METHODS:
        raise ValueError(f"calibration method {method!r} is not one of {CALIBRATION_METHODS}")
    z = np.asarray(margins, dtype=float).reshape(-1)
    y = np.asarray(labels, dtype=int).reshape(-1)
    if method == "none":
        return Calibration()
    if len(y) == 0 or len(z) != len(y) or not np.isfinite(z).all() or y.min() == y.max():
        log.warning("calibration: needs finite margins and both classes; keeping sigmoid(z)")
        return Calibration()

    def loss(params: np.ndarray) -> float:
        slope = math.exp(float(np.clip(params[0], *_LOG_SLOPE_BOUNDS)))
        intercept = float(params[1]) if method == "platt" else 0.0
        return binary_nll(z, y, slope, intercept)

    start = np.zeros(2)
    result = minimize(loss, start, method="Nelder-Mead", options={"xatol": 1e-6, "fatol": 1e-10})
    log_slope = float(np.clip(result.x[0], *_LOG_SLOPE_BOUNDS))
    intercept = float(result.x[1]) if method == "platt" else 0.0
    return Calibration(method, math.exp(log_slope), intercept)


# --- operating points -------------------------------------------------------------------------------
def youden_threshold(labels: np.ndarray, probs: np.ndarray) -> float:
    """The threshold maximising TPR - FPR (ties: the highest such threshold)."""
    fpr, tpr, thresholds = roc_curve(labels, probs)
    best = int(np.argmax(tpr - fpr))  # roc_curve lists thresholds in decreasing order: first max is highest
    return float(min(thresholds[best], 1.0))


def sensitivity_threshold(labels: np.ndarray, probs: np.ndarray, target: float) -> float:
    """The highest threshold whose sensitivity on these labels is at least `target`."""
    positives = np.sort(np.asarray(probs, dtype=float)[np.asarray(labels) == 1])[::-1]
    needed = max(1, math.ceil(target * len(positives) - 1e-9))
    return float(positives[min(needed, len(positives)) - 1])


def specificity_threshold(labels: np.ndarray, probs: np.ndarray, target: float) -> float:
    """The lowest threshold whose specificity on these labels is at least `target`."""
    negatives = np.sort(np.asarray(probs, dtype=float)[np.asarray(labels) == 0])
    needed = max(1, math.ceil(target * len(negatives) - 1e-9))
    if needed >= len(negatives):
        return float(np.nextafter(negatives[-1], np.inf))
    # Abnormal is prob >= t: t just above the needed-th lowest negative keeps those `needed` below it.
    return float(np.nextafter(negatives[needed - 1], np.inf))


def operating_points(
    labels: np.ndarray, probs: np.ndarray, target_sensitivity: float = 0.9, target_specificity: float = 0.9
) -> dict[str, float]:
    """{"default": 0.5, "youden", "suspicious", "definite"}; 0.5 where a choice is impossible."""
    labels = np.asarray(labels, dtype=int)
    probs = np.asarray(probs, dtype=float)
    points = dict.fromkeys(("default", "youden", SUSPICIOUS, DEFINITE), DEFAULT_THRESHOLD)
    n_pos = int(labels.sum())
    if len(labels) == 0 or not np.isfinite(probs).all() or n_pos in (0, len(labels)):
        log.warning("operating points need finite probabilities and both classes; keeping 0.5")
        return points
    points["youden"] = youden_threshold(labels, probs)
    points[SUSPICIOUS] = sensitivity_threshold(labels, probs, target_sensitivity)
    points[DEFINITE] = specificity_threshold(labels, probs, target_specificity)
    return points


def _ratio(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator else None


@dataclass(frozen=True)
class PointFigures:
    """Confusion counts at one operating point on the images its decision was fitted on.

    Stored as counts, not rates, so what a point promises (sensitivity, specificity, and PPV / NPV at
    that data's prevalence) can be restated, and given a confidence interval, without the predictions.
    """

    tp: int
    fp: int
    tn: int
    fn: int

    @property
    def images(self) -> int:
        return self.tp + self.fp + self.tn + self.fn

    @property
    def prevalence(self) -> float | None:
        return _ratio(self.tp + self.fn, self.images)

    @property
    def sensitivity(self) -> float | None:
        return _ratio(self.tp, self.tp + self.fn)

    @property
    def specificity(self) -> float | None:
        return _ratio(self.tn, self.tn + self.fp)

    @property
    def ppv(self) -> float | None:
        return _ratio(self.tp, self.tp + self.fp)

    @property
    def npv(self) -> float | None:
        return _ratio(self.tn, self.tn + self.fn)

    def to_dict(self) -> dict[str, int]:
        return {"tp": self.tp, "fp": self.fp, "tn": self.tn, "fn": self.fn}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PointFigures:
        return cls(int(data["tp"]), int(data["fp"]), int(data["tn"]), int(data["fn"]))


def point_figures(
    labels: np.ndarray, probs: np.ndarray, thresholds: dict[str, float]
) -> dict[str, PointFigures]:
    """The counts each threshold gives on (labels, probs): what a stored operating point was validated at."""
    labels = np.asarray(labels, dtype=int).reshape(-1)
    probs = np.asarray(probs, dtype=float).reshape(-1)
    if len(labels) == 0:
        return {}
    figures = {}
    for name, threshold in thresholds.items():
        flagged = probs >= threshold
        figures[name] = PointFigures(
            tp=int((flagged & (labels == 1)).sum()),
            fp=int((flagged & (labels == 0)).sum()),
            tn=int((~flagged & (labels == 0)).sum()),
            fn=int((~flagged & (labels == 1)).sum()),
        )
    return figures


@dataclass(frozen=True)
class Decision:
    """What turns margins into a decision; stored in every checkpoint (`decision`).

    `figures` are the counts at each threshold on the data it was fitted on (`fitted_on`); empty for
    checkpoints written before they were recorded (their predictions are gone, so nothing is claimed).
    """

    calibration: Calibration = field(default_factory=Calibration)
    thresholds: dict[str, float] = field(default_factory=lambda: {"default": DEFAULT_THRESHOLD})
    targets: dict[str, float] = field(default_factory=dict)  # {"sensitivity": 0.9, "specificity": 0.9}
    fitted_on: str = "not fitted"
    figures: dict[str, PointFigures] = field(default_factory=dict)
    # Where a site refitted it (`mura calibrate`): site, index and its SHA-256, images, positives, date.
    # Empty when it was fitted where the model was trained; `fitted_on` is the one-line summary of either.
    origin: dict[str, Any] = field(default_factory=dict)

    def probabilities(self, margins: np.ndarray) -> np.ndarray:
        return self.calibration.probabilities(margins)

    def default_point(self) -> str:
        return next(name for name in POINT_PREFERENCE if name in self.thresholds or name == "default")

    def threshold(self, point: str | None = None) -> float:
        name = point or self.default_point()
        if name not in self.thresholds:
            known = ", ".join(sorted(self.thresholds))
            raise KeyError(f"no operating point {name!r} (stored: {known})")
        return float(self.thresholds[name])

    def to_dict(self) -> dict[str, Any]:
        return {
            "calibration": self.calibration.to_dict(),
            "thresholds": {k: float(v) for k, v in self.thresholds.items()},
            "targets": {k: float(v) for k, v in self.targets.items()},
            "fitted_on": self.fitted_on,
            "figures": {k: v.to_dict() for k, v in self.figures.items()},
            "origin": dict(self.origin),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Decision:
        return cls(
            calibration=Calibration.from_dict(data["calibration"]),
            thresholds={str(k): float(v) for k, v in dict(data.get("thresholds") or {}).items()},
            targets={str(k): float(v) for k, v in dict(data.get("targets") or {}).items()},
            fitted_on=str(data.get("fitted_on", "")),
            figures={str(k): PointFigures.from_dict(v) for k, v in dict(data.get("figures") or {}).items()},
            origin=dict(data.get("origin") or {}),
        )


def fit_decision(
    margins: np.ndarray,
    labels: np.ndarray,
    *,
    method: str = "platt",
    target_sensitivity: float = 0.9,
    target_specificity: float = 0.9,
    fitted_on: str = "",
) -> Decision:
    """Calibrate on (margins, labels), then choose the operating points on the calibrated probabilities."""
    calibration = fit_calibration(margins, labels, method)
    probs = calibration.probabilities(margins)
    thresholds = operating_points(labels, probs, target_sensitivity, target_specificity)
    return Decision(
        calibration=calibration,
        thresholds=thresholds,
        targets={"sensitivity": float(target_sensitivity), "specificity": float(target_specificity)},
        fitted_on=fitted_on,
        figures=point_figures(labels, probs, thresholds),
    )

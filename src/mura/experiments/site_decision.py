"""A model's decision refitted on a site's own labelled sample, and what that sample can and cannot tell.

Why: calibration and operating points are fitted where a model was trained; on another hospital's
films the same thresholds can flag several times too many (or too few) images. A site refits them on
its own labelled films without retraining (`mura calibrate`, `mura.experiments.calibrate`).

- An ensemble is refitted as it was built: each member's calibration on its own margins, the
  operating points on the mean of the refitted probabilities (what `Predictor` computes), written into
  every member, so the ensemble decides exactly at them.
- Every figure is given before (as stored) and after (refitted here) with a 95% interval: ECE by
  bootstrap over studies (images of one study are not independent); sensitivity, specificity, PPV and
  NPV at `suspicious` and `definite` by Wilson score intervals (`mura.evaluation.summary`: honest at
  the edges, where a percentile bootstrap of a few cases collapses to a point). The "after" figures
  are measured on the sample the decision was fitted on: their estimates meet the targets by
  construction; the intervals say how far the true figures may be from them.
- The sample-size rule: an operating point is *set* only when the 95% interval of the figure it
  targets (sensitivity at `suspicious`, on the abnormal images; specificity at `definite`, on the
  normal ones) is at most `MAX_INTERVAL_WIDTH` (0.2) wide at the chosen threshold. The report then
  says how many images of that class would pin the target (`min_class_images`: 35 abnormal images
  for sensitivity 0.90). Otherwise the report says plainly that the sample is too small to set it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from mura.decision import DEFINITE, SUSPICIOUS, Calibration, fit_calibration, operating_points
from mura.evaluation.summary import PROPORTIONS, point_summary

MAX_INTERVAL_WIDTH = 0.2
ECE_BINS = 15
# Each fitted point: the figure it targets and the class (label) that figure is measured on.
POINT_TARGETS = {SUSPICIOUS: ("sensitivity", 1), DEFINITE: ("specificity", 0)}
_Z95 = 1.959964


@dataclass(frozen=True)
class SiteFit:
    """The refitted decision: a calibration per member, shared thresholds, the ensemble's probabilities."""

    calibrations: list[Calibration]
    thresholds: dict[str, float]
    probabilities: np.ndarray


def fit_site(
    member_margins: Sequence[np.ndarray], labels: np.ndarray, method: str, targets: dict[str, float]
) -> SiteFit:
    """Each member calibrated on its margins, the operating points chosen on the mean probability."""
    calibrations = [fit_calibration(margins, labels, method) for margins in member_margins]
    probs = np.mean([c.probabilities(z) for c, z in zip(calibrations, member_margins, strict=True)], axis=0)
    thresholds = operating_points(labels, probs, targets["sensitivity"], targets["specificity"])
    return SiteFit(calibrations, thresholds, probs)


def min_class_images(target: float, width: float = MAX_INTERVAL_WIDTH) -> int:
    """About how many images of a class pin a rate of `target` within a 95% interval `width` wide (the
    binomial count, and at least 1 / (1 - target): fewer cannot show a single miss)."""
    binomial = (2 * _Z95 / width) ** 2 * target * (1 - target)
    return max(math.ceil(binomial), math.ceil(1 / (1 - target) - 1e-9))


def study_codes(study_ids: Sequence[str]) -> np.ndarray:
    codes, _ = pd.factorize(pd.Series(list(study_ids)).astype(str), sort=True)
    return codes


def ece_interval(
    study_ids: Sequence[str],
    labels: np.ndarray,
    probs: np.ndarray,
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, float | None]:
    """Expected calibration error (`mura.evaluation.calibration`'s bins) with a bootstrap interval over
    studies. The interval is the basic (reverse-percentile) one: the plug-in ECE is biased upwards
    (noise alone puts gaps in the bins) and a resample adds that bias again, so percentiles of the
    resampled ECE can lie wholly above the estimate; reflected about it they bound the true ECE (and may
    lie below the estimate). ECE is the sum over bins of |positives - summed probability| / images, so
    a batch of resamples is one product of the draw counts [B, S] with per-study bin tallies [S, bins]."""
    labels = np.asarray(labels, dtype=float)
    probs = np.asarray(probs, dtype=float)
    if len(labels) == 0:
        return {"estimate": None, "low": None, "high": None}
    codes = study_codes(study_ids)
    n_studies = int(codes.max()) + 1
    edges = np.linspace(0.0, 1.0, ECE_BINS + 1)  # the bins of `expected_calibration_error`
    which = np.clip(np.digitize(probs, edges[1:-1], right=False), 0, ECE_BINS - 1)
    cell = codes * ECE_BINS + which
    size = n_studies * ECE_BINS
    count, sum_p, sum_y = (
        np.bincount(cell, weights=w, minlength=size).reshape(n_studies, ECE_BINS)
        for w in (np.ones_like(probs), probs, labels)
    )

    def ece(draws: np.ndarray) -> np.ndarray:
        return np.abs(draws @ sum_y - draws @ sum_p).sum(axis=1) / (draws @ count).sum(axis=1)

    estimate = float(ece(np.ones((1, n_studies)))[0])
    if n_resamples <= 0:
        return {"estimate": estimate, "low": None, "high": None}
    rng = np.random.default_rng(seed)
    draws = rng.multinomial(n_studies, np.full(n_studies, 1 / n_studies), size=n_resamples).astype(float)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(ece(draws), [tail, 100 - tail])
    return {
        "estimate": estimate,
        "low": float(max(0.0, 2 * estimate - high)),
        "high": float(2 * estimate - low),
    }


def figures(
    study_ids: Sequence[str],
    labels: np.ndarray,
    probs: np.ndarray,
    thresholds: dict[str, float | None],
    n_resamples: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """{"ece": interval, "points": {name: `point_summary` (threshold, the four rates with Wilson
    intervals)}} for these probabilities; a point without a threshold (not stored) is None."""
    points = {
        name: None if threshold is None else point_summary(labels, probs, threshold)
        for name, threshold in thresholds.items()
    }
    return {"ece": ece_interval(study_ids, labels, probs, n_resamples, seed), "points": points}


def too_small(after: dict[str, Any], targets: dict[str, float]) -> dict[str, str]:
    """{point: why the sample cannot set it} for each fitted point the sample-size rule rejects."""
    reasons = {}
    for point, (rate, label) in POINT_TARGETS.items():
        entry, target = after["points"][point][rate], targets[rate]
        word = "abnormal" if label == 1 else "normal"
        need = f"about {min_class_images(target)} {word} images pin {rate} {target:.2f} within 0.2"
        if entry["low"] is None:
            reasons[point] = f"no {word} images; {need}"
        elif entry["high"] - entry["low"] > MAX_INTERVAL_WIDTH:
            reasons[point] = (
                f"{entry['trials']} {word} images: the 95% interval of {rate} at its threshold is "
                f"{entry['low']:.3f}-{entry['high']:.3f} ({entry['high'] - entry['low']:.3f} wide, more than "
                f"{MAX_INTERVAL_WIDTH}); {need}"
            )
    return reasons


def _cell(entry: dict[str, Any] | None) -> str:
    if not entry or entry.get("estimate") is None:
        return "-"
    if entry.get("low") is None:
        return f"{entry['estimate']:.3f}"
    return f"{entry['estimate']:.3f} ({entry['low']:.3f}-{entry['high']:.3f})"


def report_text(report: dict[str, Any]) -> str:
    """The before/after table and the verdicts, as `mura calibrate` prints them and calibration.md keeps."""
    sample, targets = report["sample"], report["targets"]
    lines = [
        f"site {report['site']}: {sample['images']} images ({sample['abnormal']} abnormal) in "
        f"{sample['studies']} studies of {report['index']}",
        f"calibration {report['method']}; targets sensitivity {targets['sensitivity']:.2f}, specificity "
        f"{targets['specificity']:.2f}; 95% intervals: ECE by bootstrap over studies, rates Wilson",
        "",
        f"{'':<24}{'before (as stored)':<28}{'after (refitted here)':<28}",
        f"{'ECE':<24}{_cell(report['before']['ece']):<28}{_cell(report['after']['ece']):<28}",
    ]
    for point in POINT_TARGETS:
        before, after = report["before"]["points"][point], report["after"]["points"][point]
        stored = f"{before['threshold']:.4f}" if before else "not stored"
        lines.append(f"{point + ' threshold':<24}{stored:<28}{after['threshold']:.4f}")
        for rate in PROPORTIONS:
            lines.append(f"{'  ' + rate:<24}{_cell(before and before[rate]):<28}{_cell(after[rate]):<28}")
    lines.append("")
    for point in POINT_TARGETS:
        reason = report["too_small"].get(point)
        lines.append(f"{point}: " + (f"the sample is too small to set it: {reason}" if reason else "set"))
    if report["written"]:
        lines.append("wrote: " + ", ".join(report["written"]))
    else:
        lines.append(f"no checkpoint written: {report['not_written']}")
    return "\n".join(line.rstrip() for line in lines) + "\n"

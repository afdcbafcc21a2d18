"""The figures a report leads with: each stored operating point's sensitivity, specificity, PPV and NPV
with Wilson score intervals, the one-line headline `mura evaluate` and `mura cv` print, and how many
inputs the scope gate left out of them.

Why Wilson and not the bootstrap for these: a proportion from a handful of cases (a sensitivity from 5
positives, all found) has a percentile-bootstrap interval of [1.000, 1.000], every resample agreeing
with the sample; the Wilson score interval stays honest at the edges ([0.566, 1.000] there). Images
are counted as independent, so where studies hold several films the intervals are somewhat narrow;
rank and agreement figures (AUC, kappa) keep the bootstrap over studies (`bootstrap.py`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from mura.decision import POINT_PREFERENCE, apply_threshold

Z_95 = 1.959963984540054
PROPORTIONS = ("sensitivity", "specificity", "ppv", "npv")


def wilson_interval(successes: int, trials: int, z: float = Z_95) -> tuple[float, float] | None:
    """The Wilson score interval of successes/trials; None for no trials."""
    if trials <= 0:
        return None
    p = successes / trials
    denominator = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def proportion(successes: int, trials: int) -> dict[str, Any]:
    """{estimate, low, high, successes, trials}; the figures are None when there is nothing to count."""
    interval = wilson_interval(successes, trials)
    return {
        "estimate": successes / trials if trials else None,
        "low": interval[0] if interval else None,
        "high": interval[1] if interval else None,
        "successes": int(successes),
        "trials": int(trials),
    }


def point_summary(labels: np.ndarray, probs: np.ndarray, threshold: float) -> dict[str, Any]:
    """One operating point on these images: the four proportions with their intervals."""
    labels = np.asarray(labels, dtype=int)
    flagged = apply_threshold(probs, threshold) == 1
    tp = int((flagged & (labels == 1)).sum())
    fp = int((flagged & (labels == 0)).sum())
    fn = int((~flagged & (labels == 1)).sum())
    tn = int((~flagged & (labels == 0)).sum())
    return {
        "threshold": float(threshold),
        "n": int(len(labels)),
        "sensitivity": proportion(tp, tp + fn),
        "specificity": proportion(tn, tn + fp),
        "ppv": proportion(tp, tp + fp),
        "npv": proportion(tn, tn + fn),
    }


def deployed_point(thresholds: Mapping[str, float], preferred: str | None) -> str:
    """The point the report leads with: the one predict and serve decide at (`preferred`) when it is
    among the thresholds, else the first of `suspicious`, `youden`, `default` there is."""
    if preferred in thresholds:
        return str(preferred)
    return next(name for name in POINT_PREFERENCE if name in thresholds or name == "default")


def interval_text(entry: Mapping[str, Any], digits: int = 3) -> str:
    """ "0.902 [0.881, 0.920]", or "undefined" / the estimate alone when there is no interval."""
    if entry.get("estimate") is None:
        return "undefined"
    if entry.get("low") is None:
        return f"{entry['estimate']:.{digits}f}"
    return f"{entry['estimate']:.{digits}f} [{entry['low']:.{digits}f}, {entry['high']:.{digits}f}]"


def headline(result: Mapping[str, Any]) -> str:
    """e.g. "AUC 0.906 [0.889, 0.922]; suspicious: sensitivity 0.902 [0.881, 0.920] specificity 0.671
    [0.650, 0.691] on 2,826 images" (image level, at the deployed point)."""
    point = result["meta"]["deployed_point"]
    summary = result["summary"][point]
    interval = result["bootstrap"]["default"]["image"]["roc_auc"]
    auc = interval_text({**interval, "estimate": result["image"]["default"]["roc_auc"]})
    text = (
        f"AUC {auc}; {point}: sensitivity {interval_text(summary['sensitivity'])} "
        f"specificity {interval_text(summary['specificity'])} on {summary['n']:,} images"
    )
    refused = result["meta"].get("not_assessed")
    if refused:  # the figures are over fewer images than were given: say so where they are quoted
        layers = ", ".join(f"{layer} {n:,}" for layer, n in refused["by_layer"].items())
        text += f"; {refused['images']:,} of {refused['of']:,} not assessed ({layers})"
    return text


def not_assessed_text(not_assessed: Mapping[str, Any]) -> str:
    """How many inputs the scope gate refused and why, per layer (`meta["not_assessed"]`), e.g. "2 of 10
    images not assessed, left out of every figure and listed in not_assessed.csv: pixels 2 (a
    near-uniform image 1, a noise-like image 1)"; "" when none was refused."""
    if not not_assessed:
        return ""
    per_layer = []
    for layer, count in not_assessed["by_layer"].items():
        reasons = [
            f"{reason.split(': ', 1)[-1]} {n:,}"
            for reason, n in not_assessed["by_reason"].items()
            if reason.split(":", 1)[0] == layer
        ]
        per_layer.append(f"{layer} {count:,} ({', '.join(reasons)})" if reasons else f"{layer} {count:,}")
    return (
        f"{not_assessed['images']:,} of {not_assessed['of']:,} images not assessed, left out of every "
        f"figure and listed in {not_assessed['listed_in']}: {'; '.join(per_layer)}"
    )

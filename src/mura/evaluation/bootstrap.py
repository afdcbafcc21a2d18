"""95% confidence intervals of AUC and kappa by bootstrap over studies (images of one study are not
independent). Proportions (sensitivity, specificity, PPV, NPV) get Wilson intervals instead
(`summary.py`): a percentile bootstrap of a proportion from a few cases collapses to a point.

A resample draws studies with replacement; every image then counts as many times as its study was
drawn. Each metric is a function of per-study sums, so a whole batch of resamples is one matrix
product of the draw counts [B, S] with per-study tallies: 1000 resamples take well under a second.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy import sparse

from mura.decision import apply_threshold
from mura.evaluation.study import study_level_scores

METRICS = ("roc_auc", "kappa")
_CHUNK = 256  # resamples per matrix product: bounds memory at chunk x unique scores


def _tallies(
    study_codes: np.ndarray, labels: np.ndarray, probs: np.ndarray, threshold: float, n_studies: int
):
    """Per-study counts of tp/fp/fn/tn, and sparse [S, U] counts of positives/negatives per unique score."""
    preds = apply_threshold(probs, threshold)
    per_study = {}
    for name, mask in (
        ("tp", (labels == 1) & (preds == 1)),
        ("fp", (labels == 0) & (preds == 1)),
        ("fn", (labels == 1) & (preds == 0)),
        ("tn", (labels == 0) & (preds == 0)),
    ):
        per_study[name] = np.bincount(study_codes, weights=mask.astype(float), minlength=n_studies)
    _, score_rank = np.unique(probs, return_inverse=True)
    n_unique = int(score_rank.max()) + 1 if len(probs) else 0
    shape = (n_studies, n_unique)
    pos = sparse.coo_matrix(((labels == 1).astype(float), (study_codes, score_rank)), shape=shape).tocsr()
    neg = sparse.coo_matrix(((labels == 0).astype(float), (study_codes, score_rank)), shape=shape).tocsr()
    return per_study, pos, neg


def _metrics_for_draws(counts: np.ndarray, per_study: dict, pos, neg) -> dict[str, np.ndarray]:
    """Metric values for each row of study draw counts [B, S]; NaN where a resample makes one undefined."""
    tp, fp, fn, tn = (counts @ per_study[k] for k in ("tp", "fp", "fn", "tn"))
    n = tp + fp + fn + tn
    with np.errstate(invalid="ignore", divide="ignore"):
        p_o = (tp + tn) / n
        p_e = ((tp + fp) * (tp + fn) + (fn + tn) * (fp + tn)) / n**2
        kappa = np.where(np.isclose(p_e, 1.0), np.nan, (p_o - p_e) / (1 - p_e))
        w_pos = np.asarray((pos.T @ counts.T).T)  # [B, U] positive weight at each score, ascending
        w_neg = np.asarray((neg.T @ counts.T).T)
        neg_below = np.cumsum(w_neg, axis=1) - w_neg
        concordant = (w_pos * (neg_below + 0.5 * w_neg)).sum(axis=1)
        total = w_pos.sum(axis=1) * w_neg.sum(axis=1)
        auc = np.where(total > 0, concordant / np.where(total > 0, total, 1), np.nan)
    return {"roc_auc": auc, "kappa": kappa}


def _point(per_study: dict, pos, neg, n_studies: int) -> dict[str, float]:
    values = _metrics_for_draws(np.ones((1, n_studies)), per_study, pos, neg)
    return {k: float(v[0]) for k, v in values.items()}


def bootstrap_over_studies(
    study_ids: np.ndarray,
    labels: np.ndarray,
    probs: np.ndarray,
    threshold: float,
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, dict[str, Any]]:
    """{metric: {estimate, low, high, n_valid}} for AUC and kappa of these rows."""
    labels = np.asarray(labels, dtype=int)
    probs = np.asarray(probs, dtype=float)
    codes, _ = pd.factorize(pd.Series(study_ids).astype(str), sort=True)
    n_studies = int(codes.max()) + 1 if len(codes) else 0
    if n_studies == 0 or n_resamples <= 0:
        reason = "no samples" if n_studies == 0 else "bootstrap disabled"
        return {m: dict(estimate=None, low=None, high=None, n_valid=0, undefined=reason) for m in METRICS}
    per_study, pos, neg = _tallies(codes, labels, probs, threshold, n_studies)
    point = _point(per_study, pos, neg, n_studies)
    rng = np.random.default_rng(seed)
    collected: dict[str, list[np.ndarray]] = {m: [] for m in METRICS}
    for start in range(0, n_resamples, _CHUNK):
        size = min(_CHUNK, n_resamples - start)
        counts = rng.multinomial(n_studies, np.full(n_studies, 1.0 / n_studies), size=size).astype(float)
        for name, values in _metrics_for_draws(counts, per_study, pos, neg).items():
            collected[name].append(values)
    tail = (1 - level) / 2 * 100
    result = {}
    for name in METRICS:
        values = np.concatenate(collected[name])
        values = values[np.isfinite(values)]
        entry: dict[str, Any] = dict(
            estimate=point[name] if np.isfinite(point[name]) else None,
            n_valid=int(len(values)),
            n_resamples=int(n_resamples),
            level=level,
        )
        if len(values) < max(10, n_resamples // 2):
            entry.update(
                low=None,
                high=None,
                undefined=f"defined in only {len(values)} of {n_resamples} "
                "resamples (too few studies of one class)",
            )
        else:
            low, high = np.percentile(values, [tail, 100 - tail])
            entry.update(low=float(low), high=float(high))
        result[name] = entry
    return result


def bootstrap_report(
    df: pd.DataFrame, threshold: float, n_resamples: int = 1000, seed: int = 0
) -> dict[str, dict[str, Any]]:
    """Image-level and study-level CIs, both resampling studies."""
    image = bootstrap_over_studies(
        df["study_id"].to_numpy(),
        df["label"].to_numpy(),
        df["fracture_prob"].to_numpy(),
        threshold,
        n_resamples,
        seed,
    )
    studies = study_level_scores(df)
    study = bootstrap_over_studies(
        studies["study_id"].to_numpy(),
        studies["label"].to_numpy(),
        studies["fracture_prob"].to_numpy(),
        threshold,
        n_resamples,
        seed,
    )
    return {"image": image, "study": study}

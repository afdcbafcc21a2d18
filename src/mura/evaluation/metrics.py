"""Image-level metrics from scikit-learn, with every degenerate figure stated "undefined" plus why.

A figure that cannot be computed (AUC with one class, precision of a class never predicted, an empty
split) is `None` in the result and its reason is recorded under `undefined`, so JSON stays honest and
tables print "undefined" instead of a misleading 0.0. scikit-learn's warnings never reach the user.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    cohen_kappa_score,
    confusion_matrix,
    precision_recall_fscore_support,
    roc_auc_score,
)

from mura.decision import apply_threshold

FRACTURE_CLASS_NAMES: tuple[str, ...] = ("0", "1")  # the spec's report labels the classes 0 and 1


def _clean(value: Any) -> float | None:
    """A finite float, or None for NaN/inf (the JSON form of "undefined")."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def classification_report(
    y_true: np.ndarray, y_pred: np.ndarray, labels: Sequence[int], names: Sequence[str]
) -> dict[str, Any]:
    """The spec's table: per-class precision/recall/F1/support, accuracy, macro and weighted averages."""
    y_true = np.asarray(y_true, dtype=int)
    y_pred = np.asarray(y_pred, dtype=int)
    undefined: dict[str, str] = {}
    n = int(len(y_true))
    if n == 0:
        rows = [dict(cls=name, precision=None, recall=None, f1=None, support=0) for name in names]
        reason = "no samples"
        undefined.update({"accuracy": reason, "macro_avg": reason, "weighted_avg": reason})
        empty = dict(precision=None, recall=None, f1=None, support=0)
        return dict(
            classes=rows,
            accuracy=None,
            macro_avg=empty,
            weighted_avg=dict(empty),
            support=0,
            undefined=undefined,
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p, r, f, s = precision_recall_fscore_support(
            y_true, y_pred, labels=list(labels), zero_division=np.nan
        )
    rows = []
    for i, name in enumerate(names):
        row = dict(cls=name, precision=_clean(p[i]), recall=_clean(r[i]), f1=_clean(f[i]), support=int(s[i]))
        if s[i] == 0:
            undefined[f"recall[{name}]"] = f"class {name} has no samples"
        if row["precision"] is None:
            undefined[f"precision[{name}]"] = f"class {name} was never predicted"
        if row["f1"] is None and s[i] > 0:
            undefined[f"f1[{name}]"] = f"precision or recall of class {name} is undefined"
        rows.append(row)
    # Average over the classes that occur in the truth or the predictions (scikit-learn's default label
    # set), so a class predicted but never present still costs its precision of 0.
    predicted = np.isin(np.asarray(list(labels)), y_pred)
    present = (s > 0) | predicted
    macro = {}
    weighted = {}
    for key, values in (("precision", p), ("recall", r), ("f1", f)):
        # An undefined figure of a class in the set counts as 0 (scikit-learn's zero_division=0).
        vals = np.nan_to_num(values[present], nan=0.0)
        macro[key] = _clean(vals.mean()) if present.any() else None
        weighted[key] = _clean(np.average(vals, weights=s[present])) if present.any() else None
    macro["support"] = weighted["support"] = n
    if not present.all():
        absent = ", ".join(name for name, ok in zip(names, present, strict=True) if not ok)
        undefined["macro_avg"] = f"averaged over the classes seen only (never seen: {absent})"
    return dict(
        classes=rows,
        accuracy=_clean(accuracy_score(y_true, y_pred)),
        macro_avg=macro,
        weighted_avg=weighted,
        support=n,
        undefined=undefined,
    )


def fracture_metrics(labels: np.ndarray, probs: np.ndarray, threshold: float = 0.5) -> dict[str, Any]:
    """Every fracture figure of the spec's section 4.1 at one decision threshold."""
    labels = np.asarray(labels, dtype=int)
    probs = np.asarray(probs, dtype=float)
    preds = apply_threshold(probs, threshold)
    n, n_pos = int(len(labels)), int(labels.sum())
    report = classification_report(labels, preds, labels=[0, 1], names=FRACTURE_CLASS_NAMES)
    undefined = dict(report.pop("undefined"))
    out: dict[str, Any] = dict(threshold=float(threshold), n=n, n_positive=n_pos, n_negative=n - n_pos)
    out["accuracy"] = report["accuracy"]
    out["report"] = report
    one_class = n == 0 or n_pos in (0, n)
    why = "no samples" if n == 0 else f"only one class present ({'1' if n_pos else '0'})"
    if one_class:
        out["roc_auc"] = out["average_precision"] = None
        undefined["roc_auc"] = why
        undefined["average_precision"] = why if n_pos == 0 else "no negatives: precision is trivially 1"
    else:
        out["roc_auc"] = _clean(roc_auc_score(labels, probs))
        out["average_precision"] = _clean(average_precision_score(labels, probs))
    out["kappa"] = kappa(labels, preds, undefined)
    cm = confusion_matrix(labels, preds, labels=[0, 1]) if n else np.zeros((2, 2), dtype=int)
    out["confusion_matrix"] = cm.astype(int).tolist()
    tn, fp, fn, tp = (int(v) for v in cm.ravel())
    out["sensitivity"] = tp / (tp + fn) if tp + fn else None
    out["specificity"] = tn / (tn + fp) if tn + fp else None
    out["ppv"] = tp / (tp + fp) if tp + fp else None  # at this data's prevalence
    out["npv"] = tn / (tn + fn) if tn + fn else None
    out["prevalence"] = n_pos / n if n else None
    if out["sensitivity"] is None:
        undefined["sensitivity"] = "no positive samples"
    if out["specificity"] is None:
        undefined["specificity"] = "no negative samples"
    out["macro_f1"] = report["macro_avg"]["f1"]
    out["undefined"] = undefined
    return out


def kappa(y_true: np.ndarray, y_pred: np.ndarray, undefined: dict[str, str]) -> float | None:
    """Cohen's kappa, or None (reason recorded) when chance agreement is total or there are no samples."""
    if len(y_true) == 0:
        undefined["kappa"] = "no samples"
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = _clean(cohen_kappa_score(y_true, y_pred))
    if value is None:
        undefined["kappa"] = "labels and predictions are the same single class (chance agreement is 1)"
    return value


def per_group_fracture_metrics(
    frame: pd.DataFrame,
    column: str,
    threshold: float,
    prob_column: str = "fracture_prob",
    groups: Sequence[str] | None = None,
) -> dict[str, dict[str, Any]]:
    """Fracture metrics for each value of `column` (a body part, hardware flag, view, ...).

    `groups` lists values that must appear even with no samples (the model's body parts), so a missing
    part is reported as "undefined: no samples" rather than silently dropped.
    """
    keys = frame[column].astype(str).replace({"nan": "", "None": ""})
    names = list(groups) if groups is not None else []
    names += sorted(v for v in keys.unique() if v not in names)
    result = {}
    for name in names:
        rows = frame[keys == name]
        label = name if name != "" else "(empty)"
        result[label] = fracture_metrics(rows["label"].to_numpy(), rows[prob_column].to_numpy(), threshold)
    return result

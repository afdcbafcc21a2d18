"""The spec's table layouts (classification report, confusion matrix, per-group and CI tables)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from mura.evaluation.tables import Table, fmt

REPORT_HEADERS = ("Class", "Precision", "Recall", "F1-score", "Support")
GROUP_HEADERS = (
    "Group",
    "Images",
    "Abnormal",
    "Accuracy",
    "ROC AUC",
    "Kappa",
    "Sensitivity",
    "Specificity",
    "F1 (1)",
)


def classification_table(report: Mapping[str, Any] | None, caption: str, digits: int = 4) -> Table:
    """The spec's classification report: per class, then accuracy, macro and weighted averages."""
    if report is None:
        return Table(REPORT_HEADERS, [("(none)", None, None, None, 0)], caption)

    def r(v: object) -> object:
        return fmt(v, digits) if v is None or isinstance(v, float) else v

    rows: list[tuple] = [
        (
            c["cls"].title() if len(c["cls"]) > 1 else c["cls"],
            r(c["precision"]),
            r(c["recall"]),
            r(c["f1"]),
            c["support"],
        )
        for c in report["classes"]
    ]
    rows.append(("Accuracy", "", "", r(report["accuracy"]), report["support"]))
    for key, label in (("macro_avg", "Macro Avg"), ("weighted_avg", "Weighted Avg")):
        avg = report[key]
        rows.append((label, r(avg["precision"]), r(avg["recall"]), r(avg["f1"]), avg["support"]))
    return Table(REPORT_HEADERS, rows, caption)


def confusion_table(
    matrix: list[list[int]] | None,
    names: Sequence[str],
    caption: str,
    columns: Sequence[str] | None = None,
) -> Table:
    """Rows: the true `names`; columns: the predicted ones (`columns` when answers go beyond them)."""
    columns = list(names if columns is None else columns)
    headers = ("true \\ predicted", *columns)
    if matrix is None:
        return Table(headers, [("undefined", *([None] * len(columns)))], caption)
    return Table(headers, [(names[i], *row) for i, row in enumerate(matrix)], caption)


def group_table(per_group: Mapping[str, Mapping[str, Any]], caption: str) -> Table:
    rows = []
    for name, m in per_group.items():
        f1_pos = m["report"]["classes"][1]["f1"]
        rows.append(
            (
                name.title() if name.isupper() else name,
                m["n"],
                m["n_positive"],
                m["accuracy"],
                m["roc_auc"],
                m["kappa"],
                m["sensitivity"],
                m["specificity"],
                f1_pos,
            )
        )
    return Table(GROUP_HEADERS, rows, caption)


def threshold_table(result: Mapping[str, Any]) -> Table:
    """Every operating point, 0.5 included; study columns only where studies hold several films."""
    study_level = result["meta"]["several_films_per_study"]
    rows = []
    for name, value in result["thresholds"].items():
        image, study = result["image"][name], result["study"][name]["overall"]
        row = [name, value, image["accuracy"], image["macro_f1"], image["kappa"], image["sensitivity"]]
        row += [image["specificity"], image.get("ppv"), image.get("npv")]
        if study_level:
            row += [study["sensitivity"], study["specificity"], study["kappa"]]
        rows.append(tuple(row))
    headers = ["Operating point", "Threshold", "Accuracy", "Macro F1", "Kappa", "Sensitivity"]
    headers += ["Specificity", "PPV", "NPV"]
    if study_level:
        headers += ["Study sens.", "Study spec.", "Study kappa"]
    return Table(
        headers,
        rows,
        ("Image-level and study-level" if study_level else "Image-level")
        + " figures at each operating point (suspicious: high sensitivity, the default of predict and "
        "serve; definite: high specificity); thresholds other than 0.5 were chosen where the report's "
        "header says (validation or out-of-fold predictions); PPV and NPV at this data's prevalence.",
    )


def ci_text(entry: Mapping[str, Any]) -> str:
    if entry.get("low") is None:
        return f"{fmt(entry.get('estimate'))} (CI undefined: {entry.get('undefined', 'no resamples')})"
    return f"{entry['estimate']:.4f} [{entry['low']:.4f}, {entry['high']:.4f}]"


def bootstrap_table(boot: Mapping[str, Any], levels: Sequence[str] = ("image", "study")) -> Table:
    rows = []
    for level in levels:
        for metric, entry in boot[level].items():
            rows.append(
                (
                    level,
                    metric,
                    entry.get("estimate"),
                    entry.get("low"),
                    entry.get("high"),
                    entry.get("n_valid"),
                )
            )
    return Table(
        ("Level", "Metric", "Estimate", "95% low", "95% high", "Valid resamples"),
        rows,
        "Percentile intervals of AUC and kappa; each resample draws studies with replacement. "
        "Sensitivity, specificity, PPV and NPV have Wilson intervals (Summary).",
    )

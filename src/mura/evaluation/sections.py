"""Turn one evaluation's metrics dictionary into the report's sections (the spec's table layouts)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from mura.evaluation.layouts import (
    bootstrap_table,
    ci_text,
    classification_table,
    confusion_table,
    group_table,
    threshold_table,
)
from mura.evaluation.tables import Image, Section, Table, fmt


def iter_undefined(node: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """Every (figure, reason) recorded under an `undefined` key anywhere in the metrics."""
    if isinstance(node, Mapping):
        for key, value in node.items():
            if key == "undefined" and isinstance(value, Mapping):
                for figure, reason in value.items():
                    yield f"{path}.{figure}".lstrip("."), str(reason)
            elif key == "undefined" and isinstance(value, str):
                yield path.lstrip("."), value
            else:
                yield from iter_undefined(value, f"{path}.{key}")


def build_sections(
    result: Mapping[str, Any], plots: Mapping[str, Path | None], training_plots: Mapping[str, Path | None]
) -> list[Section]:
    """All sections of one evaluation's report, in reading order."""
    meta, default = result["meta"], result["image"]["default"]
    boot = result["bootstrap"]["default"]
    study = result["study"]["default"]
    sections = [
        Section(
            "Summary",
            [
                f"Model(s): {', '.join(meta.get('models') or ['(unknown)'])}. Split: {meta['split']}. "
                f"{meta['n_images']} images in {meta['n_studies']} studies "
                f"({meta['n_positive']} abnormal images). "
                f"Body part for the fracture head: {meta['body_part_source']}.",
                Table(
                    (
                        "Level",
                        "Accuracy",
                        "Macro F1",
                        "ROC AUC [95% CI]",
                        "Kappa [95% CI]",
                        "Sensitivity",
                        "Specificity",
                    ),
                    [
                        (
                            "image",
                            default["accuracy"],
                            default["macro_f1"],
                            ci_text(boot["image"]["roc_auc"]),
                            ci_text(boot["image"]["kappa"]),
                            default["sensitivity"],
                            default["specificity"],
                        ),
                        (
                            "study",
                            study["overall"]["accuracy"],
                            study["overall"]["macro_f1"],
                            ci_text(boot["study"]["roc_auc"]),
                            ci_text(boot["study"]["kappa"]),
                            study["overall"]["sensitivity"],
                            study["overall"]["specificity"],
                        ),
                    ],
                    "At threshold 0.5. Study probability = mean of its images' probabilities (MURA paper).",
                ),
            ],
        )
    ]
    sections.append(
        Section(
            "Data distribution",
            [Image(plots.get("distribution"), "Normal and abnormal images per body part (spec Figure 1)")],
        )
    )
    sections.append(
        Section(
            "Fracture classification",
            [
                classification_table(
                    default["report"],
                    "Fracture classification report at threshold 0.5 "
                    "(layout of the spec's Tables 1, 2, 4, 6).",
                ),
                f"ROC AUC Score: {fmt(default['roc_auc'])}. Cohen's Kappa Score: {fmt(default['kappa'])}. "
                f"Average precision: {fmt(default['average_precision'])}.",
                confusion_table(
                    default["confusion_matrix"], ("0", "1"), "Confusion matrix at threshold 0.5."
                ),
                Image(plots.get("confusion_fracture"), "Fracture confusion matrix"),
            ],
        )
    )
    if meta.get("external"):
        sections.append(
            Section(
                "External data (spec Tables 10-11)",
                [
                    "No body part is known for these images: the fracture head used the body-part head's "
                    "prediction, and per-body-part figures below are grouped by the PREDICTED body part.",
                    classification_table(
                        default["report"], "Generalization performance (Table 10 layout).", 2
                    ),
                    confusion_table(
                        default["confusion_matrix"], ("0", "1"), "Confusion matrix (Table 11 layout)."
                    ),
                ],
            )
        )
    sections.append(Section("Decision thresholds", [threshold_table(result)]))
    sections.append(
        Section(
            "ROC and precision-recall curves",
            [
                Image(plots.get("roc"), "ROC curves, overall and per body part"),
                Image(plots.get("pr"), "Precision-recall curves, overall and per body part"),
            ],
        )
    )
    sections.append(
        Section(
            "Per body part",
            [
                group_table(
                    result["per_body_part"]["default"],
                    "Fracture figures per "
                    f"{'predicted ' if meta.get('external') else ''}body part at threshold 0.5.",
                ),
                Image(plots.get("per_body_part"), "Fracture figures per body part"),
            ],
        )
    )
    body = result["body_part"]
    sections.append(
        Section(
            "Body part classification",
            [
                f"Accuracy: {fmt(body['accuracy'])} on {body['n']} images with a known body part. "
                f"Macro F1: {fmt(body['macro_f1'])}.",
                classification_table(
                    body["report"], "Body part classification report (layout of the spec's Tables 3, 5, 7)."
                ),
                Image(
                    plots.get("confusion_body_part"),
                    "Body part confusion matrix",
                    "undefined: " + "; ".join(body["undefined"].values())
                    if body["undefined"]
                    else "not drawn",
                ),
            ],
        )
    )
    kappa_rows = [
        (part.title() if part.isupper() else part, k["n_studies"], k["kappa"])
        for part, k in study["kappa"].items()
    ]
    sections.append(
        Section(
            "Study level (MURA paper)",
            [
                classification_table(study["overall"]["report"], "Study-level classification report at 0.5."),
                f"Study-level ROC AUC: {fmt(study['overall']['roc_auc'])}. "
                f"Cohen's kappa: {fmt(study['overall']['kappa'])}.",
                Table(
                    ("Body part", "Studies", "Cohen's kappa"),
                    kappa_rows,
                    "Study-level kappa per body part (the MURA paper's table).",
                ),
                group_table(study["per_body_part"], "Study-level fracture figures per body part at 0.5."),
                "Predictions for the official MURA scorer: mura_scorer.csv (study path, 0/1; no header).",
            ],
        )
    )
    sections.append(Section("Confidence intervals", [bootstrap_table(boot)]))
    cal = result["calibration"]
    sections.append(
        Section(
            "Calibration",
            [
                Table(
                    ("Calibration", "ECE (before)", "ECE (deployed)", "NLL (before)", "NLL (deployed)"),
                    [
                        (
                            cal["method"],
                            cal["ece_uncalibrated"],
                            cal["ece"],
                            cal["nll_uncalibrated"],
                            cal["nll"],
                        )
                    ],
                    f"Expected calibration error over {cal['bins']} equal-width bins, of "
                    "sigmoid(logit margin) before and of the deployed probability after the calibration "
                    "stored in the checkpoint(s) (fitted on validation or out-of-fold predictions). The "
                    "deployed probability is what `mura predict` and `mura serve` return.",
                ),
                Image(plots.get("reliability"), "Reliability diagram"),
            ],
        )
    )
    for column, by_threshold in result["subgroups"].items():
        sections.append(
            Section(
                f"Subgroups by {column}",
                [group_table(by_threshold["default"], f"Fracture figures per value of `{column}` at 0.5.")],
            )
        )
    if training_plots:
        sections.append(
            Section(
                "Training curves",
                [
                    Image(
                        path, f"Training log of {name}", "no metrics.csv / metrics.jsonl in the run directory"
                    )
                    for name, path in training_plots.items()
                ],
            )
        )
    others = [f".{name}." for name in result["thresholds"] if name != "default"]
    undefined = sorted({u for u in iter_undefined(result) if not any(o in f".{u[0]}" for o in others)})
    sections.append(
        Section(
            "Undefined figures",
            [
                Table(("Figure", "Why undefined"), [list(u) for u in undefined])
                if undefined
                else "Every figure was defined."
            ],
        )
    )
    return sections

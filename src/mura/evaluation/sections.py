"""Turn one evaluation's metrics dictionary into the report's sections (the spec's table layouts)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from mura.evaluation.body_parts import body_part_text
from mura.evaluation.layouts import (
    bootstrap_table,
    ci_text,
    classification_table,
    confusion_table,
    group_table,
    threshold_table,
)
from mura.evaluation.localisation_section import finding_points, localisation_blocks
from mura.evaluation.summary import PROPORTIONS, interval_text, not_assessed_text
from mura.evaluation.tables import Details, Image, Section, Table, fmt

SINGLE_FILM = (
    "Every study here is one film, so the study level (the mean of a study's films) is the image level; "
    "it is not repeated."
)


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


def summary_table(result: Mapping[str, Any]) -> Table:
    """The stored operating points (0.5 only when none is stored), the deployed one first."""
    meta, point = result["meta"], result["meta"]["deployed_point"]
    stored = [name for name in result["thresholds"] if name != "default"] or ["default"]
    rows = []
    for name in sorted(stored, key=lambda n: n != point):
        entry = result["summary"][name]
        label = f"{name} (deployed)" if name == point else name
        rows.append((label, entry["threshold"], *(interval_text(entry[k]) for k in PROPORTIONS)))
    prevalence = result["image"]["default"].get("prevalence")
    chosen = meta.get("threshold_source") or "none stored: 0.5 only"
    return Table(
        ("Operating point", "Threshold", "Sensitivity", "Specificity", "PPV", "NPV"),
        rows,
        f"Image level, at the operating points stored in the model(s) ({chosen}); "
        "deployed: what `mura predict` and `mura serve` decide at. 95% Wilson score intervals (images "
        f"counted as independent); PPV and NPV at this data's prevalence ({fmt(prevalence, 3)}).",
    )


def build_sections(
    result: Mapping[str, Any],
    plots: Mapping[str, Path | None],
    training_plots: Mapping[str, Path | None],
    films: Mapping[str, Path | None] | None = None,
) -> list[Section]:
    """All sections of one evaluation's report, in reading order: the deployed figures first; a
    localisation section (`films` drawn by kind) when the data had boxes."""
    meta, point = result["meta"], result["meta"]["deployed_point"]
    image, boot, study = result["image"][point], result["bootstrap"][point], result["study"][point]
    at = f"the {point} point (threshold {fmt(result['thresholds'][point], 3)})"
    several = meta["several_films_per_study"]
    studies = f"{meta['n_studies']} studies" if several else "one film per study"
    summary: list[object] = [
        f"Model(s): {', '.join(meta.get('models') or ['(unknown)'])}. Split: {meta['split']}. "
        f"{meta['n_images']} images, {studies} ({meta['n_positive']} positive images). "
        f"Body part for the fracture head: {meta['body_part_source']}.",
        *([f"Out of scope: {not_assessed_text(meta['not_assessed'])}."] if meta.get("not_assessed") else []),
        f"Headline: {result['headline']}.",
        summary_table(result),
        f"Cohen's kappa at {at}: {interval_text({**boot['image']['kappa'], 'estimate': image['kappa']})}.",
    ]
    if several:
        summary.append(
            f"Study level (mean of a study's images, MURA paper) at {at}: ROC AUC "
            f"{ci_text(boot['study']['roc_auc'])}, sensitivity {fmt(study['overall']['sensitivity'])}, "
            f"specificity {fmt(study['overall']['specificity'])}."
        )
    sections = [Section("Summary", summary)]
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
                    image["report"],
                    f"Fracture classification report at {at} (layout of the spec's Tables 1, 2, 4, 6).",
                ),
                f"ROC AUC Score: {fmt(image['roc_auc'])}. Cohen's Kappa Score: {fmt(image['kappa'])}. "
                f"Average precision: {fmt(image['average_precision'])}.",
                confusion_table(image["confusion_matrix"], ("0", "1"), f"Confusion matrix at {at}."),
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
                        image["report"], f"Generalization performance at {at} (Table 10 layout).", 2
                    ),
                    confusion_table(
                        image["confusion_matrix"], ("0", "1"), f"Confusion matrix at {at} (Table 11 layout)."
                    ),
                ],
            )
        )
    if "localisation" in result:
        blocks = localisation_blocks(result["localisation"], finding_points(result), films or {})
        sections.append(Section("Localisation", blocks))
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
                    result["per_body_part"][point],
                    f"Fracture figures per {'predicted ' if meta.get('external') else ''}body part at {at}.",
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
                body_part_text(body, meta["body_part_floor"]),
                classification_table(
                    body["report"],
                    "Body part classification report over the films the model named (layout of the "
                    "spec's Tables 3, 5, 7).",
                ),
                confusion_table(
                    body["confusion_matrix"],
                    body["confusion_rows"],
                    "Body part confusion matrix (unsure answers in their own column).",
                    columns=body["confusion_columns"],
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
    sections.append(
        Section("Study level (MURA paper)", study_blocks(study, at) if several else [SINGLE_FILM])
    )
    levels = ("image", "study") if several else ("image",)
    sections.append(Section("Confidence intervals", [bootstrap_table(boot, levels)]))
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
                [group_table(by_threshold[point], f"Fracture figures per value of `{column}` at {at}.")],
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
    sections.append(Section("Undefined figures", [undefined_block(result)]))
    return sections


def study_blocks(study: Mapping[str, Any], at: str) -> list[object]:
    """The MURA paper's study level: report, AUC, kappa per body part, figures per body part."""
    kappa_rows = [
        (part.title() if part.isupper() else part, k["n_studies"], k["kappa"])
        for part, k in study["kappa"].items()
    ]
    return [
        classification_table(study["overall"]["report"], f"Study-level classification report at {at}."),
        f"Study-level ROC AUC: {fmt(study['overall']['roc_auc'])}. "
        f"Cohen's kappa: {fmt(study['overall']['kappa'])}.",
        Table(
            ("Body part", "Studies", "Cohen's kappa"),
            kappa_rows,
            "Study-level kappa per body part (the MURA paper's table).",
        ),
        group_table(study["per_body_part"], f"Study-level fracture figures per body part at {at}."),
        "Predictions for the official MURA scorer: mura_scorer.csv (study path, 0/1; no header).",
    ]


def undefined_block(result: Mapping[str, Any]) -> object:
    """A count and the reasons, folded: the figures at the deployed point that could not be computed,
    grouped by why, with a few of each as examples (not a hundred rows of keys)."""
    point = result["meta"]["deployed_point"]
    others = [f".{name}." for name in result["thresholds"] if name != point]
    undefined = sorted({u for u in iter_undefined(result) if not any(o in f".{u[0]}" for o in others)})
    if not undefined:
        return "Every figure was defined."
    by_reason: dict[str, list[str]] = {}
    for figure, reason in undefined:
        by_reason.setdefault(reason, []).append(figure)
    rows = [
        (reason, len(figures), ", ".join(figures[:3]) + (", ..." if len(figures) > 3 else ""))
        for reason, figures in sorted(by_reason.items(), key=lambda item: -len(item[1]))
    ]
    return Details(
        f"{len(undefined)} figures are undefined, for {len(by_reason)} reason(s): show them",
        [Table(("Why undefined", "Figures", "For example"), rows)],
    )

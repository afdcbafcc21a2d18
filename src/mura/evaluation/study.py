"""Study-level view of the MURA paper: a study's probability is the mean of its images' probabilities.

Also writes the official MURA scorer's input: a header-less CSV of `study path, 0/1 prediction`.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mura.decision import apply_threshold
from mura.evaluation.metrics import fracture_metrics, kappa, per_group_fracture_metrics


def _first_nonempty(values: pd.Series) -> str:
    for value in values:
        if isinstance(value, str) and value:
            return value
    return ""


def study_level_scores(df: pd.DataFrame) -> pd.DataFrame:
    """One row per study: study_id, body_part, label (abnormal if any image is), fracture_prob (mean),
    n_images; sorted by study_id so the result does not depend on the order of the images."""
    columns = ["study_id", "body_part", "label", "fracture_prob", "n_images"]
    if len(df) == 0:
        return pd.DataFrame(columns=columns)
    frame = df.assign(body_part=df["body_part"].fillna("").astype(str) if "body_part" in df else "")
    grouped = frame.groupby("study_id", sort=True)
    studies = pd.DataFrame(
        {
            "body_part": grouped["body_part"].agg(_first_nonempty),
            "label": grouped["label"].max().astype(int),
            "fracture_prob": grouped["fracture_prob"].mean(),
            "n_images": grouped.size(),
        }
    )
    if "body_part_pred" in frame:
        # The body part the study was scored as: the most frequent per-image prediction.
        studies["body_part_pred"] = grouped["body_part_pred"].agg(
            lambda s: int(s.mode().min()) if s.notna().any() else -1
        )
    return studies.reset_index()


def study_metrics(df: pd.DataFrame, threshold: float, body_parts: Sequence[str]) -> dict[str, Any]:
    """Study-level fracture metrics overall and per body part (a row for each of the model's
    `body_parts`, and any other part the studies have), plus the MURA paper's kappa table."""
    studies = study_level_scores(df)
    overall = fracture_metrics(studies["label"].to_numpy(), studies["fracture_prob"].to_numpy(), threshold)
    per_part = (
        per_group_fracture_metrics(studies, "body_part", threshold, groups=body_parts) if len(studies) else {}
    )
    kappa_table = {}
    for part, metrics in per_part.items():
        kappa_table[part] = dict(
            kappa=metrics["kappa"], n_studies=metrics["n"], undefined=metrics["undefined"].get("kappa")
        )
    if len(studies):
        undefined: dict[str, str] = {}
        preds = apply_threshold(studies["fracture_prob"].to_numpy(), threshold)
        kappa_table["overall"] = dict(
            kappa=kappa(studies["label"].to_numpy(), preds, undefined),
            n_studies=len(studies),
            undefined=undefined.get("kappa"),
        )
    return dict(n_studies=int(len(studies)), overall=overall, per_body_part=per_part, kappa=kappa_table)


def write_mura_scorer_csv(studies: pd.DataFrame, threshold: float, path: str | Path) -> Path:
    """The official MURA scorer's predictions file: `study_path,0|1` per study, no header."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    preds = apply_threshold(studies["fracture_prob"].to_numpy(), threshold) if len(studies) else np.array([])
    table = pd.DataFrame({"Study": studies["study_id"].astype(str), "Model": preds.astype(int)})
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    table.to_csv(tmp, header=False, index=False)
    os.replace(tmp, path)
    return path

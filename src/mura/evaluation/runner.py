"""Checkpoint(s) + cache -> an evaluation directory: what `mura evaluate` runs, callable from tests.

Probabilities are the deployed ones (each checkpoint's stored calibration, through the same
`Predictor` that `mura predict` and `mura serve` use, from cache rows that are exactly the pixels those
commands compute from the files). Operating points are the ones stored in the checkpoint(s) (an
ensemble uses their mean, as the Predictor does); when none are stored they are chosen on `val` now.
The checkpoints are only read; `record=True` writes the test figures into a single one.

Cache rows the scope gate refuses (`mura.inference.scope`; a cache holds decoded grey films, so its
pixel layer) are never scored silently: they are left out of every metric, listed in
`not_assessed.csv` beside the report and counted per layer and reason in its metadata
(`meta.not_assessed`), which the report's summary and the headline state.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mura.atomic import write_text
from mura.checkpoint import update_checkpoint
from mura.data.cache import ImageCache, open_cache
from mura.data.index import read_index
from mura.decision import operating_points
from mura.errors import MuraError
from mura.evaluation.localisation import predictions_localisation
from mura.evaluation.report import PREDICTED_PART, evaluate_predictions, write_report
from mura.evaluation.report_folder import NOT_ASSESSED_FILE, check_report_folder
from mura.evaluation.summary import not_assessed_text
from mura.inference.cache_predictions import predict_cache
from mura.inference.scope import not_assessed_rows

log = logging.getLogger(__name__)

# Columns the predictions gain besides the index's (`predict_cache`, `prepare_predictions`).
PREDICTION_COLUMNS = (
    "fracture_prob",
    "uncalibrated_prob",
    "decision",
    "body_part_pred",
    "body_part_used",
    PREDICTED_PART,
)


def check_by_columns(by: Sequence[str], cache_index: pd.DataFrame, index: pd.DataFrame) -> None:
    """Refuse subgroup columns no table has before any prediction is made (not after minutes of it)."""
    extra = index.columns if "path" in index else []
    available = {*cache_index.columns, *extra, *PREDICTION_COLUMNS} - {"cache_row"}
    unknown = [c for c in by if c not in available]
    if unknown:
        raise MuraError(
            f"by: no column {', '.join(map(repr, unknown))} in the cache's index or the index "
            f"given (available: {', '.join(sorted(available))}); give the index that has it, or drop it"
        )


def stored_thresholds(members: Sequence[Any]) -> dict[str, float]:
    """Operating points every member stores (besides 0.5), averaged over the members."""
    common = set.intersection(*(set(m.decision.thresholds) for m in members)) if members else set()
    return {
        k: float(np.mean([m.decision.thresholds[k] for m in members])) for k in sorted(common - {"default"})
    }


def _thresholds(
    predictor: Any, caches: Sequence[ImageCache], body_part_source: str
) -> tuple[dict[str, float], str]:
    stored = stored_thresholds(predictor.members)
    if stored:
        return stored, f"stored in the checkpoint(s), chosen on {predictor.decision_origin}"
    if not (caches[0].index["split"] == "val").any():
        return {}, "none stored and the cache has no val split: 0.5 only"
    val = predict_cache(predictor, list(caches), "val", body_part_source)
    targets = predictor.members[0].decision.targets
    chosen = operating_points(
        val["label"].to_numpy(),
        val["fracture_prob"].to_numpy(),
        targets.get("sensitivity", 0.9),
        targets.get("specificity", 0.9),
    )
    chosen.pop("default")
    return chosen, f"none stored: chosen now on the val split ({len(val)} images)"


def add_index_columns(predictions: pd.DataFrame, index: pd.DataFrame, by: Sequence[str]) -> pd.DataFrame:
    """Bring the `by` columns the cache lacks over from the index, matched by image path."""
    wanted = [c for c in by if c not in predictions and c in index]
    if not wanted or "path" not in index:
        return predictions
    extra = index.drop_duplicates("path").set_index("path")[wanted]
    return predictions.join(extra, on="path")


def headline_test_metrics(result: dict[str, Any], data: str | Path) -> dict[str, Any]:
    """The headline test figures a model card shows (image and study level, each stored threshold)."""
    summary: dict[str, Any] = {"data": str(data), "n_images": None, "image": {}, "study": {}}
    keys = ("roc_auc", "kappa", "accuracy", "sensitivity", "specificity", "macro_f1")
    for name, metrics in result["image"].items():
        summary["n_images"] = metrics.get("n")
        summary["image"][name] = {"threshold": metrics.get("threshold"), **{k: metrics.get(k) for k in keys}}
    for name, metrics in result["study"].items():
        overall = metrics.get("overall", {})
        summary["study"][name] = {k: overall.get(k) for k in keys}
    return summary


def record_test_metrics(checkpoint: Path, result: dict[str, Any], data: str | Path) -> None:
    """Write the test figures into the checkpoint (atomically) so `mura serve` can show what it scored."""
    update_checkpoint(checkpoint, test_metrics=headline_test_metrics(result, data))
    log.info("recorded the test metrics in %s", checkpoint)


def evaluate_checkpoints(
    checkpoints: Sequence[str | Path],
    cache_dir: str | Path | Sequence[str | Path],
    out_dir: str | Path,
    *,
    index_path: str | Path | None = None,
    split: str = "test",
    body_part_source: str = "given",
    by: Sequence[str] = (),
    n_bootstrap: int = 1000,
    tta: bool = False,
    device: str = "auto",
    seed: int = 0,
    record: bool = False,
) -> dict[str, Path]:
    """Predict `split` of the cache(s) with the checkpoint(s) (an ensemble if several), write the report.

    Several caches: one per input size of the members (all prepared from the same index).
    """
    from mura.inference.predictor import Predictor

    check_report_folder(Path(out_dir))  # before any work: a folder of the user's own files is refused
    if record and (len(checkpoints) != 1 or Path(checkpoints[0]).suffix != ".pt" or split != "test"):
        raise MuraError(
            "record=True writes test figures into one .pt checkpoint: give one, with split='test'"
        )
    dirs = [cache_dir] if isinstance(cache_dir, str | Path) else list(cache_dir)
    caches = [open_cache(d) for d in dirs]
    cache = caches[0]
    splits = sorted(set(cache.index["split"]))
    if split not in splits:
        raise MuraError(f"{dirs[0]}: no images in split {split!r} (the cache has: {', '.join(splits)})")
    index = read_index(index_path) if index_path else cache.index
    check_by_columns(by, cache.index, index)
    predictor = Predictor.from_checkpoints([Path(c) for c in checkpoints], device=device, tta=tta)
    predictions = predict_cache(predictor, caches, split, body_part_source, progress=True)
    rows = cache.index[cache.index["split"] == split]
    predictions, refused, not_assessed = leave_out_of_scope(cache, rows, predictions, f"of split {split!r}")
    if not any(m.has_body_part_head for m in predictor.members):
        predictions["body_part_pred"] = ""  # argmax of an absent head means nothing
    predictions = add_index_columns(predictions, index, by)
    thresholds, threshold_source = _thresholds(predictor, caches, body_part_source)
    calibrations = sorted({m.decision.calibration.method for m in predictor.members})
    meta = {
        "split": split,
        "models": [m.model_name for m in predictor.members],
        "checkpoints": [str(m.source) for m in predictor.members],
        "runtime": predictor.runtime,
        "tta": tta,
        "threshold_source": threshold_source,
        "default_operating_point": predictor.threshold_name,
        "calibration": ", ".join(calibrations),
        "requested_body_part_source": body_part_source,
        "val_metrics": [m.info.get("val_metrics") for m in predictor.members],
        "not_assessed": not_assessed,
    }
    result = evaluate_predictions(
        predictions,
        thresholds,
        body_parts=predictor.body_parts,
        body_part_floor=predictor.body_part_floor or None,  # 0: no member has a floor
        calibration_method=", ".join(calibrations),
        by=by,
        n_bootstrap=n_bootstrap,
        seed=seed,
        meta=meta,
    )
    if cache.boxes:  # the index carries boxes: score the model's map (or say it has none)
        result["localisation"] = predictions_localisation(predictions, cache.boxes, n_bootstrap, seed)
    if record:
        record_test_metrics(Path(checkpoints[0]), result, index_path or dirs[0])
    run_dirs = list(dict.fromkeys(Path(c).resolve().parent for c in checkpoints))
    files = write_report(result, predictions, out_dir, run_dirs=run_dirs, index=index, cache=cache)
    listed = write_not_assessed(out_dir, refused)
    if listed is not None:
        files["not_assessed"] = listed
    return files


def leave_out_of_scope(
    cache: ImageCache, rows: pd.DataFrame, predictions: pd.DataFrame, what: str
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """(the predictions of the rows layer 2 lets through, the refused rows with their reasons, what
    `meta["not_assessed"]` records: {} when every row is in scope). `what` names the rows in the error
    raised when none is left (e.g. "of split 'test'")."""
    refused = not_assessed_rows(cache.images, rows, predictions)
    if not len(refused):
        return predictions, refused, {}
    kept = predictions[~predictions["path"].astype(str).isin(set(refused["path"].astype(str)))]
    if not len(kept):
        raise MuraError(
            f"{cache.directory}: all {len(rows)} images {what} are outside the model's scope "
            f"(first: {refused['path'].iloc[0]}: {refused['reasons'].iloc[0]})"
        )
    kinds = [":".join(str(reasons).split(":", 2)[:2]) for reasons in refused["reasons"]]  # "pixels: a ..."
    counts = {
        "images": len(refused),
        "of": len(rows),
        "by_layer": {str(k): int(n) for k, n in refused["layer"].value_counts().items()},
        "by_reason": {str(k): int(n) for k, n in pd.Series(kinds).value_counts().items()},
        "listed_in": NOT_ASSESSED_FILE,
    }
    log.warning("%s", not_assessed_text(counts))
    return kept, refused, counts


def write_not_assessed(out_dir: str | Path, refused: pd.DataFrame) -> Path | None:
    """List the refused rows beside the report (None when there are none); an earlier report's list
    is removed either way, as it is not this one's."""
    listed = Path(out_dir) / NOT_ASSESSED_FILE
    listed.unlink(missing_ok=True)
    return write_text(listed, refused.to_csv(index=False)) if len(refused) else None

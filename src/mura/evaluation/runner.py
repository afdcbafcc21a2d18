"""Checkpoint(s) + cache -> an evaluation directory: what `mura evaluate` runs, callable from tests.

Thresholds are the ones training chose on validation and stored in the checkpoint(s) (an ensemble uses
their mean, as the Predictor does); when a checkpoint has none they are chosen on the `val` split now.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mura.data.cache import ImageCache, open_cache
from mura.data.index import read_index
from mura.errors import MuraError
from mura.evaluation.report import evaluate_predictions, write_report
from mura.evaluation.thresholds import choose_thresholds

log = logging.getLogger(__name__)


def stored_thresholds(members: Sequence[Any]) -> dict[str, float]:
    """Thresholds every member stores (besides 0.5), averaged over the members."""
    common = set.intersection(*(set(m.threshold) for m in members)) if members else set()
    return {k: float(np.mean([m.threshold[k] for m in members])) for k in sorted(common - {"default"})}


def _target_sensitivity(members: Sequence[Any]) -> float:
    config = members[0].info.get("config", {}) if members else {}
    return float(config.get("train", {}).get("target_sensitivity", 0.9)) if isinstance(config, dict) else 0.9


def _thresholds(predictor: Any, cache: ImageCache, body_part_source: str) -> tuple[dict[str, float], str]:
    stored = stored_thresholds(predictor.members)
    if stored:
        return stored, "stored in the checkpoint(s), chosen on validation during training"
    if not (cache.index["split"] == "val").any():
        return {}, "none stored and the cache has no val split: 0.5 only"
    val = predictor.predict_cache(cache, "val", body_part_source)
    chosen = choose_thresholds(
        val["label"].to_numpy(), val["fracture_prob"].to_numpy(), _target_sensitivity(predictor.members)
    )
    chosen.pop("default")
    return chosen, f"none stored: chosen now on the val split ({len(val)} images)"


def _add_index_columns(predictions: pd.DataFrame, index: pd.DataFrame, by: Sequence[str]) -> pd.DataFrame:
    """Bring `--by` columns the cache lacks over from the index, matched by image path."""
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
    from mura.training.checkpoint import load_checkpoint, save_checkpoint

    payload = load_checkpoint(checkpoint)
    payload["test_metrics"] = headline_test_metrics(result, data)
    save_checkpoint(checkpoint, payload)
    log.info("recorded the test metrics in %s", checkpoint)


def evaluate_checkpoints(
    checkpoints: Sequence[str | Path],
    cache_dir: str | Path,
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
    record: bool = True,
) -> dict[str, Path]:
    """Predict `split` of the cache with the checkpoint(s) (an ensemble if several) and write the report."""
    from mura.inference.predictor import Predictor

    cache = open_cache(cache_dir)
    splits = sorted(set(cache.index["split"]))
    if split not in splits:
        raise MuraError(f"{cache_dir}: no images in split {split!r} (the cache has: {', '.join(splits)})")
    index = read_index(index_path) if index_path else cache.index
    predictor = Predictor.from_checkpoints([Path(c) for c in checkpoints], device=device, tta=tta)
    predictions = predictor.predict_cache(cache, split, body_part_source, progress=True)
    if not any(m.has_body_part_head for m in predictor.members):
        predictions["body_part_pred"] = ""  # argmax of an absent head means nothing
    predictions = _add_index_columns(predictions, index, by)
    thresholds, threshold_source = _thresholds(predictor, cache, body_part_source)
    temperatures = [float(m.temperature) for m in predictor.members]
    meta = {
        "split": split,
        "models": [m.model_name for m in predictor.members],
        "checkpoints": [str(m.source) for m in predictor.members],
        "runtime": predictor.runtime,
        "tta": tta,
        "threshold_source": threshold_source,
        "temperature_source": "checkpoint" if len(temperatures) == 1 else "mean of the members' temperatures",
        "requested_body_part_source": body_part_source,
        "val_metrics": [m.info.get("val_metrics") for m in predictor.members],
    }
    result = evaluate_predictions(
        predictions,
        thresholds,
        temperature=float(np.mean(temperatures)),
        by=by,
        n_bootstrap=n_bootstrap,
        seed=seed,
        meta=meta,
    )
    if record and split == "test" and len(checkpoints) == 1 and Path(checkpoints[0]).suffix == ".pt":
        record_test_metrics(Path(checkpoints[0]), result, index_path or cache_dir)
    run_dirs = list(dict.fromkeys(Path(c).resolve().parent for c in checkpoints))
    return write_report(result, predictions, out_dir, run_dirs=run_dirs, index=index)

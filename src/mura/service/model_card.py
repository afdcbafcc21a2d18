"""`GET /v1/model`: what is being served, read from the checkpoint(s) the predictor was built from.

Anyone holding a token can read it, so it names the model without describing the server: checkpoint
file names and one SHA-256 identify the files; the training index and cache, the cross-validation
folder and any other absolute path in the metadata are left out.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath, PureWindowsPath
from typing import Any

from mura.constants import BODY_PARTS

ABSOLUTE_PATH = re.compile(r"^(/|~|[A-Za-z]:[\\/]|\\\\)")


def _name(path: Any) -> str | None:
    """The last part of a path, whichever system wrote it into the checkpoint."""
    return PureWindowsPath(PurePosixPath(str(path)).name).name if path else None


def without_paths(value: Any) -> Any:
    """`value` with every string that is an absolute path replaced by its file name."""
    if isinstance(value, dict):
        return {key: without_paths(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [without_paths(item) for item in value]
    if isinstance(value, str) and ABSOLUTE_PATH.match(value):
        return _name(value)
    return value


def member_card(member: Any) -> dict[str, Any]:
    """One ensemble member (`mura.inference.members.Member`) as JSON."""
    info = dict(getattr(member, "info", {}) or {})
    config = info.get("config") or {}
    data, train = config.get("data", {}), config.get("train", {})
    provenance = info.get("provenance") or {}
    test_metrics = info.get("test_metrics")
    if isinstance(test_metrics, dict) and "data" in test_metrics:
        test_metrics = {**test_metrics, "data": _name(test_metrics["data"])}
    folds = provenance.get("cross_validation") or {}
    preprocessing = member.preprocessing
    return {
        "checkpoint": _name(member.source),
        "architecture": member.model_name,
        "runtime": member.runtime,
        "has_body_part_head": member.has_body_part_head,
        "preprocessing": preprocessing.to_dict() if hasattr(preprocessing, "to_dict") else str(preprocessing),
        "training_data": {k: data.get(k) for k in ("train_split", "val_split", "max_train_images")}
        if data
        else None,
        "training": {k: train.get(k) for k in ("epochs", "loss", "lr", "batch_size", "monitor")}
        if train
        else None,
        "epochs_trained": info.get("epoch"),
        "decision": member.decision.to_dict(),
        "val_metrics": info.get("val_metrics"),
        "test_metrics": test_metrics,
        "versions": provenance.get("versions"),
        "created": provenance.get("created"),
        "cross_validation": {k: folds.get(k) for k in ("folds", "fold")} if folds else None,
    }


def model_card(predictor: Any) -> dict[str, Any]:
    """The served model: its identity, its members and what they share (threshold, runtime, TTA)."""
    members = [member_card(m) for m in predictor.members]
    architectures = list(dict.fromkeys(m["architecture"] for m in members))
    identity = getattr(predictor, "identity", None)
    return without_paths(
        {
            "architecture": architectures[0] if len(architectures) == 1 else architectures,
            "ensemble_size": len(members),
            "model": identity.model_dump() if identity is not None else None,
            "runtime": predictor.runtime,
            "tta": bool(getattr(predictor, "tta", False)),
            "threshold": float(predictor.threshold),
            "threshold_name": getattr(predictor, "threshold_name", None),
            "body_parts": list(BODY_PARTS),
            "members": members,
        }
    )

"""`GET /v1/model`: what is being served, read from the checkpoint(s) the predictor was built from.

Only file names are reported, never full paths, so the server's directory layout stays private.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mura.constants import BODY_PARTS


def _name(path: Any) -> str | None:
    return Path(str(path)).name if path else None


def member_card(member: Any) -> dict[str, Any]:
    """One ensemble member (`mura.inference.members.Member`) as JSON."""
    info = dict(getattr(member, "info", {}) or {})
    config = info.get("config") or {}
    data, train = config.get("data", {}), config.get("train", {})
    preprocessing = member.preprocessing
    return {
        "checkpoint": _name(member.source),
        "architecture": member.model_name,
        "runtime": member.runtime,
        "has_body_part_head": member.has_body_part_head,
        "preprocessing": preprocessing.to_dict() if hasattr(preprocessing, "to_dict") else str(preprocessing),
        "training_data": {
            "index": _name(data.get("index")),
            "cache": _name(data.get("cache")),
            "train_split": data.get("train_split"),
            "val_split": data.get("val_split"),
            "max_train_images": data.get("max_train_images"),
        }
        if data
        else None,
        "training": {k: train.get(k) for k in ("epochs", "loss", "lr", "batch_size", "monitor")}
        if train
        else None,
        "epochs_trained": info.get("epoch"),
        "decision": member.decision.to_dict(),
        "val_metrics": info.get("val_metrics"),
        "test_metrics": info.get("test_metrics"),
        "versions": info.get("versions"),
    }


def model_card(predictor: Any) -> dict[str, Any]:
    """The served model: its members plus what they share (threshold, runtime, TTA)."""
    members = [member_card(m) for m in predictor.members]
    architectures = list(dict.fromkeys(m["architecture"] for m in members))
    return {
        "architecture": architectures[0] if len(architectures) == 1 else architectures,
        "ensemble_size": len(members),
        "runtime": predictor.runtime,
        "tta": bool(getattr(predictor, "tta", False)),
        "threshold": float(predictor.threshold),
        "threshold_name": getattr(predictor, "threshold_name", None),
        "body_parts": list(BODY_PARTS),
        "members": members,
    }

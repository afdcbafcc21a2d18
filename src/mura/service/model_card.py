"""`GET /v1/model`: what is being served, read from the checkpoint(s) the predictor was built from.

The page shows it one click from every answer, so a reader can weigh a tier: what the model is for
and is not (research software, not a medical device), the labels and body parts it was trained on,
what each tier's operating point was validated at and the held-out test figures `mura evaluate
--record` stored. Anyone holding a token can read it, so it names the model without describing the
server: checkpoint file names and one SHA-256 identify the files; the training index and cache, the
cross-validation folder and any other absolute path in the metadata are left out.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath, PureWindowsPath
from typing import Any

from mura.inference.scope import ModelScope
from mura.tiers import TierScale

ABSOLUTE_PATH = re.compile(r"^(/|~|[A-Za-z]:[\\/]|\\\\)")
NOT_A_MEDICAL_DEVICE = (
    "Research software, not a medical device: not cleared or approved for clinical use. Every film "
    "must be read by a qualified clinician; an answer here is a second look, never a diagnosis."
)
FINDINGS = {
    "fracture": "fractures",
    "abnormality": "abnormalities (MURA's labels: fractures, hardware, degenerative and other disease)",
}


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
        "body_parts_from": provenance.get("scope"),
    }


def intended_use(tiers: TierScale, parts: frozenset[str]) -> str:
    """What the model is for, in the words of its labels and the body parts its training data showed."""
    named = ", ".join(sorted(part.lower() for part in parts))
    return (
        f"A second look for {FINDINGS[tiers.positive_class]} on projection radiographs of: {named}. It "
        "points a clinician to films worth a closer look and never replaces their reading. It was not "
        "validated on other body parts or other kinds of images (CT, MRI, photographs): those it "
        "recognises are answered 'not assessed'."
    )


def tier_validation(tiers: TierScale) -> list[dict[str, Any]]:
    """Each tier with what its operating point was validated at (the lowest tier: the lowest point's
    figures, whose NPV is what "nothing seen" is worth)."""
    rows = [
        {"tier": level.tier, "text": tiers.words(level.tier), **level.figures.model_dump()}
        for level in tiers.levels
    ]
    lowest = min(tiers.levels, key=lambda level: level.figures.threshold)
    rows.append(
        {"tier": "no_fracture_seen", "text": tiers.words("no_fracture_seen"), **lowest.figures.model_dump()}
    )
    return rows


def model_card(predictor: Any) -> dict[str, Any]:
    """The served model: its identity, use, training data and validation, its members and what they
    share (threshold, runtime, TTA)."""
    members = [member_card(m) for m in predictor.members]
    architectures = list(dict.fromkeys(m["architecture"] for m in members))
    identity = getattr(predictor, "identity", None)
    scope = ModelScope.of_members(predictor.members)
    return without_paths(
        {
            "architecture": architectures[0] if len(architectures) == 1 else architectures,
            "ensemble_size": len(members),
            "model": identity.model_dump() if identity is not None else None,
            "runtime": predictor.runtime,
            "tta": bool(getattr(predictor, "tta", False)),
            "threshold": float(predictor.threshold),
            "threshold_name": getattr(predictor, "threshold_name", None),
            "intended_use": intended_use(predictor.tiers, scope.parts),
            "not_a_medical_device": NOT_A_MEDICAL_DEVICE,
            "trained_on": {
                "labels": predictor.tiers.positive_class,
                "body_parts": sorted(scope.parts),
                "body_parts_from": list(
                    dict.fromkeys(m["body_parts_from"] for m in members if m["body_parts_from"])
                ),
            },
            "validation": tier_validation(predictor.tiers),
            # `mura evaluate --record` writes a model's (an ensemble's) test figures into its first file
            "held_out_test": members[0]["test_metrics"] or None,
            "body_parts": list(predictor.body_parts),  # the head's classes: the page's part list
            "members": members,
        }
    )

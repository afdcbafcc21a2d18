"""What a checkpoint says about its model besides the weights: `CheckpointMeta` and its (de)serialisation.

Split from `mura.checkpoint` (the file format: save, load, errors, upgrades) because the metadata is the
part that grows (body parts and their confidence floor, scope, the scope detector, what label 1 means)
while the format stays. `CheckpointMeta.to_dict` is plain Python (weights_only-safe); `from_dict`
validates each field and fills what older files do not say with what they meant.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from mura.config import Config
from mura.config_loading import config_from_dict
from mura.constants import BODY_PARTS, MURA_BODY_PARTS
from mura.decision import Decision
from mura.prediction import POSITIVE_CLASSES, PositiveClass
from mura.preprocessing import Preprocessing
from mura.scope_detector import ScopeDetector

# Index `source` values whose label 1 is a fracture; MURA (and the synthetic stand-in built like it)
# labels abnormality: fractures, hardware, degenerative disease, lesions.
FRACTURE_LABEL_SOURCES = frozenset({"fracatlas", "folders"})


def versions() -> dict[str, str]:
    import timm

    from mura import __version__

    return {"mura": str(__version__), "torch": str(torch.__version__), "timm": str(timm.__version__)}


def positive_class_of(sources: Iterable[str]) -> PositiveClass:
    """What label 1 means for training data from these index `source`s: "fracture" only when every
    source labels fractures; any abnormality-labelled (or unknown) source makes it "abnormality", the
    wider claim that stays true of a fracture."""
    found = set(sources)
    return "fracture" if found and found <= FRACTURE_LABEL_SOURCES else "abnormality"


def plain(value: Any) -> Any:
    """numpy scalars and tuples -> plain Python, recursively (weights_only-safe)."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


@dataclass(frozen=True)
class CheckpointMeta:
    """Everything a consumer of a checkpoint needs besides the weights."""

    config: dict[str, Any]
    preprocessing: Preprocessing
    decision: Decision = field(default_factory=Decision)
    # The body-part head's classes, always a prefix of `mura.constants.BODY_PARTS` (files that do not
    # say: MURA's seven, all there was).
    body_parts: tuple[str, ...] = BODY_PARTS
    # The top body-part probability at which a predicted part is trusted (reported and fed to the
    # fracture head; below it the part is UNKNOWN and the model's unknown-part embedding is fed), fitted
    # on held-out films (`mura.training.part_floor`). None: a model without that embedding (written
    # before it existed), which feeds its argmax however unsure.
    body_part_floor: float | None = None
    # The body parts the training data covered (`mura.training.scope`), what the scope gate lets in.
    # Checkpoints written before it was recorded hold MURA's seven parts, the body-part head's classes.
    scope_parts: tuple[str, ...] = MURA_BODY_PARTS
    # Layer 3 of the scope gate, fitted on the training films' features; None: not gated by features.
    scope_detector: ScopeDetector | None = None
    epoch: int = -1
    positive_class: PositiveClass = "abnormality"  # checkpoints from before it was recorded: the wider claim
    val_metrics: dict[str, Any] = field(default_factory=dict)
    test_metrics: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)  # versions, created, data, run

    @property
    def model_name(self) -> str:
        return str(self.config["model"]["name"])

    def typed_config(self) -> Config:
        return config_from_dict(self.config)

    def to_dict(self) -> dict[str, Any]:
        return plain(
            {
                "config": self.config,
                "preprocessing": self.preprocessing.to_dict(),
                "decision": self.decision.to_dict(),
                "body_parts": list(self.body_parts),
                "body_part_floor": self.body_part_floor,
                "scope_parts": list(self.scope_parts),
                "scope_detector": None if self.scope_detector is None else self.scope_detector.to_dict(),
                "epoch": int(self.epoch),
                "positive_class": self.positive_class,
                "val_metrics": self.val_metrics,
                "test_metrics": self.test_metrics,
                "provenance": self.provenance,
            }
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CheckpointMeta:
        return cls(
            config=dict(data["config"]),
            preprocessing=Preprocessing.from_dict(data["preprocessing"]),
            decision=Decision.from_dict(data["decision"]),
            body_parts=_vocabulary(data.get("body_parts")),
            body_part_floor=_floor(data.get("body_part_floor")),
            scope_parts=tuple(data.get("scope_parts") or MURA_BODY_PARTS),
            scope_detector=_scope_detector(data.get("scope_detector")),
            epoch=int(data.get("epoch", -1)),
            positive_class=_positive_class(data.get("positive_class")),
            val_metrics=dict(data.get("val_metrics") or {}),
            test_metrics=dict(data.get("test_metrics") or {}),
            provenance=dict(data.get("provenance") or {}),
        )

    def replace(self, **changes: Any) -> CheckpointMeta:
        return replace(self, **changes)


def _vocabulary(value: Any) -> tuple[str, ...]:
    parts = tuple(value or MURA_BODY_PARTS)
    if parts != BODY_PARTS[: len(parts)]:
        raise ValueError(f"body_parts {list(parts)} are not a prefix of {list(BODY_PARTS)}")
    return parts


def _floor(value: Any) -> float | None:
    if value is None:
        return None
    if not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"body_part_floor {value!r} is not a probability")
    return float(value)


def _scope_detector(value: Any) -> ScopeDetector | None:
    return None if value is None else ScopeDetector.from_dict(value)


def _positive_class(value: Any) -> PositiveClass:
    if value is None:
        return "abnormality"
    if value not in POSITIVE_CLASSES:
        raise ValueError(f"positive_class {value!r} is not one of {POSITIVE_CLASSES}")
    return value


def new_provenance(**extra: Any) -> dict[str, Any]:
    return {"versions": versions(), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **extra}

"""The one checkpoint contract: what a `.pt` file holds, and how it is saved, loaded and updated.

Training writes checkpoints; evaluation, inference, export and the service only read them. A
checkpoint is a dict that `torch.load(weights_only=True)` opens without running code:

    format_version   2
    model_state      the weights
    meta             CheckpointMeta.to_dict(): config, body parts (+ the head's confidence floor),
                     preprocessing, decision
                     (calibration + operating points + their validation counts), positive class
                     (what label 1 meant), scope parts (what the training data covered), the
                     feature-space scope detector (`mura.scope_detector`, optional), epoch,
                     validation/test metrics, provenance
    training_state   only in last.pt: optimizer, scheduler, RNG, early stopping, history
                     (owned by `mura.training.resume`)

Format 1 files (thresholds and temperature at the top level, raw softmax probabilities) load as
an uncalibrated decision with the same thresholds, so their decisions do not change.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mura.atomic import atomic_path
from mura.config import Config, config_from_dict
from mura.constants import BODY_PARTS, MURA_BODY_PARTS
from mura.decision import Calibration, Decision
from mura.errors import MuraError
from mura.prediction import POSITIVE_CLASSES, PositiveClass
from mura.preprocessing import Preprocessing
from mura.scope_detector import ScopeDetector

FORMAT_VERSION = 2
SAVE_MODEL_FIX = "mura.checkpoint.save_model(path, model, config, preprocessing)"
ZIP_START, ZIP_END = b"PK\x03\x04", b"PK\x05\x06"  # torch.save writes a zip archive
ZIP_END_SEARCH = 65_536 + 22  # the end record sits in the last 64 KiB + its own 22 bytes
_FORMAT1_THRESHOLD_NAMES = {"sensitivity_0.90": "suspicious"}
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


@dataclass
class Checkpoint:
    path: Path
    meta: CheckpointMeta
    model_state: dict[str, torch.Tensor]
    training_state: dict[str, Any] | None = None


def new_provenance(**extra: Any) -> dict[str, Any]:
    return {"versions": versions(), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **extra}


def save_checkpoint(
    path: str | Path,
    model_state: dict[str, torch.Tensor],
    meta: CheckpointMeta,
    training_state: dict[str, Any] | None = None,
) -> Path:
    """Write atomically: a reader (or a kill -9) sees the old file or the new one, never half of one."""
    payload: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "model_state": {k: v.detach().cpu() for k, v in model_state.items()},
        "meta": meta.to_dict(),
    }
    if training_state is not None:
        payload["training_state"] = training_state
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def save_model(
    path: str | Path,
    model: torch.nn.Module,
    cfg: Config,
    preprocessing: Preprocessing,
    decision: Decision | None = None,
    **meta_fields: Any,
) -> Path:
    """A consumer-ready checkpoint for a model trained any way (tests, benchmarks, your own loop); its
    body-part vocabulary and confidence floor are the model's own unless given."""
    heads = getattr(model, "heads", None)
    if heads is not None:
        meta_fields.setdefault("body_parts", BODY_PARTS[: heads.num_body_parts])
        floor = float(heads.body_part_floor) if heads.has_unknown_part else None
        meta_fields.setdefault("body_part_floor", floor)
    meta = CheckpointMeta(
        config=cfg.to_dict(),
        preprocessing=preprocessing,
        decision=decision or Decision(),
        provenance=meta_fields.pop("provenance", new_provenance()),
        **meta_fields,
    )
    return save_checkpoint(path, model.state_dict(), meta)


def _upgrade_format1(raw: dict[str, Any]) -> dict[str, Any]:
    thresholds = {
        _FORMAT1_THRESHOLD_NAMES.get(k, k): float(v) for k, v in (raw.get("threshold") or {}).items()
    }
    return {
        "config": raw["config"],
        "preprocessing": raw["preprocessing"],
        "decision": Decision(
            Calibration(), thresholds or {"default": 0.5}, {}, "format 1 checkpoint"
        ).to_dict(),
        "body_parts": raw.get("body_parts"),
        "epoch": raw.get("epoch", -1),
        "val_metrics": raw.get("val_metrics"),
        "test_metrics": raw.get("test_metrics"),
        "provenance": {"versions": raw.get("versions") or {}},
    }


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Open a checkpoint safely (weights_only=True); a one-line MuraError naming the fix when it is
    missing, truncated, foreign, from a newer mura, or lacks metadata."""
    path = Path(path)
    if not path.is_file():
        raise MuraError(f"{path}: checkpoint not found")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for truncated/corrupt/foreign files
        raise MuraError(_unreadable(path, exc)) from None
    if not isinstance(raw, dict) or "model_state" not in raw:
        raise MuraError(
            f"{path}: not a mura checkpoint (no model_state): a plain state_dict or another tool's file; "
            f"wrap its weights with {SAVE_MODEL_FIX}"
        )
    version = int(raw.get("format_version", 0))
    if version > FORMAT_VERSION:
        writer = _writer(raw.get("meta"))
        raise MuraError(
            f"{path}: checkpoint format {version} is newer than this mura ({_this_mura()} reads format "
            f"{FORMAT_VERSION}; written by {writer}): upgrade mura (pip install -U mura)"
        )
    try:
        meta_dict = raw["meta"] if version >= 2 else _upgrade_format1(raw)
        meta = CheckpointMeta.from_dict(meta_dict)
    except KeyError as exc:
        raise MuraError(
            f"{path}: checkpoint metadata incomplete (no {exc}): not written by mura's save_checkpoint; "
            f"re-export it with {SAVE_MODEL_FIX}"
        ) from None
    except (TypeError, ValueError, MuraError) as exc:
        raise MuraError(
            f"{path}: checkpoint metadata invalid ({exc}): re-export it with {SAVE_MODEL_FIX}"
        ) from None
    return Checkpoint(path, meta, raw["model_state"], raw.get("training_state"))


def _this_mura() -> str:
    from mura import __version__

    return f"mura {__version__}"


def _writer(meta: Any) -> str:
    """Who wrote a checkpoint, from its provenance: `mura 0.2.0`, or `an unknown version`."""
    provenance = meta.get("provenance") if isinstance(meta, dict) else None
    found = (provenance or {}).get("versions", {}).get("mura") if isinstance(provenance, dict) else None
    return f"mura {found}" if found else "an unknown mura version"


def _unreadable(path: Path, exc: Exception) -> str:
    """Why torch could not open `path`, with the fix: a truncated copy (a zip without its end record) is
    told apart from a file that is not a PyTorch checkpoint at all."""
    reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
    with open(path, "rb") as handle:
        head = handle.read(4)
        handle.seek(max(0, path.stat().st_size - ZIP_END_SEARCH))
        tail = handle.read()
    if head == ZIP_START and ZIP_END not in tail:
        return (
            f"{path}: truncated checkpoint ({path.stat().st_size} bytes, the end of the file is missing; "
            f"{reason}): copy it again and compare its SHA-256 (sha256sum) with the original's"
        )
    return (
        f"{path}: not a readable mura checkpoint ({reason}): a damaged copy or not a PyTorch file; copy it "
        f"again, or re-export the model with {SAVE_MODEL_FIX}"
    )


def build_model(cfg: Config, load_pretrained: bool = True) -> torch.nn.Module:
    """The model a config describes; `load_pretrained=False` reads no weights (a checkpoint has them)."""
    from mura.models.registry import model_from_config

    return model_from_config(cfg.model, load_pretrained=load_pretrained)


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, Checkpoint]:
    """Rebuild the model from the stored config (no hub download), load its weights, eval mode."""
    checkpoint = load_checkpoint(path)
    try:
        cfg = checkpoint.meta.typed_config()
    except MuraError as exc:
        raise MuraError(
            f"{path}: {exc}: written by {_writer(checkpoint.meta.to_dict())} with settings "
            f"{_this_mura()} does not know; upgrade mura (pip install -U mura), or load it with the "
            "version that wrote it"
        ) from None
    from mura.models.registry import model_from_config

    floor = checkpoint.meta.body_part_floor
    model = model_from_config(
        cfg.model,
        load_pretrained=False,
        num_body_parts=len(checkpoint.meta.body_parts),
        unknown_part=floor is not None,
    )
    try:
        model.load_state_dict(checkpoint.model_state)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise MuraError(f"{path}: weights do not fit model {cfg.model.name!r} ({first[:200]})") from None
    if floor is not None:
        model.heads.set_body_part_floor(floor)
    return model.to(device).eval(), checkpoint


def update_checkpoint(path: str | Path, out: str | Path | None = None, **changes: Any) -> Path:
    """Write a copy of a checkpoint (or replace it, atomically, when `out` is None) with new metadata."""
    checkpoint = load_checkpoint(path)
    meta = checkpoint.meta.replace(**changes)
    return save_checkpoint(out or path, checkpoint.model_state, meta, checkpoint.training_state)


def file_sha256(path: str | Path) -> str:
    """Content hash of a checkpoint (or any file): names the exact model in reports and DICOM results."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()

"""The one checkpoint contract: what a `.pt` file holds, and how it is saved, loaded and updated.

Training writes checkpoints; evaluation, inference, export and the service only read them. A
checkpoint is a dict that `torch.load(weights_only=True)` opens without running code:

    format_version   2
    model_state      the weights
    meta             CheckpointMeta.to_dict() (`mura.checkpoint_meta`): config, body parts (+ the
                     head's confidence floor), preprocessing, decision
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mura.atomic import atomic_path
from mura.checkpoint_meta import CheckpointMeta, new_provenance
from mura.config import Config
from mura.constants import BODY_PARTS
from mura.decision import Calibration, Decision
from mura.errors import MuraError
from mura.preprocessing import Preprocessing

FORMAT_VERSION = 2
SAVE_MODEL_FIX = "mura.checkpoint.save_model(path, model, config, preprocessing)"
ZIP_START, ZIP_END = b"PK\x03\x04", b"PK\x05\x06"  # torch.save writes a zip archive
ZIP_END_SEARCH = 65_536 + 22  # the end record sits in the last 64 KiB + its own 22 bytes
_FORMAT1_THRESHOLD_NAMES = {"sensitivity_0.90": "suspicious"}


@dataclass
class Checkpoint:
    path: Path
    meta: CheckpointMeta
    model_state: dict[str, torch.Tensor]
    training_state: dict[str, Any] | None = None


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

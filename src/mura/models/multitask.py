"""`MultiTaskModel`: a backbone (image -> unpooled maps -> pooled vector) followed by the two task heads.

Everything downstream (training, feature cache, predictor, Grad-CAM, ONNX export) relies only on
this interface:

- `forward(image[B,1,H,W], body_part[B] long, *, return_features=False) -> ModelOutput`
  (`mura.outputs`): `fracture_logits[B,2]`, `body_part_logits[B,7]`, and `features[B, feature_dim]`
  (the pooled vector) only when `return_features=True`, and `fracture_map[B, 1, h, w]` (logits,
  `mura.models.fracture_map`) when the model has a map head. Readers use the field names, never positions.
- the split timm uses: `forward_features(image)` -> the backbone's UNPOOLED output (maps [B, C, h, w]
  for CNNs, tokens [B, N, C] for ViT-like backbones); `pool(unpooled) -> [B, feature_dim]`;
  `forward_head(features, body_part, *, return_features=False) -> ModelOutput` takes either, pooling
  unpooled input first. A frozen-backbone feature cache stores `pool(forward_features(x))` and trains
  the heads through `forward_head` on those vectors; pooled vectors carry no map, so on them
  `fracture_map` is None (a map head trains only from images);
- `cam_layer`: the module Grad-CAM hooks (`cam_reshape` turns token outputs into maps for ViTs);
- `default_preprocessing`: `{"mean", "std"}` for single-channel pixels scaled to [0, 1];
- `backbone_is_frozen`, `has_body_part_head`, `feature_dim`, `name`.

The backbone is any module with timm's `forward_features(image)` and `forward_head(x, pre_logits=True)`
(timm models built with `num_classes=0`, and `CustomCNNBackbone`): its pooling, head norm and head
convolution stay its own, so checkpoints keep their keys and numbers.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from mura.models.fracture_map import FractureMapHead
from mura.models.freeze import apply_freeze, freeze_batchnorm
from mura.models.heads import MultiTaskHeads
from mura.outputs import ModelOutput


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
        map_head: FractureMapHead | None = None,
    ) -> None:
        super().__init__()
        self.name = name
        self.backbone = backbone
        self.heads = heads
        self.feature_dim = heads.feature_dim
        self.default_preprocessing = dict(default_preprocessing)
        self.freeze_policy = freeze
        self.cam_reshape = cam_reshape
        self.map_head = map_head
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

    @property
    def has_map_head(self) -> bool:
        return self.map_head is not None

    def train(self, mode: bool = True) -> MultiTaskModel:
        """Like nn.Module.train, but frozen BatchNorm layers stay in eval mode (fixed statistics)."""
        super().train(mode)
        if mode:
            freeze_batchnorm(self.backbone)
        return self

    def forward_features(self, image: torch.Tensor) -> torch.Tensor:
        """The backbone's unpooled output: maps [B, C, h, w] (CNNs) or tokens [B, N, C] (ViTs)."""
        return self.backbone.forward_features(image)

    def pool(self, unpooled: torch.Tensor) -> torch.Tensor:
        """Unpooled output -> the [B, feature_dim] vector the heads read, by the backbone's own pooling."""
        return self.backbone.forward_head(unpooled, pre_logits=True)

    def forward_head(
        self,
        features: torch.Tensor,
        body_part: torch.Tensor,
        *,
        return_features: bool = False,
        fine: torch.Tensor | None = None,
    ) -> ModelOutput:
        """Both heads on pooled [B, feature_dim] features, or on unpooled output (pooled here first; the
        map head, if any, reads it too, and `fine`, the stride-16 stage's maps, when it was built to)."""
        pooled = features if features.ndim == 2 else self.pool(features)
        output = self.heads(pooled, body_part)
        if self.map_head is not None and features.ndim != 2:
            maps = features if self.cam_reshape is None else self.cam_reshape(features)
            fracture_map = self.map_head(maps, fine)
            output = output._replace(
                fracture_logits=self.map_head.with_evidence(output.fracture_logits, fracture_map),
                fracture_map=fracture_map,
            )
        return output._replace(features=pooled) if return_features else output

    def forward(
        self, image: torch.Tensor, body_part: torch.Tensor, *, return_features: bool = False
    ) -> ModelOutput:
        fine_index = None if self.map_head is None else self.map_head.fine_index
        if fine_index is None:
            return self.forward_head(self.forward_features(image), body_part, return_features=return_features)
        # One pass through the backbone for both stages; its final output is `forward_features`' own.
        final, (fine,) = self.backbone.forward_intermediates(image, indices=[fine_index])
        return self.forward_head(final, body_part, return_features=return_features, fine=fine)

    def extra_repr(self) -> str:
        return (
            f"name={self.name!r}, freeze={self.freeze_policy!r}, feature_dim={self.feature_dim}, "
            f"map_head={self.has_map_head}"
        )

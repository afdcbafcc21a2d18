"""The spec's baseline (section 3.2): three conv blocks, flatten, body-part embedding, two FC layers.

Choices the spec leaves open, made here:
- blocks: Conv2d 3x3 (padding 1) -> BatchNorm -> ReLU -> MaxPool 2x2 with 32, 64, 128 channels. The
  spec names no normalisation; without it the fracture head died on every data set we tried (all 128
  hidden units output 0 after the first Adam steps on 8,192 non-negative flattened inputs, so AUC
  stayed at 0.5 on synthetic MURA and FracAtlas); BatchNorm in the blocks and the head fixes that;
- the final maps are flattened (the spec's form), so the first FC layer's width follows the input
  size: 128 x (size/8)^2, i.e. 100,352 at 224 px. The model is built for one input size (`img_size`)
  and only accepts that size;
- fracture head: Linear(flat + 32 -> 128) -> BatchNorm -> ReLU -> Dropout -> Linear(128 -> 2) ("two
  fully connected layers with dropout ... before the final binary output");
- added (not in the spec, so the model runs where the body part is unknown): a small body-part head
  on the channel-averaged final maps, 128 -> 64 -> 7. `body_part_head=False` removes it and gives the
  spec's exact single-output form (see `MultiTaskHeads`).
Grad-CAM hooks the third conv block (`size/8` maps).
"""

from __future__ import annotations

import torch
from torch import nn

from mura.constants import NUM_BODY_PARTS
from mura.errors import MuraError
from mura.models.heads import MultiTaskHeads, mlp

CHANNELS = (32, 64, 128)


class CustomCNNBackbone(nn.Module):
    """Three conv blocks: image [B,1,S,S] -> maps [B, 128, S/8, S/8] -> flattened [B, 128*(S/8)^2].

    Same split as a timm backbone (`forward_features` unpooled, `forward_head(pre_logits=True)` to the
    vector the heads read), so `MultiTaskModel` treats both alike; here the "pooling" is the spec's flatten.
    """

    def __init__(self, img_size: int = 224) -> None:
        super().__init__()
        side = img_size // 2 // 2 // 2
        if side < 1:
            raise MuraError(f"custom_cnn: input size {img_size} is too small (needs at least 8 px)")
        blocks = []
        width = 1
        for channels in CHANNELS:
            blocks.append(
                nn.Sequential(
                    nn.Conv2d(width, channels, 3, padding=1, bias=False),
                    nn.BatchNorm2d(channels),
                    nn.ReLU(inplace=True),
                    nn.MaxPool2d(2),
                )
            )
            width = channels
        self.blocks = nn.Sequential(*blocks)
        self.img_size = img_size
        self.map_side = side
        self.num_features = CHANNELS[-1] * side * side
        self.map_channels = CHANNELS[-1]  # channels of `forward_features`' maps (num_features is flattened)

    def group_matcher(self, coarse: bool = False) -> dict[str, str]:
        """timm-style stage description, so the generic freeze policies apply unchanged."""
        return {"blocks": r"^blocks\.(\d+)"}

    def forward_features(self, image: torch.Tensor) -> torch.Tensor:
        """The third block's maps [B, 128, S/8, S/8]."""
        if tuple(image.shape[-2:]) != (self.img_size, self.img_size):
            raise MuraError(
                f"custom_cnn was built for {self.img_size}x{self.img_size} input (it flattens its maps), "
                f"got {image.shape[-2]}x{image.shape[-1]}"
            )
        return self.blocks(image)

    def forward_head(self, maps: torch.Tensor, pre_logits: bool = True) -> torch.Tensor:
        """Maps -> the flattened feature vector (there is no classifier: `pre_logits` is timm's signature)."""
        return maps.flatten(1)


class PooledBodyPartHead(nn.Module):
    """Body-part logits from the flattened maps, averaged per channel first (keeps this head small)."""

    def __init__(self, channels: int, *, dropout: float, num_body_parts: int) -> None:
        super().__init__()
        self.channels = channels
        self.mlp = mlp(channels, (64,), num_body_parts, dropout=dropout, batch_norm=False)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        pooled = features.view(features.shape[0], self.channels, -1).mean(dim=2)
        return self.mlp(pooled)


def build_custom_cnn_parts(
    *,
    img_size: int,
    embed_dim: int,
    dropout: float,
    body_part_head: bool,
    num_body_parts: int = NUM_BODY_PARTS,
) -> tuple[CustomCNNBackbone, MultiTaskHeads]:
    backbone = CustomCNNBackbone(img_size)
    fracture = mlp(backbone.num_features + embed_dim, (128,), 2, dropout=dropout, batch_norm=True)
    body = (
        PooledBodyPartHead(CHANNELS[-1], dropout=dropout, num_body_parts=num_body_parts)
        if body_part_head
        else None
    )
    heads = MultiTaskHeads(
        backbone.num_features, fracture, body, embed_dim=embed_dim, num_body_parts=num_body_parts
    )
    return backbone, heads

"""The dense fracture-map head: where on the film the model sees a fracture, from the same forward pass.

Contract (`ModelOutput.fracture_map`): LOGITS [B, 1, h, w] over the model's square input; sigmoid gives
per-cell fracture evidence in [0, 1]; cell (i, j) covers input rows [i*s, (i+1)*s) and columns
[j*s, (j+1)*s) with s = input_size / h.

The head reads the backbone's unpooled maps (stride 32 for timm CNNs, 8 for custom_cnn): a 1x1 conv
to a small hidden width, then a 3x3 conv (context from the neighbouring cells) to `subcells`^2
channels, rearranged by a pixel shuffle so each backbone cell predicts a `subcells` x `subcells` block
of the map. Stride 32 is coarse for small fractures (4x4 cells at 128 px); the sub-cells give a finer
map without a second feature path (an earlier stage's maps would not survive `forward_head` on
`forward_features`' output, which the Grad-CAM and export paths rely on).

`fine_channels` (> 0, `model.map_stride: 16`) adds a second input: the maps of an earlier backbone stage
at stride 16 (Lite2's `blocks.4`), 1x1-reduced and added to the last maps' reduction brought up to
their grid, so the map's cells carry stride-16 information rather than sub-cells of stride-32 cells
(FracAtlas's boxes have a median side of half a stride-32 cell at 256 px). `MultiTaskModel.forward`
reads both stages from one pass through the backbone (timm's `forward_intermediates`).

`to_logit=True` lets the image decision use the map: a learned weight (0 at the start, so training
begins as without it) times the map's log-sum-exp pool is added to the fracture logit. Every step is
a fixed graph of convolutions and reductions: no data-dependent branch, so it exports to ONNX.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from mura.errors import MuraError

# Initial map bias: sigmoid(-3) ~ 0.05, most cells of most films hold no fracture (RetinaNet's prior).
PRIOR_LOGIT = -3.0
HIDDEN = 64


def fine_stage(backbone: nn.Module, name: str, stride: int) -> tuple[int, int]:
    """(feature_info index, channels) of the backbone stage at `stride`, for a map head that reads it."""
    info = getattr(backbone, "feature_info", None)
    stages = [] if info is None else list(info)
    found = [i for i, stage in enumerate(stages) if stage["reduction"] == stride]
    if not found or not hasattr(backbone, "forward_intermediates"):
        strides = sorted({int(stage["reduction"]) for stage in stages}) or [32]
        raise MuraError(
            f"{name}: map_stride={stride} needs a timm backbone with a stage at that stride "
            f"(this one has {strides}); use map_stride=32"
        )
    return found[-1], int(stages[found[-1]]["num_chs"])


def lse_pool(fracture_map: torch.Tensor) -> torch.Tensor:
    """[B, 1, h, w] logits -> [B]: log-mean-exp over cells, a smooth maximum (the film's strongest
    evidence, with some say for its extent) that keeps a gradient on every cell."""
    cells = fracture_map.flatten(1).float()
    return torch.logsumexp(cells, dim=1) - math.log(cells.shape[1])


class FractureMapHead(nn.Module):
    """Unpooled maps [B, C, h, w] -> fracture-map logits [B, 1, h * subcells, w * subcells]."""

    def __init__(
        self,
        channels: int,
        *,
        subcells: int = 1,
        to_logit: bool = False,
        fine_channels: int = 0,
        fine_index: int | None = None,
    ) -> None:
        super().__init__()
        self.subcells = subcells
        self.to_logit = to_logit
        self.fine_index = fine_index  # the backbone's feature_info index of the fine stage, if any
        self.reduce = nn.Sequential(
            nn.Conv2d(channels, HIDDEN, 1, bias=False), nn.BatchNorm2d(HIDDEN), nn.ReLU(inplace=True)
        )
        self.fine = (
            nn.Sequential(
                nn.Conv2d(fine_channels, HIDDEN, 1, bias=False), nn.BatchNorm2d(HIDDEN), nn.ReLU(inplace=True)
            )
            if fine_channels
            else None
        )
        self.predict = nn.Conv2d(HIDDEN, subcells * subcells, 3, padding=1)
        nn.init.constant_(self.predict.bias, PRIOR_LOGIT)
        self.shuffle = nn.PixelShuffle(subcells)
        self.evidence_weight = nn.Parameter(torch.zeros(())) if to_logit else None

    def forward(self, maps: torch.Tensor, fine: torch.Tensor | None = None) -> torch.Tensor:
        hidden = self.reduce(maps)
        if self.fine is not None:
            if fine is None:
                raise ValueError("this map reads a stride-16 stage too: call the model, not forward_head")
            hidden = nn.functional.interpolate(hidden, size=fine.shape[-2:], mode="nearest") + self.fine(fine)
        return self.shuffle(self.predict(hidden))

    def with_evidence(self, fracture_logits: torch.Tensor, fracture_map: torch.Tensor) -> torch.Tensor:
        """The [B, 2] fracture logits, with the map's pooled evidence added to the fracture class when
        `to_logit` (unchanged otherwise)."""
        if self.evidence_weight is None:
            return fracture_logits
        evidence = (self.evidence_weight * lse_pool(fracture_map)).to(fracture_logits.dtype)
        return fracture_logits + torch.stack([torch.zeros_like(evidence), evidence], dim=1)

    def extra_repr(self) -> str:
        return f"subcells={self.subcells}, to_logit={self.to_logit}, fine_index={self.fine_index}"

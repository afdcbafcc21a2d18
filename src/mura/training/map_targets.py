"""Fracture-map targets: a batch's boxes rasterised in input pixels, later moved by the augmentation.

A film's boxes (the cache's, in its input pixels: `CachedImageDataset.boxes_for`) become a binary mask
[1, S, S] at full input resolution, so the same flip/rotation/crop as the pixels can move it
(`mura.data.transforms.augment_with_masks`); the loss then reduces it to the map's grid (`cell_targets`),
whatever the model's stride. Whether a film has boxes at all is kept beside the mask: an abnormal film
without boxes is not a film whose every cell is normal.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

# A cell counts as covered by a box once a moved mask pixel inside it is at least half covered.
COVERED = 0.5


class MapTarget(NamedTuple):
    """Box masks of one batch, in the (augmented) input frame."""

    mask: torch.Tensor  # float [B, 1, S, S]: 1 inside a box
    boxed: torch.Tensor  # bool [B]: the film has at least one box


def rasterise_boxes(boxes: list[np.ndarray], size: int) -> MapTarget:
    """Per film, boxes [K, 4] (x0, y0, x1, y1 in input pixels, K may be 0) -> masks [B, 1, size, size]:
    every pixel a box overlaps is 1."""
    mask = torch.zeros(len(boxes), 1, size, size)
    for film, film_boxes in enumerate(boxes):
        for x0, y0, x1, y1 in np.asarray(film_boxes, dtype=float).reshape(-1, 4):
            left, top = max(int(math.floor(x0)), 0), max(int(math.floor(y0)), 0)
            right, bottom = min(int(math.ceil(x1)), size), min(int(math.ceil(y1)), size)
            mask[film, 0, top:bottom, left:right] = 1.0
    boxed = torch.tensor([len(np.asarray(b).reshape(-1, 4)) > 0 for b in boxes], dtype=torch.bool)
    return MapTarget(mask, boxed)


def cell_targets(mask: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Input-resolution masks [B, 1, S, S] -> cell targets [B, 1, h, w]: 1 where the cell overlaps a box."""
    return (F.adaptive_max_pool2d(mask.float(), grid) >= COVERED).float()

"""Batch augmentation of cached pixels (training only; the preprocessing itself is `mura.preprocessing`).

Workers only read uint8 pixels from the memory-mapped cache; everything else happens here on whole
batches (one `affine_grid` + `grid_sample` call for a batch of 32 instead of 32 PIL rotations), so
augmentation costs a few milliseconds per batch and never makes the model wait for data. All random
numbers come from a caller-owned `torch.Generator`, so a seed gives the same views on every run and
a resumed run can continue the exact stream.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

AUGMENT_MODES = ("none", "flip_rotate", "strong", "crop")


def _uniform(n: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=generator) * (high - low) + low


def random_affine_params(
    n: int, mode: str, degrees: float, generator: torch.Generator
) -> dict[str, torch.Tensor]:
    """Per-image random parameters, drawn on the CPU generator in a fixed order (determinism)."""
    flip = torch.rand(n, generator=generator) < 0.5
    angle = _uniform(n, -degrees, degrees, generator)
    params = {"flip": flip, "angle": angle}
    if mode in ("strong", "crop"):
        params.update(
            scale=_uniform(n, 0.9, 1.1, generator),
            translate=_uniform(2 * n, -0.06, 0.06, generator).view(n, 2),
            contrast=_uniform(n, 0.8, 1.2, generator),
            brightness=_uniform(n, -0.08, 0.08, generator),
            gamma=torch.exp(_uniform(n, math.log(0.8), math.log(1.25), generator)),
        )
    if mode == "crop":
        # Random resized crop (torchvision's RandomResizedCrop, area 0.6-1, aspect 3/4-4/3) as a zoom:
        # the crop's half-extents in normalised units, and its centre anywhere that keeps it inside.
        area = _uniform(n, 0.6, 1.0, generator)
        aspect = torch.exp(_uniform(n, math.log(3 / 4), math.log(4 / 3), generator))
        extent = torch.stack([(area * aspect).sqrt(), (area / aspect).sqrt()], dim=1).clamp(max=1.0)
        params["scale"] = torch.ones(n)
        params["crop"] = extent
        params["translate"] = (torch.rand(n, 2, generator=generator) * 2 - 1) * (1 - extent)
    return params


def _theta(params: dict[str, torch.Tensor]) -> torch.Tensor:
    """Sampling matrices [B, 2, 3] mapping output to input coordinates (normalised to [-1, 1])."""
    radians = params["angle"] * (math.pi / 180.0)
    cos, sin = torch.cos(radians), torch.sin(radians)
    scale = params.get("scale", torch.ones_like(cos))
    flip = torch.where(params["flip"], -1.0, 1.0)
    theta = torch.zeros(len(cos), 2, 3)
    theta[:, 0, 0] = cos / scale * flip
    theta[:, 0, 1] = -sin / scale
    theta[:, 1, 0] = sin / scale * flip
    theta[:, 1, 1] = cos / scale
    if "crop" in params:
        theta[:, 0, :2] *= params["crop"][:, :1]
        theta[:, 1, :2] *= params["crop"][:, 1:]
    if "translate" in params:
        theta[:, :, 2] = params["translate"]
    return theta


def augment_batch(unit: torch.Tensor, mode: str, degrees: float, generator: torch.Generator) -> torch.Tensor:
    """Random flip + rotation of [B,1,H,W]; `strong` adds scale/shift + contrast/brightness/gamma, `crop`
    replaces strong's scale/shift by a random resized crop (area 0.6-1 of the image, aspect 3/4-4/3).

    Input and output are pixels in [0, 1]; corners uncovered by rotation are black, like the
    background of a radiograph. The tensor may live on any device; parameters come from `generator`.
    """
    return augment_with_masks(unit, None, mode, degrees, generator)[0]


def augment_with_masks(
    unit: torch.Tensor,
    masks: torch.Tensor | None,
    mode: str,
    degrees: float,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """`augment_batch`, moving `masks` [B, 1, H, W] (e.g. rasterised fracture boxes) with the pixels: the
    same flip, rotation, scale/shift or crop, none of the photometric changes. The random numbers drawn
    are the same with or without masks, so a seed gives the same views either way."""
    if mode not in AUGMENT_MODES:
        raise ValueError(f"unknown augmentation {mode!r} (choose from {', '.join(AUGMENT_MODES)})")
    if mode == "none" or unit.shape[0] == 0:
        return unit, masks
    params = random_affine_params(unit.shape[0], mode, degrees, generator)
    theta = _theta(params).to(device=unit.device, dtype=unit.dtype)
    grid = F.affine_grid(theta, list(unit.shape), align_corners=False)
    out = F.grid_sample(unit, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if masks is not None:
        masks = F.grid_sample(
            masks.to(unit.dtype), grid, mode="bilinear", padding_mode="zeros", align_corners=False
        )
    if mode in ("strong", "crop"):
        shape = (-1, 1, 1, 1)
        contrast = params["contrast"].to(unit.device, unit.dtype).view(shape)
        brightness = params["brightness"].to(unit.device, unit.dtype).view(shape)
        gamma = params["gamma"].to(unit.device, unit.dtype).view(shape)
        mean = out.mean(dim=(1, 2, 3), keepdim=True)
        out = ((out - mean) * contrast + mean + brightness).clamp_(0.0, 1.0)
        out = out.clamp_min(1e-6).pow(gamma)
    return out, masks

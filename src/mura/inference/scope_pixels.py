"""Layer 2 of the scope gate: do the decoded pixels look like a radiograph at all?

Three measurements, each on a box-averaged sample of at most SAMPLE_SIDE px a side (the cost is the
same for a 300 px JPEG and a 3,000 px DICOM: about a millisecond), with thresholds set far from
every real film (docs/benchmarks/scope.md; measured on all 2,826 FracAtlas films and the synthetic
MURA set, and on blanks, noise and photographs):

- **colour**: the share of a colour source's pixels whose chroma departs from its tint
  (`mura.data.images.colour_fraction`): 0.000 on every FracAtlas film (RGB-encoded grey), 0.56 on
  matplotlib's photograph of Grace Hopper. Refused above MAX_COLOUR_FRACTION.
- **near-uniform**: the grey levels spanned by the middle 98% of the pixels (1st to 99th percentile):
  at least 70 on FracAtlas, 0 on a blank image, 6 on a black image with faint noise. Refused below
  MIN_SPREAD.
- **noise-like**: the correlation of each pixel with its right and lower neighbours: at least 0.80 on
  FracAtlas (0.86 on synthetic films at 32 px), about 0.00 on uniform, Gaussian or salt-and-pepper
  noise, JPEG-compressed or not. Refused below MIN_NEIGHBOUR_CORRELATION.

Smooth noise (blurred blobs) and grey photographs pass these; telling those from a radiograph is the
feature-space layer's work.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

SAMPLE_SIDE = 256
MAX_COLOUR_FRACTION = 0.05
MIN_SPREAD = 24.0
MIN_NEIGHBOUR_CORRELATION = 0.5


@dataclass(frozen=True)
class PixelStatistics:
    spread: float  # grey levels between the 1st and 99th percentile
    neighbour_correlation: float  # mean lag-1 correlation, horizontal and vertical (1.0 when flat)


def _sample(pixels: np.ndarray) -> np.ndarray:
    """The image box-averaged by a whole factor to at most SAMPLE_SIDE a side (never enlarged), uint8."""
    factor = -(-max(pixels.shape) // SAMPLE_SIDE)
    image = Image.fromarray(np.ascontiguousarray(pixels))
    return np.asarray(image.reduce(factor) if factor > 1 else image, dtype=np.uint8)


def _spread(sample: np.ndarray) -> float:
    """Grey levels from the 1st to the 99th percentile, read off the histogram (no sort)."""
    cumulative = np.bincount(sample.ravel(), minlength=256).cumsum()
    low, high = np.searchsorted(cumulative, [0.01 * cumulative[-1], 0.99 * cumulative[-1]])
    return float(high - low)


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    scale = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum()) / scale if scale > 0 else 1.0


def pixel_statistics(pixels: np.ndarray) -> PixelStatistics:
    """Spread and neighbour correlation of a uint8 [H, W] image."""
    sample = _sample(pixels)
    grey = sample.astype(np.float32)
    horizontal = _correlation(grey[:, :-1], grey[:, 1:])
    vertical = _correlation(grey[:-1], grey[1:])
    return PixelStatistics(_spread(sample), (horizontal + vertical) / 2)


def pixel_reasons(pixels: np.ndarray, colour_fraction: float = 0.0) -> list[str]:
    """Why these pixels are no radiograph (colour photograph, near-uniform, noise-like); [] if plausible."""
    reasons = []
    if colour_fraction > MAX_COLOUR_FRACTION:
        reasons.append(
            f"a colour picture: {colour_fraction:.0%} of its pixels are coloured (a radiograph is grey; "
            f"at most {MAX_COLOUR_FRACTION:.0%} allowed)"
        )
    stats = pixel_statistics(pixels)
    if stats.spread < MIN_SPREAD:
        reasons.append(
            f"a near-uniform image: 98% of its pixels lie within {stats.spread:.0f} grey levels "
            f"(a radiograph spans at least {MIN_SPREAD:.0f})"
        )
    elif stats.neighbour_correlation < MIN_NEIGHBOUR_CORRELATION:
        reasons.append(
            f"a noise-like image: neighbouring pixels correlate at {stats.neighbour_correlation:.2f} "
            f"(a radiograph's: above {MIN_NEIGHBOUR_CORRELATION})"
        )
    return reasons

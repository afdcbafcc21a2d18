"""Stored DICOM values -> the 8-bit grey a viewer shows (DICOM PS3.3 C.11), one block of rows at a time.

Stored values -> modality LUT (rescale slope/intercept) -> VOI LUT or window centre/width -> MONOCHROME1
inverted so bone is always bright; without a VOI the values present are stretched to 0..255. Colour
(RGB, YBR decoded to RGB, palette) becomes luminance scaled by its bit depth.

Every step is element-wise once the range ends are known, so the image is converted in blocks of
BLOCK_PIXELS: a 100 Mpx frame costs its stored array plus the 8-bit result, not five float64 copies
(800 MB each) of the whole image.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from pydicom.dataset import Dataset
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut

BLOCK_PIXELS = 1 << 20  # about 8 MB per float64 temporary


def _row_blocks(height: int, width: int) -> Iterator[slice]:
    step = max(1, BLOCK_PIXELS // max(1, width))
    return (slice(start, start + step) for start in range(0, height, step))


def _voi_range(ds: Dataset) -> tuple[float, float] | None:
    """The output of the VOI LUT or window at its two ends; None when the file has no usable VOI.

    The output range of pydicom's VOI depends on bit depth, rescale and LUT descriptor; instead of
    re-deriving it, two sentinel inputs far below and above the window go through the same transform and
    their outputs are the range ends (this also keeps inverted LUTs and negative slopes the right way up).
    """
    if ds.get("VOILUTSequence"):
        descriptor = ds.VOILUTSequence[0].LUTDescriptor
        first, entries = int(descriptor[1]), int(descriptor[0]) or 2**16
        sentinels = np.array([first - 1, first + entries], dtype=np.int64)
    elif "WindowCenter" in ds and "WindowWidth" in ds:
        center = float(ds.WindowCenter[0] if ds["WindowCenter"].VM > 1 else ds.WindowCenter)
        width = float(ds.WindowWidth[0] if ds["WindowWidth"].VM > 1 else ds.WindowWidth)
        if width < 1:
            return None
        sentinels = np.array([center - 10 * width - 1, center + 10 * width + 1], dtype=np.float64)
    else:
        return None
    low, high = apply_voi_lut(sentinels, ds, prefer_lut=True).astype(np.float64)
    return None if high == low else (float(low), float(high))


def _voi_to_unit(values: np.ndarray, ds: Dataset, low: float, high: float) -> np.ndarray:
    values = np.rint(values).astype(np.int64) if ds.get("VOILUTSequence") else values.astype(np.float64)
    out = apply_voi_lut(values, ds, prefer_lut=True).astype(np.float64)
    return np.clip((out - low) / (high - low), 0.0, 1.0)


def _modality_range(ds: Dataset, stored: np.ndarray) -> tuple[float, float]:
    """The lowest and highest modality value present (what a file without VOI is stretched over)."""
    low, high = np.inf, -np.inf
    for rows in _row_blocks(*stored.shape[:2]):
        values = apply_modality_lut(stored[rows], ds)
        low, high = min(low, float(values.min())), max(high, float(values.max()))
    return low, high


def _colour_to_unit(block: np.ndarray, ds: Dataset, photometric: str) -> np.ndarray:
    if photometric == "PALETTE COLOR":
        block = apply_color_lut(block, ds)
    grey = block[..., 0] * 0.299 + block[..., 1] * 0.587 + block[..., 2] * 0.114
    depth = 16 if photometric == "PALETTE COLOR" else int(ds.get("BitsStored", 8))
    return np.clip(grey / (2**depth - 1), 0.0, 1.0)


def _grey_to_unit(
    block: np.ndarray, ds: Dataset, voi: tuple[float, float] | None, stretch: tuple[float, float]
) -> np.ndarray:
    values = apply_modality_lut(block, ds)
    if voi is not None:
        return _voi_to_unit(values, ds, *voi)
    low, high = stretch
    if high <= low:
        return np.zeros(values.shape)
    return (values.astype(np.float64) - low) / (high - low)


def display_pixels(ds: Dataset, stored: np.ndarray) -> np.ndarray:
    """uint8 [H, W], bone bright, from one frame's stored values ([H, W] grey or [H, W, 3] colour)."""
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    colour = stored.ndim == 3 or photometric == "PALETTE COLOR"
    voi = None if colour else _voi_range(ds)
    stretch = _modality_range(ds, stored) if not colour and voi is None else (0.0, 0.0)
    pixels = np.empty(stored.shape[:2], dtype=np.uint8)
    for rows in _row_blocks(*stored.shape[:2]):
        if colour:
            unit = _colour_to_unit(stored[rows], ds, photometric)
        else:
            unit = _grey_to_unit(stored[rows], ds, voi, stretch)
            if photometric == "MONOCHROME1":
                unit = 1.0 - unit
        pixels[rows] = np.round(np.nan_to_num(unit) * 255.0)
    return pixels

"""The pixel budget: how big an image may be, decided from its header before a single pixel is decoded.

A few hundred bytes of RLE, PNG or JPEG can declare 40,000 x 40,000 pixels; a decoder allocates the
whole frame before it finds the data missing, so a size check after decoding comes gigabytes too late.
Every reader (`mura.data.images.read_image`, hence the CLI, the API, the DICOM node, evaluation and
the service) asks this module first, with the size the header declares.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mura.errors import ImageDecodeError

if TYPE_CHECKING:
    from PIL import Image
    from pydicom.dataset import Dataset

# A 4,000 x 5,000 detector plate is 20 Mpx; five times that leaves room for any real radiograph. At the
# limit a decode peaks at ~6 bytes a pixel for 16-bit DICOM (the file's bytes, the stored frame, the
# 8-bit result) and ~11 for RGBA PNG (Pillow's RGBA, then 8-bit planes); benchmarks/bench_image_memory.py.
DEFAULT_MAX_PIXELS = 100_000_000
# From this size on, the memory a decode freed is handed back to the system at once (`return_freed_memory`).
TRIM_AFTER_PIXELS = 10_000_000


@dataclass(frozen=True)
class DeclaredSize:
    """What a header says: the side lengths of one frame and how many frames the file holds.

    Only the first frame is ever decoded, so the budget is on `pixels`, one frame's worth.
    """

    width: int
    height: int
    frames: int = 1

    @property
    def pixels(self) -> int:
        return self.width * self.height


def pil_size(image: Image.Image) -> DeclaredSize:
    """The size of a lazily opened PIL image (its header only; nothing is decoded)."""
    width, height = image.size
    return DeclaredSize(width, height, max(1, int(getattr(image, "n_frames", 1))))


def dicom_size(ds: Dataset) -> DeclaredSize:
    """The size a DICOM data set declares in Rows, Columns and NumberOfFrames (ValueError if no number)."""
    return DeclaredSize(
        int(ds.get("Columns", 0) or 0),
        int(ds.get("Rows", 0) or 0),
        max(1, int(ds.get("NumberOfFrames", 1) or 1)),
    )


class PixelBudgetError(ImageDecodeError):
    """A header that declares more pixels than the budget allows, refused before any decoding.

    Its own type so that a caller can answer it apart from a broken file (the service: 422
    `image_too_large`); `pixels` is None where only Pillow's own guard knows the size.
    """

    def __init__(self, label: str, reason: str, pixels: int | None) -> None:
        super().__init__(label, reason)
        self.pixels = pixels


def check_pixel_budget(size: DeclaredSize, label: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
    """PixelBudgetError naming the file, its declared size and the limit when one frame is over budget."""
    if size.pixels > max_pixels:
        raise PixelBudgetError(
            label,
            f"header declares {size.width}x{size.height} = {size.pixels:,} pixels, over the limit of "
            f"{max_pixels:,} (decompression bomb?); raise max_pixels if such images are real",
            size.pixels,
        )


def pil_guard_error(label: str, exc: Exception) -> PixelBudgetError:
    """Pillow's own decompression-bomb guard fired while reading a header (far over any sane budget)."""
    return PixelBudgetError(label, f"header declares more pixels than Pillow accepts: {exc}", None)


def frames_warning(size: DeclaredSize) -> tuple[str, ...]:
    """The warning a multi-frame file gets: only its first frame is read (one image, one prediction)."""
    return (f"multi-frame: {size.frames} frames, frame 1 used",) if size.frames > 1 else ()


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to call
        return None


def return_freed_memory(pixels: int) -> None:
    """After decoding `pixels` pixels, give the freed memory back to the system (glibc's malloc_trim).

    Decoders allocate in blocks under glibc's mmap threshold (Pillow: 16 MB), which return to the
    heap of the thread that decoded, not to the system: a server kept hundreds of MB after one large
    study. Trimming costs a few milliseconds, so only large images pay it.
    """
    trim = _malloc_trim()
    if trim is not None and pixels >= TRIM_AFTER_PIXELS:
        trim(0)

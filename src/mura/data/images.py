"""Decode any radiograph file we meet (PNG/JPEG/DICOM, 8/16-bit, RGB/palette, EXIF-rotated) to 8-bit grey.

One function is used by the cache builder, the predictor and the web service, so a model sees the same
pixels at training and at serving time.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from mura.errors import ImageDecodeError

# Largest image we agree to decode. A 4,000 x 5,000 DICOM detector image is 20 Mpx; anything far beyond
# that is almost surely a decompression bomb (a tiny file that expands to gigabytes).
MAX_PIXELS = 100_000_000
DICOM_SUFFIXES = (".dcm", ".dicom")

_truncated_lock = threading.Lock()
_truncated_users = 0


@contextmanager
def _tolerate_truncation() -> Iterator[None]:
    """Let PIL finish JPEGs that lack their end marker (49 FracAtlas files), only while we decode.

    PIL's switch is a module global; a counter keeps it on while any thread is inside this block, so
    code elsewhere in the process keeps PIL's strict default.
    """
    global _truncated_users
    with _truncated_lock:
        _truncated_users += 1
        ImageFile.LOAD_TRUNCATED_IMAGES = True
    try:
        yield
    finally:
        with _truncated_lock:
            _truncated_users -= 1
            if _truncated_users == 0:
                ImageFile.LOAD_TRUNCATED_IMAGES = False


def is_dicom(source: str | Path | bytes) -> bool:
    """DICOM by suffix for paths; else by the `DICM` marker at byte 128, or a preamble-less data set start."""
    from mura.data.dicom_bytes import SNIFF_BYTES, sniff_dataset_start

    if isinstance(source, bytes | bytearray | memoryview):
        head = bytes(source[:SNIFF_BYTES])
    else:
        path = Path(source)
        if path.suffix.lower() in DICOM_SUFFIXES:
            return True
        try:
            with open(path, "rb") as handle:
                head = handle.read(SNIFF_BYTES)
        except OSError:
            return False
    return head[128:132] == b"DICM" or sniff_dataset_start(head) is not None


def _label(source: str | Path | bytes) -> str:
    return "<bytes>" if isinstance(source, bytes | bytearray | memoryview) else str(source)


def _scale_to_uint8(array: np.ndarray) -> np.ndarray:
    """Map the values actually present onto 0..255 (a 12-bit image in a 16-bit file is not 257x dim)."""
    array = array.astype(np.float32)
    low, high = float(array.min()), float(array.max())
    if high <= low:
        return np.zeros(array.shape, dtype=np.uint8)
    return np.round((array - low) * (255.0 / (high - low))).astype(np.uint8)


def _to_grayscale(image: Image.Image) -> np.ndarray:
    mode = image.mode
    if mode == "L":
        return np.asarray(image, dtype=np.uint8)
    if mode.startswith("I") or mode == "F":
        return _scale_to_uint8(np.asarray(image))
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in image.info):
        # Transparent pixels become black, the background colour of a radiograph.
        rgba = np.asarray(image.convert("RGBA"), dtype=np.float32)
        grey = rgba[..., 0] * 0.299 + rgba[..., 1] * 0.587 + rgba[..., 2] * 0.114
        return np.round(grey * rgba[..., 3] / 255.0).astype(np.uint8)
    return np.asarray(image.convert("L"), dtype=np.uint8)


def _decode_pil(source: str | Path | bytes) -> np.ndarray:
    label = _label(source)
    handle = io.BytesIO(bytes(source)) if isinstance(source, bytes | bytearray | memoryview) else source
    try:
        with _tolerate_truncation(), Image.open(handle) as image:
            width, height = image.size
            if width * height > MAX_PIXELS:
                limit = f"{MAX_PIXELS:,}"
                raise ImageDecodeError(label, f"{width}x{height} px exceeds {limit} (decompression bomb?)")
            if width == 0 or height == 0:
                raise ImageDecodeError(label, "image has no pixels")
            image.load()
            image = ImageOps.exif_transpose(image)
            return _to_grayscale(image)
    except ImageDecodeError:
        raise
    except FileNotFoundError:
        raise ImageDecodeError(label, "file not found") from None
    except IsADirectoryError:
        raise ImageDecodeError(label, "is a directory, not an image") from None
    except UnidentifiedImageError:
        raise ImageDecodeError(label, "not an image format PIL can read") from None
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError(label, f"decompression bomb guard: {exc}") from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise ImageDecodeError(label, f"cannot decode: {exc}") from None


def load_grayscale(source: str | Path | bytes) -> np.ndarray:
    """Decode a file path or in-memory bytes to a 2-D uint8 array [H, W]; raise ImageDecodeError."""
    if is_dicom(source):
        try:
            from mura.data.dicom import read_dicom
        except ImportError as exc:
            raise ImageDecodeError(_label(source), f"DICOM support unavailable: {exc}") from None
        pixels = np.asarray(read_dicom(source).pixels)
        if pixels.ndim != 2 or pixels.dtype != np.uint8:
            raise ImageDecodeError(_label(source), f"DICOM reader returned {pixels.dtype} {pixels.shape}")
        return pixels
    return _decode_pil(source)

"""Decode any radiograph file we meet (PNG/JPEG/DICOM, 8/16-bit, RGB/palette, EXIF-rotated) to 8-bit grey.

One function is used by the cache builder, the predictor and the web service, so a model sees the same
pixels at training and at serving time. The pixel budget (`mura.data.budget`) is checked on the size the
header declares before anything is decoded, and colour becomes grey in 8 bits (PIL's own conversion), so
the memory an image costs is bounded by its header: a few bytes a pixel, never a float copy of it.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageChops, ImageOps, UnidentifiedImageError

from mura.data.budget import (
    DEFAULT_MAX_PIXELS,
    DeclaredSize,
    PixelBudgetError,
    check_pixel_budget,
    dicom_size,
    frames_warning,
    pil_guard_error,
    pil_size,
    return_freed_memory,
)
from mura.errors import ImageDecodeError

DICOM_SUFFIXES = (".dcm", ".dicom")
# Smallest side we agree to judge. Models take 224-320 px (32 px for the tiniest test model); a
# radiograph under 32 px a side is an icon that would be blown up 7x or more, so any decision on it
# would be the model's prior, not a reading of the image.
MIN_SIDE = 32
JPEG_END = b"\xff\xd9"


def is_dicom(source: str | Path | bytes) -> bool:
    """DICOM by suffix for paths; else by the `DICM` marker at byte 128, or a preamble-less data set start."""
    from mura.data.dicom.sniff import SNIFF_BYTES, sniff_dataset_start

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
    """Map the values actually present onto 0..255 (a 12-bit image in a 16-bit file is not 257x dim).

    Row by row in float32, so no float copy of the whole image is ever made.
    """
    low, high = float(array.min()), float(array.max())
    pixels = np.zeros(array.shape, dtype=np.uint8)
    if high > low:
        scale = np.float32(255.0 / (high - low))
        for row, values in enumerate(array):
            pixels[row] = np.round((values.astype(np.float32) - np.float32(low)) * scale)
    return pixels


def _to_grayscale(image: Image.Image) -> np.ndarray:
    """8-bit grey through PIL's own conversions (uint8, the ITU-R 601 luma weights).

    Transparent pixels become black, the background colour of a radiograph: grey x alpha / 255.
    """
    mode = image.mode
    if mode.startswith("I") or mode == "F":
        return _scale_to_uint8(np.asarray(image))
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in image.info):
        if mode != "LA":
            image = image.convert("RGBA")
        image = ImageChops.multiply(image.convert("L"), image.getchannel("A"))
    elif mode != "L":
        image = image.convert("L")
    return np.asarray(image, dtype=np.uint8)


# A pixel "departs from the tint" when its chroma (Cb, Cr; 0..255, 128 neutral) lies further than this from
# the image's median chroma. JPEG's chroma noise on RGB-encoded grey stays within a few units. A film
# under a uniform cast passes; one whose tint grows with brightness (sepia) counts as colour, as does a
# photograph of one object of one hue (matplotlib's blue gift box): telling those apart is not reliable.
CHROMA_DEPARTURE = 12
COLOUR_SAMPLE_SIDE = 128  # the colour share is measured on a nearest-neighbour sample this big


def colour_fraction(image: Image.Image) -> float:
    """Share of the pixels whose chroma departs from the image's median chroma (0.0 for grey modes).

    Measured on a small nearest-neighbour sample, so it costs microseconds whatever the image size.
    """
    if image.mode in ("1", "L", "LA", "F") or image.mode.startswith("I"):
        return 0.0
    scale = COLOUR_SAMPLE_SIDE / max(image.size)
    sample = image
    if scale < 1:
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        sample = image.resize(size, Image.NEAREST)
    chroma = np.asarray(sample.convert("RGB").convert("YCbCr"), dtype=np.int16)[..., 1:].reshape(-1, 2)
    departure = np.abs(chroma - np.median(chroma, axis=0)).sum(axis=1)
    return float(np.mean(departure > CHROMA_DEPARTURE))


@dataclass(frozen=True)
class DecodedImage:
    """Pixels plus what went wrong on the way that did not stop decoding (a cut file, ...)."""

    pixels: np.ndarray  # uint8 [H, W]
    warnings: tuple[str, ...] = ()  # one line each, without the file name (the caller knows it)
    body_part: str | None = None  # from DICOM tags; None for PNG/JPEG
    # Share of a colour source's pixels whose colour departs from its overall tint (0 for grey, for
    # RGB-encoded grey and for a uniformly tinted film; a photograph is far above): the grey pixels
    # alone cannot tell the scope gate that the source was a colour picture. DICOM colour is judged by
    # its PhotometricInterpretation instead (in `dicom`).
    colour_fraction: float = 0.0
    dicom: dict[str, Any] | None = None  # DICOM header tags (`read_dicom`'s metadata); None for PNG/JPEG


def _open(source: str | Path | bytes) -> Image.Image:
    handle = io.BytesIO(bytes(source)) if isinstance(source, bytes | bytearray | memoryview) else source
    return Image.open(handle)


def _check_min_side(width: int, height: int, label: str) -> None:
    if min(width, height) < MIN_SIDE:
        raise ImageDecodeError(
            label, f"image is {width}x{height} px, smaller than the minimum {MIN_SIDE}x{MIN_SIDE}"
        )


def _load_strict(image: Image.Image, fill: int | None = None) -> bool:
    """Decode with PIL's strict default; True when the data ran out, keeping the rows decoded so far.

    `fill` pre-paints the pixel buffer, so pixels the decoder never wrote can be told apart. PIL's
    LOAD_TRUNCATED_IMAGES is not used: it is a process-wide switch (unsafe with decoding threads) and
    makes the JPEG decoder paint the missing rows grey, hiding how much was lost.
    """
    if fill is not None:
        image.im = Image.new(image.mode, image.size, (fill,) * len(image.getbands())).im
    try:
        image.load()
        return False
    except OSError as exc:
        if not str(exc).startswith("image file is truncated"):
            raise
        image.tile = []  # done: what the decoder wrote stays, the rest is the buffer's initial fill
        return True


def _rows_in_common(*decodes: np.ndarray) -> int:
    """Leading rows on which every decode agrees (pixels backed by data, not by what filled the gap)."""
    same = np.logical_and.reduce([decode == decodes[0] for decode in decodes[1:]])
    rows = same.reshape(same.shape[0], -1).all(axis=1)
    return len(rows) if rows.all() else int(rows.argmin())


def _raw_bytes(source: str | Path | bytes) -> bytes:
    return bytes(source) if isinstance(source, bytes | bytearray | memoryview) else Path(source).read_bytes()


def _decode_closed(data: bytes) -> Image.Image:
    """A cut JPEG with an end marker appended: libjpeg paints the missing blocks grey (what PIL's
    LOAD_TRUNCATED_IMAGES does; that switch is process-wide, so unsafe with decoding threads)."""
    image = _open(data + JPEG_END)
    if _load_strict(image):
        image.close()
        raise ImageDecodeError("", "truncated JPEG: cut inside its headers")
    return image


def _jpeg_after_cut(source: str | Path | bytes, label: str) -> tuple[Image.Image, str]:
    """A cut JPEG decoded as far as its data goes, and how far that is.

    libjpeg holds its last rows back until the end marker comes, so the strict decode cannot count
    them. Instead the file is closed three ways (the end marker alone, or after one of two bit
    patterns): rows that come out the same all three times were decoded from the file's own data.
    """
    data = _raw_bytes(source).rstrip(b"\xff")  # a trailing 0xFF is half a marker
    image = _decode_closed(data)
    height = image.size[1]
    if image.info.get("progressive"):
        return image, "truncated progressive JPEG: decoded from the scans present, detail may be missing"
    padded = []
    for pattern in (b"\x55", b"\xaa"):
        with _decode_closed(data + pattern * 512) as other:
            padded.append(np.asarray(other))
    rows = _rows_in_common(np.asarray(image), *padded)
    if rows == 0:
        image.close()
        raise ImageDecodeError(label, "truncated JPEG: not one row of pixels in the file")
    if rows == height:
        return image, f"truncated JPEG: end-of-image marker missing (all {height} rows decoded)"
    return image, f"truncated JPEG: {rows} of {height} rows decoded, the rest is grey filler"


def _after_truncation(source: str | Path | bytes, image: Image.Image, label: str) -> tuple[Image.Image, str]:
    """The image to use for a file whose data ran out, and the one-line warning that says how.

    Other formats: the strict decode kept the rows it wrote; a second one onto a white buffer tells
    which those are (they come out the same).
    """
    if image.format == "JPEG":
        return _jpeg_after_cut(source, label)
    kind, height = image.format or "image", image.size[1]
    with _open(source) as again:
        _load_strict(again, fill=255)
        rows = _rows_in_common(np.asarray(image), np.asarray(again))
    if rows == 0:
        raise ImageDecodeError(label, f"truncated {kind}: not one row of pixels in the file")
    if rows == height:
        return image, f"truncated {kind}: end marker missing (all {height} rows decoded)"
    return image, f"truncated {kind}: {rows} of {height} rows decoded, the rest is black filler"


def _decode_pil(source: str | Path | bytes, label: str, max_pixels: int) -> DecodedImage:
    try:
        with _open(source) as image:
            size = pil_size(image)
            check_pixel_budget(size, label, max_pixels)
            _check_min_side(size.width, size.height, label)
            decoded, warnings = image, frames_warning(size)
            if _load_strict(image):
                decoded, warning = _after_truncation(source, image, label)
                warnings = (*warnings, warning)
            with decoded:
                ImageOps.exif_transpose(decoded, in_place=True)  # no copy of an upright image
                colour = colour_fraction(decoded)
                return DecodedImage(_to_grayscale(decoded), warnings, colour_fraction=colour)
    except PixelBudgetError:
        raise
    except ImageDecodeError as exc:  # raised without the file's name (the JPEG repair)
        raise ImageDecodeError(label, exc.reason) from None
    except FileNotFoundError:
        raise ImageDecodeError(label, "file not found") from None
    except IsADirectoryError:
        raise ImageDecodeError(label, "is a directory, not an image") from None
    except UnidentifiedImageError:
        raise ImageDecodeError(label, "not an image format PIL can read") from None
    except Image.DecompressionBombError as exc:
        raise pil_guard_error(label, exc) from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise ImageDecodeError(label, f"cannot decode: {exc}") from None


def declared_size(source: str | Path | bytes, name: str | None = None) -> DeclaredSize:
    """The size the header declares (DICOM tags, or PIL's lazy open), decoding no pixel; ImageDecodeError.

    For a caller that must budget several files before decoding any (a study upload).
    """
    label = name or _label(source)
    if is_dicom(source):
        from mura.data.dicom.read import read_dataset

        try:
            return dicom_size(read_dataset(source, label, stop_before_pixels=True))
        except (TypeError, ValueError):
            raise ImageDecodeError(label, "DICOM Rows, Columns or NumberOfFrames is not a number") from None
    try:
        with _open(source) as image:
            return pil_size(image)
    except Image.DecompressionBombError as exc:
        raise pil_guard_error(label, exc) from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:  # UnidentifiedImageError is an OSError
        raise ImageDecodeError(label, f"unreadable image header: {exc}") from None


def read_image(
    source: str | Path | bytes, name: str | None = None, *, max_pixels: int = DEFAULT_MAX_PIXELS
) -> DecodedImage:
    """Decode a path or in-memory bytes (PNG/JPEG/... or DICOM) to grey pixels plus warnings.

    `name` labels errors (an upload's filename); ImageDecodeError when no usable image comes out, or
    when the header declares a frame of more than `max_pixels` (refused before any pixel is decoded).
    A multi-frame file gives its first frame, with a warning.
    """
    label = name or _label(source)
    if not is_dicom(source):
        decoded = _decode_pil(source, label, max_pixels)
        return_freed_memory(decoded.pixels.size)
        return decoded
    try:
        from mura.data.dicom.read import read_dicom
    except ImportError as exc:
        raise ImageDecodeError(label, f"DICOM support unavailable: {exc}") from None
    dicom = read_dicom(source, name=label, max_pixels=max_pixels)
    pixels = np.asarray(dicom.pixels)
    if pixels.ndim != 2 or pixels.dtype != np.uint8:
        raise ImageDecodeError(label, f"DICOM reader returned {pixels.dtype} {pixels.shape}")
    _check_min_side(pixels.shape[1], pixels.shape[0], label)
    return_freed_memory(pixels.size)
    return DecodedImage(pixels, dicom.warnings, dicom.body_part, dicom=dicom.metadata)


def load_grayscale(source: str | Path | bytes) -> np.ndarray:
    """`read_image(source).pixels`: a 2-D uint8 array [H, W], for callers that need no warnings."""
    return read_image(source).pixels

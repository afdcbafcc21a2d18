"""Checks on an uploaded file before any pixel is decoded: what it really is, and how big it would get.

The type comes from the magic bytes, not the filename or the client's Content-Type (both are
whatever the client says). Dimensions come from the header alone (Pillow's lazy open, pydicom with
`stop_before_pixels`), so a small file that would inflate to gigabytes (a decompression bomb) is
refused with 422 `image_too_large` before it costs memory: the request itself was within the upload
limit (413 is reserved for that), but its content cannot be processed.
"""

from __future__ import annotations

import io
import warnings

from mura.data.dicom.read import read_dataset
from mura.data.images import is_dicom
from mura.errors import ImageDecodeError
from mura.service.errors import too_many_pixels, undecodable, unsupported_type

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC = b"\xff\xd8\xff"


def sniff_kind(data: bytes, filename: str) -> str:
    """`png`, `jpeg` or `dicom` by content; 415 for anything else.

    DICOM first and by the decoder's own test (`mura.data.images.is_dicom`: the `DICM` marker, or a
    preamble-less data set), so what is checked here is what gets decoded: a DICOM preamble is
    free-form and may even look like a PNG.
    """
    if is_dicom(data):
        return "dicom"
    if data.startswith(PNG_MAGIC):
        return "png"
    if data.startswith(JPEG_MAGIC):
        return "jpeg"
    raise unsupported_type(filename)


def _raster_size(data: bytes, filename: str, max_pixels: int) -> int:
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
                frames = getattr(image, "n_frames", 1)
    except Image.DecompressionBombError:
        # Pillow's own guard (twice MAX_IMAGE_PIXELS) fired while reading the header: over any sane budget.
        raise too_many_pixels(filename, None, max_pixels) from None
    except Exception as exc:  # Pillow raises many types for broken headers
        raise undecodable(filename, f"unreadable image header ({type(exc).__name__})") from None
    return width * height * max(1, int(frames))


def _dicom_size(data: bytes, filename: str) -> int:
    try:
        ds = read_dataset(data, filename, stop_before_pixels=True)
        rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
    except ImageDecodeError as exc:
        raise undecodable(filename, exc.reason) from None
    except Exception as exc:  # a header value that is no number
        raise undecodable(filename, f"unreadable DICOM header ({type(exc).__name__})") from None
    return rows * cols * max(1, frames) * max(1, samples)


def check_pixel_budget(data: bytes, kind: str, filename: str, max_pixels: int) -> int:
    """The number of pixels the file declares; 422 when it is over `max_pixels`."""
    pixels = _dicom_size(data, filename) if kind == "dicom" else _raster_size(data, filename, max_pixels)
    if pixels > max_pixels:
        raise too_many_pixels(filename, pixels, max_pixels)
    return pixels

"""Checks on the uploads before any pixel is decoded: what each really is, and how big it would get.

The type comes from the magic bytes, not the filename or the client's Content-Type (both are
whatever the client says). Dimensions come from the header alone (`mura.data.images.declared_size`,
the same budget `read_image` applies), so a small file that would inflate to gigabytes (a
decompression bomb) is refused with 422 `image_too_large` before it costs memory: the request itself
was within the upload limit (413 is reserved for that), but its content cannot be processed.

The budget is per image and per request: a study's views are all decoded and held while the model
runs, so the sum of their declared pixels is bounded too (422 `request_too_large`), at
REQUEST_BUDGET_IMAGES images of the per-image limit; `max_pixels` (`mura serve --max-megapixels`)
sets both.
"""

from __future__ import annotations

from mura.data.budget import DeclaredSize, PixelBudgetError
from mura.data.images import declared_size, is_dicom
from mura.errors import ImageDecodeError
from mura.service.errors import ServiceError, too_many_pixels, undecodable, unsupported_type

# Four images at the per-image limit (4 x 64 Mpx by default): a 16-view study of 3,000 x 3,000 plates
# (144 Mpx) passes; what a request holds stays about 1 byte a pixel once decoded, so ~256 MB by default.
REQUEST_BUDGET_IMAGES = 4

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


def check_upload_size(data: bytes, filename: str, max_pixels: int) -> DeclaredSize:
    """The size the file's header declares; 422 `image_too_large` when one frame is over `max_pixels`."""
    try:
        size = declared_size(data, filename)
    except PixelBudgetError as exc:  # Pillow's own guard fired on the header: far over any budget
        raise too_many_pixels(filename, exc.pixels, max_pixels) from None
    except ImageDecodeError as exc:
        raise undecodable(filename, exc.reason) from None
    if size.pixels > max_pixels:
        raise too_many_pixels(filename, size.pixels, max_pixels)
    return size


def check_request_pixels(declared: list[int], max_pixels: int) -> None:
    """422 `request_too_large` when the images of one request declare more than their budget in all."""
    budget = REQUEST_BUDGET_IMAGES * max_pixels
    if sum(declared) > budget:
        raise ServiceError(
            422,
            "request_too_large",
            f"the {len(declared)} images declare {sum(declared):,} pixels in all, over the limit of "
            f"{budget:,} for one request ({REQUEST_BUDGET_IMAGES} images of {max_pixels:,}); "
            "send fewer or smaller views",
        )

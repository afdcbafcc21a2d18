"""The size a compressed DICOM frame declares in its own codestream header (JPEG, JPEG-LS, JPEG 2000).

The decoder allocates what the codestream says, not what the DICOM Rows and Columns say: a 64 x 64 data
set can carry a JPEG whose frame header declares 30,000 x 30,000 (5 GB allocated, then a shape error).
So the pixel budget is checked on both headers before the decoder runs.
"""

from __future__ import annotations

# Start-of-frame markers: the JPEG processes (C0-C3, C5-C7, C9-CB, CD-CF) and JPEG-LS (F7).
_SOF_MARKERS = frozenset(
    [*range(0xC0, 0xC4), *range(0xC5, 0xC8), *range(0xC9, 0xCC), *range(0xCD, 0xD0), 0xF7]
)
_J2K_START = b"\xff\x4f\xff\x51"  # SOC then SIZ: a JPEG 2000 codestream always opens with both
_J2K_SEARCH = 65536  # how far into a JP2 file (boxes before the codestream) the start is looked for


def _jpeg_size(frame: bytes) -> tuple[int, int] | None:
    position = 2
    while position + 9 <= len(frame) and frame[position] == 0xFF:
        marker = frame[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if marker in _SOF_MARKERS:
            height = int.from_bytes(frame[position + 5 : position + 7], "big")
            width = int.from_bytes(frame[position + 7 : position + 9], "big")
            return width, height
        position += 2 + int.from_bytes(frame[position + 2 : position + 4], "big")
    return None


def _j2k_size(frame: bytes) -> tuple[int, int] | None:
    start = frame.find(_J2K_START, 0, _J2K_SEARCH)
    if start < 0 or start + 26 > len(frame):
        return None
    x, y, x_offset, y_offset = (
        int.from_bytes(frame[start + i : start + i + 4], "big") for i in (8, 12, 16, 20)
    )
    return (x - x_offset, y - y_offset) if x > x_offset and y > y_offset else None


def codestream_size(frame: bytes) -> tuple[int, int] | None:
    """(width, height) a JPEG / JPEG-LS / JPEG 2000 frame declares, or None (RLE, or not found)."""
    if frame.startswith(b"\xff\xd8"):
        return _jpeg_size(frame)
    return _j2k_size(frame)

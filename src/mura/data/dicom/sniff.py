"""Byte-level DICOM helpers that need no parsing: where a preamble-less data set starts, and the repair of
sequential-JPEG scan headers that some encoders fill with values the process ignores."""

from __future__ import annotations

from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

# How far into a preamble-less file the first element may start: pydicom's own `no_meta.dcm` carries one
# stray byte before it. Two consecutive plausible element headers are required, so other files are refused.
SNIFF_BYTES = 1024
MAX_LEADING_BYTES = 4
_VRS = frozenset(
    (
        b"AE AS AT CS DA DS DT FD FL IS LO LT OB OD OF OL OV OW PN "
        b"SH SL SQ SS ST SV TM UC UI UL UN UR US UT UV"
    ).split()
)
_LONG_VRS = frozenset(b"OB OD OF OL OV OW SQ UC UN UR UT SV UV".split())
_ENCODINGS: tuple[tuple[str, UID], ...] = (
    ("explicit-le", ExplicitVRLittleEndian),
    ("explicit-be", ExplicitVRBigEndian),
    ("implicit-le", ImplicitVRLittleEndian),
)


def _element_at(head: bytes, offset: int, encoding: str) -> tuple[tuple[int, int], int] | None:
    """((group, element), offset of the next element) if a plausible element header starts at `offset`."""
    order = "big" if encoding == "explicit-be" else "little"
    if offset + 12 > len(head):
        return None
    group = int.from_bytes(head[offset : offset + 2], order)
    element = int.from_bytes(head[offset + 2 : offset + 4], order)
    if encoding == "implicit-le":
        length, header = int.from_bytes(head[offset + 4 : offset + 8], "little"), 8
    else:
        vr = head[offset + 4 : offset + 6]
        if vr not in _VRS:
            return None
        if vr in _LONG_VRS:
            if head[offset + 6 : offset + 8] != b"\0\0":
                return None
            length, header = int.from_bytes(head[offset + 8 : offset + 12], order), 12
        else:
            length, header = int.from_bytes(head[offset + 6 : offset + 8], order), 8
    if length == 0xFFFFFFFF:  # undefined length: a sequence, whose items we do not follow
        return (group, element), -1
    return (group, element), offset + header + length


def sniff_dataset_start(head: bytes) -> tuple[int, UID] | None:
    """(offset, transfer syntax) of a DICOM data set without preamble at the start of `head`, or None.

    The first element must be in the file meta (0002) or identifying (0008) group and be followed by a
    second plausible element with a larger tag in the same encoding.
    """
    for offset in range(MAX_LEADING_BYTES + 1):
        for encoding, syntax in _ENCODINGS:
            first = _element_at(head, offset, encoding)
            if first is None or first[0][0] not in (0x0002, 0x0008):
                continue
            if first[0][0] == 0x0002 and encoding != "explicit-le":
                continue  # the file meta group is always explicit VR little endian
            tag, following = first
            if following == -1 or following + 12 > len(head):
                continue
            second = _element_at(head, following, "explicit-le" if tag[0] == 0x0002 else encoding)
            if second is not None and tag < second[0] and second[0][0] <= 0x0010:
                return offset, syntax
    return None


def repair_sequential_scan(frame: bytes) -> bytes:
    """Rewrite the spectral selection / approximation bytes of the first SOS of a SOF0/SOF1 JPEG."""
    position, sequential = 2, False
    while position + 4 <= len(frame) and frame[position] == 0xFF:
        marker = frame[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        length = int.from_bytes(frame[position + 2 : position + 4], "big")
        if marker in (0xC0, 0xC1):
            sequential = True
        if marker == 0xDA:
            if not sequential:
                return frame
            start = position + 5 + 2 * frame[position + 4]
            return frame[:start] + bytes((0, 63, 0)) + frame[start + 3 :]
        position += 2 + length
    return frame

"""Read a DICOM radiograph the way a viewer would show it: 8-bit grey plus the body part it claims to be.

The pixels go through the display pipeline (`mura.data.dicom.display`: modality LUT, VOI, MONOCHROME1
inverted). The body part comes from `BodyPartExamined`, else the study/series description.

Compressed pixel data goes through pydicom's decoder plugins: pylibjpeg-libjpeg (JPEG baseline, 12-bit
extended, lossless process 14, JPEG-LS), pylibjpeg-openjpeg (JPEG 2000) and pyjpegls (JPEG-LS, 2-4x faster
than libjpeg there). GDCM was measured too: as fast on JPEG Lossless, but it refuses 12-bit JPEG Extended,
the usual compression of CR/DX films, so it is not used. Files without the 128-byte preamble are read
where their first bytes are a plausible data set (`mura.data.dicom.sniff`).

Memory is bounded by the header: the pixel budget (`mura.data.budget`) is checked on Rows x Columns and
on the size the compressed frame declares (`mura.data.dicom.codestream`) before the decoder runs; only
the first frame is decoded (a multi-frame file gets a warning), and the display pipeline runs on blocks
of rows, so its float64 temporaries stay a few megabytes whatever the image size.
"""

from __future__ import annotations

import io
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate, generate_frames, get_frame
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.pixels import pixel_array
from pydicom.uid import JPEGBaseline8Bit, JPEGExtended12Bit

from mura.data.budget import DEFAULT_MAX_PIXELS, DeclaredSize, check_pixel_budget, dicom_size, frames_warning
from mura.data.dicom.codestream import codestream_size
from mura.data.dicom.display import display_pixels
from mura.data.dicom.sniff import SNIFF_BYTES, repair_sequential_scan, sniff_dataset_start
from mura.errors import ImageDecodeError

PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")

# Words (after upper-casing and splitting on anything but letters) that name one of the body parts of
# `mura.constants.BODY_PARTS`: MURA's seven, then FracAtlas's regions MURA lacks (HIP: the pelvis film;
# LEG: knee, lower leg, ankle, foot and femur, what FracAtlas's leg films show). The first word of a
# text that matches wins, so "WRIST AND HAND" is a wrist.
BODY_PART_WORDS: dict[str, str] = {
    **dict.fromkeys(("ELBOW", "ELBOWS", "OLECRANON"), "ELBOW"),
    **dict.fromkeys(("FINGER", "FINGERS", "DIGIT", "DIGITS", "THUMB", "PHALANX", "PHALANGES"), "FINGER"),
    **dict.fromkeys(("FOREARM", "FOREARMS", "RADIUS", "ULNA"), "FOREARM"),
    **dict.fromkeys(("HAND", "HANDS", "METACARPAL", "METACARPALS"), "HAND"),
    **dict.fromkeys(("HUMERUS", "HUMERI"), "HUMERUS"),
    **dict.fromkeys(("SHOULDER", "SHOULDERS", "SCAPULA", "GLENOHUMERAL"), "SHOULDER"),
    **dict.fromkeys(("WRIST", "WRISTS", "CARPUS", "CARPAL", "SCAPHOID"), "WRIST"),
    **dict.fromkeys(("HIP", "HIPS", "PELVIS", "PELVIC", "ACETABULUM"), "HIP"),
    **dict.fromkeys(("LEG", "LEGS", "TIBIA", "FIBULA", "TIB", "KNEE", "KNEES", "PATELLA"), "LEG"),
    **dict.fromkeys(("ANKLE", "ANKLES", "FOOT", "FEET", "TOE", "TOES", "CALCANEUS"), "LEG"),
    **dict.fromkeys(("FEMUR", "THIGH", "METATARSAL", "METATARSALS"), "LEG"),
}
BODY_PART_PHRASES: dict[str, str] = {
    "UPPER ARM": "HUMERUS",
    "UPPERARM": "HUMERUS",
    "LOWER ARM": "FOREARM",
    "LOWER LEG": "LEG",
}

# Tags copied into DicomImage.metadata: enough to describe the image, no patient identity.
METADATA_KEYWORDS = (
    "SOPClassUID",
    "Modality",
    "BodyPartExamined",
    "StudyDescription",
    "SeriesDescription",
    "ProtocolName",
    "ViewPosition",
    "Laterality",
    "ImageLaterality",
    "PhotometricInterpretation",
    "Rows",
    "Columns",
    "BitsStored",
    "NumberOfFrames",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
)


def _read_head(path: Path) -> bytes:
    with open(path, "rb") as handle:
        return handle.read(SNIFF_BYTES)


@dataclass
class DicomImage:
    pixels: np.ndarray  # [H, W] uint8, bone bright
    body_part: str | None  # one of BODY_PARTS, or None when the tags name none of them
    metadata: dict[str, Any] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()  # decoded, but not all of it (a multi-frame file: frame 1 only)


def body_part_from_text(text: str | None) -> str | None:
    """The `BODY_PARTS` name a free-text DICOM field names (`"XR WRIST 3V LT"` -> `"WRIST"`), or None."""
    if not text:
        return None
    upper = str(text).upper()
    hits: list[tuple[int, str]] = [
        (m.start(), part) for p, part in BODY_PART_PHRASES.items() for m in re.finditer(rf"\b{p}\b", upper)
    ]
    hits += [
        (m.start(), BODY_PART_WORDS[m.group()])
        for m in re.finditer(r"[A-Z]+", upper)
        if m.group() in BODY_PART_WORDS
    ]
    return min(hits)[1] if hits else None


def body_part_from_dataset(ds: Dataset) -> str | None:
    """`BodyPartExamined` first (the coded field), then the study and series descriptions."""
    for keyword in ("BodyPartExamined", "StudyDescription", "SeriesDescription", "ProtocolName"):
        part = body_part_from_text(ds.get(keyword))
        if part is not None:
            return part
    return None


def first_frame(ds: Dataset) -> np.ndarray:
    """The stored values of the first frame, the only one decoded (a sequential JPEG with odd scan
    headers is repaired)."""
    try:
        return pixel_array(ds, index=0)
    except Exception:
        repaired = _with_repaired_jpeg_scans(ds)
        if repaired is None:
            raise
        return pixel_array(repaired, index=0)


def _check_declared_size(ds: Dataset, label: str, max_pixels: int) -> DeclaredSize:
    """Rows x Columns and, for compressed data, the size the first frame's codestream declares (what
    the decoder allocates), both within `max_pixels`; ImageDecodeError names `label`."""
    try:
        size = dicom_size(ds)
    except (TypeError, ValueError):
        raise ImageDecodeError(label, "DICOM Rows, Columns or NumberOfFrames is not a number") from None
    check_pixel_budget(size, label, max_pixels)
    syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if syntax is not None and syntax.is_encapsulated and "PixelData" in ds:
        try:
            frame = get_frame(ds.PixelData, 0, number_of_frames=size.frames)
        except Exception:  # no frame to find: the decoder fails the same way, before allocating
            return size
        declared = codestream_size(frame)
        if declared is not None:
            check_pixel_budget(DeclaredSize(*declared), f"{label} (compressed frame)", max_pixels)
    return size


def _with_repaired_jpeg_scans(ds: Dataset) -> Dataset | None:
    """A copy of a sequential-JPEG data set whose scan headers say Ss=0, Se=63, Ah=Al=0, or None.

    Some encoders write other values there; the sequential process ignores them (IJG and dcmtk decode such
    files with a warning) but libjpeg refuses them. The source data set is left untouched.
    """
    syntax = ds.file_meta.get("TransferSyntaxUID")
    if syntax not in (JPEGBaseline8Bit, JPEGExtended12Bit) or "PixelData" not in ds:
        return None
    frames = [repair_sequential_scan(f) for f in generate_frames(ds.PixelData, number_of_frames=_frames(ds))]
    copy = Dataset()
    for element in ds:  # shared elements, none modified: the new pixel data is a new element
        if element.keyword != "PixelData":
            copy.add(element)
    copy.file_meta = ds.file_meta
    copy.add_new("PixelData", "OB", encapsulate(frames))
    return copy


def _frames(ds: Dataset) -> int:
    return int(ds.get("NumberOfFrames", 1) or 1)


def read_dataset(
    source: str | Path | bytes, name: str | None = None, *, stop_before_pixels: bool = False
) -> Dataset:
    """Parse a DICOM file (path or bytes), with or without its 128-byte preamble; ImageDecodeError.

    A file without the `DICM` marker is parsed (`force=True`) only where its first bytes are a plausible
    DICOM element, so any other file is still "not a DICOM file". Where the file carries no transfer
    syntax, the one its elements were found in is recorded so the pixel data can be decoded.
    """
    label = name or ("<bytes>" if isinstance(source, bytes | bytearray | memoryview) else str(source))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom warns about each oddity it tolerates
            return _parse(source, label, stop_before_pixels)
    except ImageDecodeError:
        raise
    except FileNotFoundError:
        raise ImageDecodeError(label, "file not found") from None
    except IsADirectoryError:
        raise ImageDecodeError(label, "is a directory, not a DICOM file") from None
    except InvalidDicomError:
        raise ImageDecodeError(label, "not a DICOM file (no DICM marker)") from None
    except Exception as exc:  # pydicom raises many types on damaged headers
        raise ImageDecodeError(label, f"unreadable DICOM header: {_first_line(exc)}") from None


def _parse(source: str | Path | bytes, label: str, stop_before_pixels: bool) -> Dataset:
    data = bytes(source) if isinstance(source, bytes | bytearray | memoryview) else None
    head = data[:SNIFF_BYTES] if data is not None else _read_head(Path(source))
    if head[128:132] == b"DICM":
        handle = io.BytesIO(data) if data is not None else source
        ds = pydicom.dcmread(handle, stop_before_pixels=stop_before_pixels)
    else:
        found = sniff_dataset_start(head)
        if found is None:
            raise ImageDecodeError(label, "not a DICOM file (no DICM marker, no DICOM data set at its start)")
        offset, syntax = found
        data = data if data is not None else Path(source).read_bytes()
        ds = pydicom.dcmread(io.BytesIO(data[offset:]), force=True, stop_before_pixels=stop_before_pixels)
        if "TransferSyntaxUID" not in ds.file_meta:
            ds.file_meta.TransferSyntaxUID = syntax
    return ds


def read_dicom(
    source: str | Path | bytes, name: str | None = None, *, max_pixels: int = DEFAULT_MAX_PIXELS
) -> DicomImage:
    """Decode a DICOM file (path or bytes) to 8-bit grey; ImageDecodeError names the file and the problem.

    A frame over `max_pixels` (by its header) is refused before any pixel is decoded.
    """
    label = name or ("<bytes>" if isinstance(source, bytes | bytearray | memoryview) else str(source))
    return dataset_image(read_dataset(source, label), label, max_pixels=max_pixels)


def dataset_image(ds: Dataset, label: str, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> DicomImage:
    """The display pixels and body part of a parsed data set; ImageDecodeError names `label`."""
    if not any(keyword in ds for keyword in PIXEL_KEYWORDS):
        raise ImageDecodeError(label, "DICOM file has no pixel data")
    size = _check_declared_size(ds, label, max_pixels)
    syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    syntax_name = getattr(syntax, "name", None) or str(syntax or "unknown transfer syntax")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            stored = first_frame(ds)
            if stored.size == 0 or not (stored.ndim == 2 or (stored.ndim == 3 and stored.shape[2] == 3)):
                raise ImageDecodeError(label, f"unexpected pixel array shape {stored.shape}")
            pixels = display_pixels(ds, stored)
    except ImageDecodeError:
        raise
    except Exception as exc:  # decoder plugins raise NotImplementedError, RuntimeError, ValueError, ...
        reason = f"cannot decode pixel data ({syntax_name}): {_first_line(exc)}"
        raise ImageDecodeError(label, reason) from None
    metadata = {k: _plain(ds.get(k)) for k in METADATA_KEYWORDS if k in ds}
    metadata["TransferSyntaxUID"] = str(syntax) if syntax else None
    return DicomImage(pixels, body_part_from_dataset(ds), metadata, frames_warning(size))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0].rstrip(":") if text else type(exc).__name__


def _plain(value: Any) -> Any:
    """DICOM element values (IS, DS, PersonName, MultiValue, ...) as JSON-friendly Python values."""
    if isinstance(value, list | tuple | MultiValue):
        return [_plain(v) for v in value]
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    return str(value)

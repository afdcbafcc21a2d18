"""Layer 1 of the scope gate: what a DICOM header says the image is, against what the model can judge.

The model reads projection radiographs of the limbs it was trained on. Its header tells, before any
pixel is looked at, when a file is something else:

- **SOP class** (PS3.4 B.5): the CR Image IOD (`Computed Radiography Image Storage`) and the DX IOD as
  displayed (`Digital X-Ray Image Storage - For Presentation`). Refused: `For Processing` (raw detector
  values before the manufacturer's display processing, which no training film went through: send the
  For Presentation instance); the DX IOD's mammography and intra-oral classes (breast and teeth, never
  limbs); Secondary Capture (a screen grab or another tool's result, not an acquisition); angiography,
  fluoroscopy, CT, MR and every other class. A header without a SOP class is judged by its Modality.
- **Modality** (PS3.3 C.7.3.1.1.1): CR and DX (what those IODs carry), DR (retired, still sent by older
  digital rooms) and RG (a film/screen radiograph, e.g. a digitised film). MG, IO and PX are the
  DX IOD's breast and dental variants, XA and RF are fluoroscopic: all out, as is every other modality.
- **PhotometricInterpretation**: MONOCHROME1 or MONOCHROME2, the only values the CR and DX IODs allow;
  colour means it is not a radiograph as acquired.
- **Body part**: the first of BodyPartExamined, StudyDescription, SeriesDescription and ProtocolName that
  names a part we know (`mura.inference.scope_parts`) decides: when none of the parts it names is in
  the model's scope (`ModelScope.parts`, stored in the checkpoint), the image is out. A field naming no
  known part decides nothing, so an empty or free-text header is never refused for its body part.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydicom.uid import UID

from mura.inference.scope_parts import named_parts

PROJECTION_SOP_CLASSES = (
    "1.2.840.10008.5.1.4.1.1.1",  # Computed Radiography Image Storage
    "1.2.840.10008.5.1.4.1.1.1.1",  # Digital X-Ray Image Storage - For Presentation
)
FOR_PROCESSING_SOP_CLASSES = (
    "1.2.840.10008.5.1.4.1.1.1.1.1",  # Digital X-Ray Image Storage - For Processing
    "1.2.840.10008.5.1.4.1.1.1.2.1",  # Digital Mammography X-Ray Image Storage - For Processing
    "1.2.840.10008.5.1.4.1.1.1.3.1",  # Digital Intra-Oral X-Ray Image Storage - For Processing
)
PROJECTION_MODALITIES = ("CR", "DX", "DR", "RG")
GREY_PHOTOMETRICS = ("MONOCHROME1", "MONOCHROME2")
BODY_PART_FIELDS = ("BodyPartExamined", "StudyDescription", "SeriesDescription", "ProtocolName")


def _text(header: Mapping[str, Any], keyword: str) -> str:
    value = header.get(keyword)
    return "" if value is None else str(value).strip()


def _sop_class_name(uid: str) -> str:
    known = UID(uid)
    return known.name if known.is_valid and known.name != uid else uid


def acquisition_reasons(header: Mapping[str, Any]) -> list[str]:
    """Why the header is not a projection radiograph as acquired (SOP class, Modality, colour); [] if it is.

    These decide whether a study is one this model is for at all: the DICOM node sends nothing for a
    study none of whose instances passes them (see `mura.pacs.study`).
    """
    reasons = []
    sop_class = _text(header, "SOPClassUID")
    if sop_class in FOR_PROCESSING_SOP_CLASSES:
        reasons.append(
            f"SOP class {_sop_class_name(sop_class)} holds raw detector values, not the image as "
            "displayed; send the For Presentation instance"
        )
    elif sop_class and sop_class not in PROJECTION_SOP_CLASSES:
        reasons.append(
            f"SOP class {_sop_class_name(sop_class)} is not a projection radiograph "
            "(Computed Radiography, or Digital X-Ray For Presentation)"
        )
    modality = _text(header, "Modality").upper()
    if not modality:
        reasons.append("Modality is missing, so nothing says this is a radiograph")
    elif modality not in PROJECTION_MODALITIES:
        reasons.append(
            f"Modality {modality} is not projection radiography ({', '.join(PROJECTION_MODALITIES)})"
        )
    photometric = _text(header, "PhotometricInterpretation").upper()
    if photometric and photometric not in GREY_PHOTOMETRICS:
        reasons.append(f"PhotometricInterpretation {photometric} is colour; a radiograph is grey")
    return reasons


def body_part_reasons(header: Mapping[str, Any], scope_parts: frozenset[str]) -> list[str]:
    """Why the body part the header names is outside `scope_parts`; [] when in scope or named nowhere."""
    for keyword in BODY_PART_FIELDS:
        text = _text(header, keyword)
        parts = named_parts(text)
        if not parts:
            continue
        if parts & scope_parts:
            return []
        shown = text if len(text) <= 40 else text[:37] + "..."
        return [
            f"{keyword} {shown} is not one of the parts this model was trained on "
            f"({', '.join(sorted(scope_parts))})"
        ]
    return []

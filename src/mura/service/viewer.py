"""What the page's viewer draws for one upload: the film, its Grad-CAM heatmap as a layer of its own,
and the patient and study a DICOM upload names.

The film goes back at its decoded size up to VIEW_SIDE on the longer side, lossless, so zooming shows
the pixels the model read and window/level does not amplify compression artefacts (a 2048 x 1640
radiograph is ~2 MB of PNG, ~2.7 MB in the JSON; a FracAtlas film, 454 x 373, ~90 KB). The heatmap is
a grey layer (255 = what drove the answer most) at most HEATMAP_SIDE: it is smooth at that size, and
the page colours it and sets its opacity and visibility itself, with no new request.
"""

from __future__ import annotations

import base64
import io
from typing import Protocol

import numpy as np
from PIL import Image

from mura.constants import body_part_index
from mura.data.dicom.read import read_dataset
from mura.errors import ImageDecodeError
from mura.service.engine import ModelGate
from mura.service.schemas import DicomIdentity, ImageAnswer

VIEW_SIDE = 2048  # the film's longer side, at most: a detector plate's full resolution is rarely needed
HEATMAP_SIDE = 512  # Grad-CAM maps are coarser than this at every supported model size


class Explainer(Protocol):
    """The part of `mura.inference.gradcam.GradCamExplainer` the service needs."""

    def heatmap(self, image: np.ndarray, body_part: int = -1) -> np.ndarray:
        """float32 [H, W] in [0, 1] for a uint8 [H, W] image."""
        ...


def shrink(image: np.ndarray, side: int) -> np.ndarray:
    """`image` with its longer side at most `side` (never enlarged)."""
    pil = Image.fromarray(np.ascontiguousarray(image))
    pil.thumbnail((side, side), Image.BILINEAR)
    return np.asarray(pil)


def png_base64(image: np.ndarray) -> str:
    """A grey or RGB uint8 array as a base64 PNG."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buffer, format="PNG", compress_level=3)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def add_view_layers(answer: ImageAnswer, pixels: np.ndarray, explainer: Explainer, gate: ModelGate) -> None:
    """Fill the answer's film and, when it was assessed, its heatmap (computed on the shrunk film: the
    model sees a resize of it either way)."""
    answer.image_png = png_base64(shrink(pixels, VIEW_SIDE))
    answer.image_size = (int(pixels.shape[1]), int(pixels.shape[0]))
    if not answer.assessed or answer.body_part is None:
        return
    small = shrink(pixels, HEATMAP_SIDE)
    with gate.exclusive():
        heat = explainer.heatmap(small, body_part_index(answer.body_part))
    answer.heatmap_png = png_base64(np.round(np.clip(heat, 0.0, 1.0) * 255).astype(np.uint8))


def _text(value: object) -> str | None:
    text = str(value).strip() if value is not None else ""
    return text or None


def dicom_identity(data: bytes) -> DicomIdentity | None:
    """The patient and study a DICOM file's own header names; None when it names none of them."""
    try:
        header = read_dataset(data, stop_before_pixels=True)
    except ImageDecodeError:
        return None
    date = _text(header.get("StudyDate"))
    if date is not None and len(date) == 8 and date.isdigit():
        date = f"{date[:4]}-{date[4:6]}-{date[6:]}"
    identity = DicomIdentity(
        patient_name=_text(header.get("PatientName")),
        patient_id=_text(header.get("PatientID")),
        accession_number=_text(header.get("AccessionNumber")),
        study_date=date,
    )
    return identity if any(identity.model_dump().values()) else None

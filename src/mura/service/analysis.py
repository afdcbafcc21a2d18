"""What one request asks of the model: check and decode the uploads, predict, optionally explain.

Runs on a worker thread (see engine.py). Decoding happens only in memory; nothing here writes a file
or logs pixel data or filenames.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image

from mura.constants import BODY_PARTS, UNKNOWN_BODY_PART
from mura.data.dicom import read_dicom
from mura.data.images import load_grayscale
from mura.errors import ImageDecodeError, MuraError
from mura.inference.files import FileResult, study_record
from mura.service.engine import ModelGate
from mura.service.errors import ServiceError, undecodable
from mura.service.limits import check_pixel_budget, sniff_kind
from mura.service.uploads import UploadedFile

PREVIEW_SIDE = 512  # images and heatmaps go back to the browser at most this big


class SupportsRecords(Protocol):
    """`mura.inference.predictor.PredictionBatch`: per-image JSON fields identical to `mura predict`'s."""

    threshold: float

    def record(self, i: int) -> dict[str, Any]: ...


class SupportsPredictImages(Protocol):
    """The part of `mura.inference.predictor.Predictor` the service needs."""

    threshold: float

    def predict_images(self, images: Sequence[np.ndarray], body_parts: Sequence[int]) -> SupportsRecords: ...


# (image uint8 [H, W], body-part index used by the fracture head) -> RGB uint8 overlay [H', W', 3]
Explainer = Callable[[np.ndarray, int], np.ndarray]


@dataclass
class DecodedImage:
    filename: str
    pixels: np.ndarray
    body_part: int  # from the request, else from DICOM tags, else -1
    body_part_source: str  # request | dicom | predicted


def decode_upload(upload: UploadedFile, body_part: int, max_pixels: int) -> DecodedImage:
    """Type by magic bytes (415), size from the header (422), then pixels (422); body part from DICOM."""
    source = "request" if body_part != UNKNOWN_BODY_PART else "predicted"
    kind = sniff_kind(upload.data, upload.filename)
    check_pixel_budget(upload.data, kind, upload.filename, max_pixels)
    try:
        if kind == "dicom":
            dicom = read_dicom(upload.data, name=upload.filename)
            pixels = dicom.pixels
            if body_part == UNKNOWN_BODY_PART and dicom.body_part is not None:
                body_part, source = BODY_PARTS.index(dicom.body_part), "dicom"
        else:
            pixels = load_grayscale(upload.data)
    except ImageDecodeError as exc:
        raise undecodable(upload.filename, exc.reason) from None
    return DecodedImage(upload.filename, pixels, body_part, source)


def preview(image: np.ndarray) -> np.ndarray:
    """The image shrunk so its longer side is at most PREVIEW_SIDE (what the browser shows)."""
    pil = Image.fromarray(np.ascontiguousarray(image))
    pil.thumbnail((PREVIEW_SIDE, PREVIEW_SIDE), Image.BILINEAR)
    return np.asarray(pil)


def png_base64(image: np.ndarray) -> str:
    """A grey or RGB uint8 array as a base64 PNG."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buffer, format="PNG", compress_level=3)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def predict_uploads(
    predictor: SupportsPredictImages,
    uploads: Sequence[UploadedFile],
    body_part: int,
    max_pixels: int,
    gate: ModelGate,
    explainer: Explainer | None = None,
) -> list[dict[str, Any]]:
    """Decode every upload (failing fast on the first bad one), predict them as one batch, explain each."""
    images = [decode_upload(upload, body_part, max_pixels) for upload in uploads]
    given = [image.body_part for image in images]
    try:
        with gate.shared():
            batch = predictor.predict_images([image.pixels for image in images], given)
    except MuraError as exc:  # e.g. a model without a body-part head and no body part given
        raise ServiceError(422, "cannot_predict", str(exc)) from None
    records = [batch.record(i) for i in range(len(images))]
    for image, record in zip(images, records, strict=True):
        record["filename"] = image.filename
        record["body_part_source"] = image.body_part_source
        if explainer is not None:
            # The CAM is computed on the preview: the model sees a resize of it either way, and the
            # overlay is only ever shown at preview size.
            small = preview(image.pixels)
            with gate.exclusive():
                overlay = explainer(small, BODY_PARTS.index(record["body_part"]))
            record["image_png"] = png_base64(small)
            record["cam_png"] = png_base64(overlay)
    return records


def study_summary(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """A study's answer, computed exactly as `mura predict --study` does: the mean of its views."""
    results = [FileResult(Path(record["filename"]), record=record) for record in records]
    first = records[0]
    summary = study_record(Path("study"), results, float(first["threshold"]), str(first["operating_point"]))
    summary.pop("path", None)  # a server-side folder name means nothing for an upload
    return summary

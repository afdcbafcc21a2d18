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
from typing import Protocol

import numpy as np
from PIL import Image

from mura.constants import BODY_PARTS, UNKNOWN_BODY_PART
from mura.data.images import read_image
from mura.errors import ImageDecodeError, MuraError
from mura.inference.batch import PredictionBatch
from mura.inference.files import FileResult, study_prediction
from mura.prediction import BodyPartOrigin, ModelIdentity
from mura.service.engine import ModelGate
from mura.service.errors import ServiceError, undecodable
from mura.service.limits import check_pixel_budget, check_request_pixels, sniff_kind
from mura.service.schemas import ImageAnswer, StudyAnswer
from mura.service.uploads import UploadedFile
from mura.tiers import TierScale

PREVIEW_SIDE = 512  # images and heatmaps go back to the browser at most this big


class SupportsPredictImages(Protocol):
    """The part of `mura.inference.predictor.Predictor` the service needs."""

    threshold: float
    identity: ModelIdentity
    tiers: TierScale

    def predict_images(self, images: Sequence[np.ndarray], body_parts: Sequence[int]) -> PredictionBatch: ...


# (image uint8 [H, W], body-part index used by the fracture head) -> RGB uint8 overlay [H', W', 3]
Explainer = Callable[[np.ndarray, int], np.ndarray]


@dataclass
class DecodedUpload:
    filename: str
    pixels: np.ndarray
    body_part: int  # from the request, else from DICOM tags, else -1
    body_part_origin: BodyPartOrigin  # given (the request) or dicom; meaningless while body_part is -1
    warnings: tuple[str, ...]  # decoded, but not cleanly (mura.data.images.read_image)


def checked_pixels(upload: UploadedFile, max_pixels: int) -> int:
    """Type by magic bytes (415), then the pixels its header declares (422 over `max_pixels`)."""
    sniff_kind(upload.data, upload.filename)
    return check_pixel_budget(upload.data, upload.filename, max_pixels).pixels


def decode_upload(upload: UploadedFile, body_part: int, max_pixels: int) -> DecodedUpload:
    """Pixels (422) of an upload whose header was checked (`checked_pixels`); body part from DICOM."""
    origin: BodyPartOrigin = "given"
    try:
        decoded = read_image(upload.data, name=upload.filename, max_pixels=max_pixels)
    except ImageDecodeError as exc:
        raise undecodable(upload.filename, exc.reason) from None
    if body_part == UNKNOWN_BODY_PART and decoded.body_part is not None:
        body_part, origin = BODY_PARTS.index(decoded.body_part), "dicom"
    return DecodedUpload(upload.filename, decoded.pixels, body_part, origin, decoded.warnings)


def skipped_view(filename: str, error: ServiceError) -> dict[str, str]:
    """A study view that could not be used, as the study answer lists it."""
    return {"filename": filename, "error": error.code, "detail": error.detail}


def decode_study(
    uploads: Sequence[UploadedFile], body_part: int, max_pixels: int
) -> tuple[list[DecodedUpload], list[dict[str, str]]]:
    """The views that decode, and the others with their reasons (as `mura predict --study` skips them).

    Every header is checked before any view is decoded, so the views' sum is refused (422) up front.
    """
    usable, declared, skipped = [], [], {}
    for i, upload in enumerate(uploads):
        try:
            declared.append(checked_pixels(upload, max_pixels))
            usable.append(i)
        except ServiceError as exc:
            skipped[i] = skipped_view(upload.filename, exc)
    check_request_pixels(declared, max_pixels)
    good = []
    for i in usable:
        try:
            good.append(decode_upload(uploads[i], body_part, max_pixels))
        except ServiceError as exc:
            skipped[i] = skipped_view(uploads[i].filename, exc)
    return good, [skipped[i] for i in sorted(skipped)]


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
    skip_bad: bool = False,
) -> tuple[list[ImageAnswer], list[dict[str, str]]]:
    """Decode the uploads, predict the good ones as one batch, explain each; (answers, skipped views).

    Without `skip_bad` the first bad upload refuses the request; with it (a study), bad views are
    listed and only a study with no usable view is refused (422 with the list).
    """
    if skip_bad:
        images, skipped = decode_study(uploads, body_part, max_pixels)
        if not images:
            raise ServiceError(
                422, "no_usable_view", "no view of the study could be used", extra={"skipped": skipped}
            )
    else:
        check_request_pixels([checked_pixels(upload, max_pixels) for upload in uploads], max_pixels)
        images, skipped = [decode_upload(upload, body_part, max_pixels) for upload in uploads], []
    given = [image.body_part for image in images]
    try:
        with gate.shared():
            batch = predictor.predict_images([image.pixels for image in images], given)
    except MuraError as exc:  # e.g. a model without a body-part head and no body part given
        raise ServiceError(422, "cannot_predict", str(exc)) from None
    answers = []
    for i, image in enumerate(images):
        prediction = batch.prediction(
            i,
            predictor.identity,
            path=image.filename,
            given_origin=image.body_part_origin,
            warnings=image.warnings,
        )
        answer = ImageAnswer(**prediction.model_dump())
        if explainer is not None:
            # The CAM is computed on the preview: the model sees a resize of it either way, and the
            # overlay is only ever shown at preview size.
            small = preview(image.pixels)
            with gate.exclusive():
                overlay = explainer(small, BODY_PARTS.index(str(prediction.body_part)))
            answer.image_png, answer.cam_png = png_base64(small), png_base64(overlay)
        answers.append(answer)
    return answers, skipped


def study_summary(
    answers: Sequence[ImageAnswer], skipped: Sequence[dict[str, str]], tiers: TierScale
) -> StudyAnswer:
    """A study's answer, computed exactly as `mura predict --study` does: the mean of its good views."""
    results = [FileResult(Path(a.path or ""), prediction=a) for a in answers]
    results += [FileResult(Path(view["filename"]), error=view["detail"]) for view in skipped]
    study = study_prediction(None, results, tiers)
    return StudyAnswer(**study.model_dump(), images=list(answers), skipped=list(skipped))

"""What one request asks of the model: check and decode the uploads, predict, optionally explain.

Runs on a worker thread (see engine.py). Decoding happens only in memory; nothing here writes a file
or logs pixel data or filenames. An upload outside the model's scope (`mura.inference.scope`: a CT, a
photograph, a blank, a body part it was not trained on) is answered `not_assessed` with its reasons,
never scored, unless the request asks `score_all` (research: scored, the reasons among the warnings).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from mura.constants import BODY_PARTS, UNKNOWN_BODY_PART
from mura.data.images import read_image
from mura.errors import ImageDecodeError, MuraError
from mura.inference.batch import PredictionBatch
from mura.inference.files import FileResult, InMemoryFile, not_assessed, study_prediction
from mura.inference.scope import ModelScope, scope_reasons, scored_anyway
from mura.inference.study_identity import check_one_study
from mura.prediction import BodyPartOrigin, ModelIdentity
from mura.service.engine import ModelGate
from mura.service.errors import ServiceError, undecodable
from mura.service.limits import check_request_pixels, check_upload_size, sniff_kind
from mura.service.schemas import DicomIdentity, ImageAnswer, StudyAnswer
from mura.service.uploads import UploadedFile
from mura.service.viewer import Explainer, add_view_layers, dicom_identity
from mura.tiers import TierScale


class SupportsPredictImages(Protocol):
    """The part of `mura.inference.predictor.Predictor` the service needs."""

    threshold: float
    threshold_name: str
    identity: ModelIdentity
    tiers: TierScale
    members: Sequence[Any]  # what the scope gate reads each checkpoint's scope from
    body_parts: tuple[str, ...]  # the body-part head's classes: what a request may name

    def predict_images(self, images: Sequence[np.ndarray], body_parts: Sequence[int]) -> PredictionBatch: ...


@dataclass
class DecodedUpload:
    filename: str
    pixels: np.ndarray
    body_part: int  # from the request, else from DICOM tags, else -1
    body_part_origin: BodyPartOrigin  # given (the request) or dicom; meaningless while body_part is -1
    warnings: tuple[str, ...]  # decoded, but not cleanly (mura.data.images.read_image)
    reasons: tuple[str, ...] = ()  # why the scope gate refuses it; () = in scope
    identity: DicomIdentity | None = None  # the patient and study a DICOM upload names


def checked_pixels(upload: UploadedFile, max_pixels: int) -> int:
    """Type by magic bytes (415), then the pixels its header declares (422 over `max_pixels`)."""
    sniff_kind(upload.data, upload.filename)
    return check_upload_size(upload.data, upload.filename, max_pixels).pixels


def decode_upload(upload: UploadedFile, body_part: int, max_pixels: int, scope: ModelScope) -> DecodedUpload:
    """Pixels (422) of an upload whose header was checked (`checked_pixels`); body part from DICOM; the
    scope gate's reasons."""
    origin: BodyPartOrigin = "given"
    try:
        decoded = read_image(upload.data, name=upload.filename, max_pixels=max_pixels)
    except ImageDecodeError as exc:
        raise undecodable(upload.filename, exc.reason) from None
    if body_part == UNKNOWN_BODY_PART and decoded.body_part is not None:
        body_part, origin = BODY_PARTS.index(decoded.body_part), "dicom"
    reasons = tuple(scope_reasons(decoded, scope))
    identity = dicom_identity(upload.data) if decoded.dicom is not None else None
    return DecodedUpload(
        upload.filename, decoded.pixels, body_part, origin, decoded.warnings, reasons, identity
    )


def skipped_view(filename: str, error: ServiceError) -> dict[str, str]:
    """A study view that could not be used, as the study answer lists it."""
    return {"filename": filename, "error": error.code, "detail": error.detail}


def decode_study(
    uploads: Sequence[UploadedFile], body_part: int, max_pixels: int, scope: ModelScope
) -> tuple[list[DecodedUpload], list[dict[str, str]]]:
    """The views that decode, and the others with their reasons (as `mura predict --study` skips them).

    Every header is checked before any view is decoded, so the views' sum is refused (422) up front, and
    so are DICOM views of different patients or studies (422 `not_one_study`, naming the two files and
    what differs, never a value from the files).
    """
    usable, declared, skipped = [], [], {}
    for i, upload in enumerate(uploads):
        try:
            declared.append(checked_pixels(upload, max_pixels))
            usable.append(i)
        except ServiceError as exc:
            skipped[i] = skipped_view(upload.filename, exc)
    check_request_pixels(declared, max_pixels)
    try:
        check_one_study([InMemoryFile(uploads[i].filename, uploads[i].data) for i in usable])
    except MuraError as exc:
        raise ServiceError(422, "not_one_study", str(exc)) from None
    good = []
    for i in usable:
        try:
            good.append(decode_upload(uploads[i], body_part, max_pixels, scope))
        except ServiceError as exc:
            skipped[i] = skipped_view(uploads[i].filename, exc)
    return good, [skipped[i] for i in sorted(skipped)]


def predict_uploads(
    predictor: SupportsPredictImages,
    uploads: Sequence[UploadedFile],
    body_part: int,
    max_pixels: int,
    gate: ModelGate,
    explainer: Explainer | None = None,
    skip_bad: bool = False,
    score_all: bool = False,
) -> tuple[list[ImageAnswer], list[dict[str, str]]]:
    """Decode the uploads, predict the good ones as one batch, explain each; (answers, skipped views).

    Without `skip_bad` the first bad upload refuses the request; with it (a study), bad views are
    listed and only a study with no usable view is refused (422 with the list). `score_all` (a
    researcher's choice, as `mura predict --score-all`) scores uploads the scope gate refuses too, its
    reasons among the warnings.
    """
    scope = ModelScope.of_members(predictor.members)
    if skip_bad:
        images, skipped = decode_study(uploads, body_part, max_pixels, scope)
        if not images:
            raise ServiceError(
                422, "no_usable_view", "no view of the study could be used", extra={"skipped": skipped}
            )
    else:
        check_request_pixels([checked_pixels(upload, max_pixels) for upload in uploads], max_pixels)
        images, skipped = [decode_upload(upload, body_part, max_pixels, scope) for upload in uploads], []
    scored = [image for image in images if score_all or not image.reasons]
    batch = None
    if scored:
        try:
            with gate.shared():
                batch = predictor.predict_images([i.pixels for i in scored], [i.body_part for i in scored])
        except MuraError as exc:  # e.g. a model without a body-part head and no body part given
            raise ServiceError(422, "cannot_predict", str(exc)) from None
    answers = []
    position = iter(range(len(scored)))  # each scored image's row of the batch, in order
    for image in images:
        if image.reasons and not score_all:
            refused = not_assessed(predictor, image.filename, image.reasons, image.warnings)
            answer = ImageAnswer(**refused.model_dump())
        else:
            assert batch is not None
            prediction = batch.prediction(
                next(position),
                predictor.identity,
                path=image.filename,
                given_origin=image.body_part_origin,
                warnings=(*image.warnings, *scored_anyway(image.reasons)),
                score_all=score_all,
            )
            answer = ImageAnswer(**prediction.model_dump())
        if image.identity is not None:
            answer.dicom_identity = image.identity
        if explainer is not None:  # a film not assessed is shown plainly: the picture, no heatmap
            add_view_layers(answer, image.pixels, explainer, gate)
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

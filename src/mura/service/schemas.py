"""The API's answers as pydantic models: the OpenAPI schema is the contract clients (and tests) hold us to.

The answers derive from `mura.prediction` (the record every surface returns), so the schema cannot drift
from what `mura predict` writes; everything listed is checked on every answer.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from mura.prediction import Prediction, StudyPrediction


class DicomIdentity(BaseModel):
    """Whom and which study a DICOM upload names, read from its own tags (nothing is looked up), so a
    reader can match the answer to the film; the service never logs it."""

    patient_name: str | None = Field(None, description="PatientName as stored (DICOM PN: FAMILY^GIVEN)")
    patient_id: str | None = None
    accession_number: str | None = None
    study_date: str | None = Field(None, description="StudyDate as YYYY-MM-DD (as stored if not a date)")


class ImageAnswer(Prediction):
    """One radiograph's prediction: `mura.prediction.Prediction` (`path` is the upload's file name).

    An upload outside the model's scope (not a projection radiograph, a body part the model was not
    trained on, a colour photograph, a blank or noise-like image) is answered with decision
    `not_assessed`: `reasons` says why, one line each, prefixed by the check that refused it (`dicom:`,
    `pixels:`); `fracture_probability` and `body_part` are null and there is no heat map."""

    dicom_identity: DicomIdentity | None = Field(None, description="DICOM uploads: the patient and study")
    image_png: str | None = Field(
        None, description="with cam=true: the film as decoded (grey base64 PNG, longer side at most 2048 px)"
    )
    image_size: tuple[int, int] | None = Field(
        None, description="with cam=true: width, height of the decoded film (the frame of `findings`)"
    )
    heatmap_png: str | None = Field(
        None,
        description="with cam=true, when assessed: the Grad-CAM heatmap as a grey base64 PNG (255 = what "
        "drove the answer most) of the film's aspect, at most 512 px: stretch it over the film",
    )


class SkippedView(BaseModel):
    """A view of a study that could not be used, and why."""

    filename: str
    error: str = Field(description="machine-readable code, as in an error answer")
    detail: str


class StudyAnswer(StudyPrediction):
    """A study: `mura.prediction.StudyPrediction`, computed as `mura predict --study` does, with its views."""

    images: list[ImageAnswer]
    skipped: list[SkippedView]


class ErrorAnswer(BaseModel):
    """Every refusal: a stable code and one line for people."""

    error: str
    detail: str


class StudyErrorAnswer(ErrorAnswer):
    """A refused study; when no view was usable, `skipped` says what was wrong with each."""

    skipped: list[SkippedView] | None = None


class Health(BaseModel):
    status: Literal["ok"]
    in_flight: int = Field(ge=0, description="requests holding an inference slot")
    capacity: int = Field(ge=1, description="inference slots (workers + queue)")
    reading: int = Field(ge=0, description="request bodies being received")
    reading_capacity: int = Field(ge=1)


ERROR_STATUSES = {
    400: "bad request: malformed multipart, missing file, unknown body part, bad cam or score_all value, "
    "too many files",
    408: "the request body did not arrive within the server's deadline",
    413: "the request body is over the upload limit",
    415: "not multipart/form-data, or a file that is not PNG, JPEG or DICOM by its content",
    422: "the image cannot be used: undecodable, too large in pixels, too small, or no model answer; "
    "a study: no usable view, or DICOM views of different patients or studies (`not_one_study`)",
    503: "the server is at capacity; see Retry-After",
    500: "an internal failure (logged as one line, never with upload data)",
}


def error_responses(study: bool = False) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for every refusal an upload endpoint can answer with."""
    responses: dict[int | str, dict[str, Any]] = {
        status: {"model": ErrorAnswer, "description": text} for status, text in ERROR_STATUSES.items()
    }
    if study:
        responses[422] = {"model": StudyErrorAnswer, "description": ERROR_STATUSES[422]}
    responses[503]["headers"] = {
        "Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}
    }
    return responses

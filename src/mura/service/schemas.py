"""The API's answers as pydantic models: the OpenAPI schema is the contract clients (and tests) hold us to.

Success models allow extra fields, so a field the prediction record gains
reaches clients before it is described here; everything listed is checked on every answer.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from mura.constants import BODY_PARTS

BodyPart = Literal[BODY_PARTS]  # type: ignore[valid-type]


class Prediction(BaseModel):
    """The fields `mura predict` writes for an image or a study."""

    model_config = ConfigDict(extra="allow")

    fracture_probability: float = Field(ge=0, le=1)
    decision: Literal["abnormal", "normal"]
    operating_point: str = Field(description="the named threshold used, e.g. youden")
    threshold: float
    body_part: BodyPart
    body_part_used: Literal["given", "predicted"]
    body_part_probabilities: dict[str, float]


class ImageAnswer(Prediction):
    """One radiograph's prediction."""

    filename: str
    body_part_source: Literal["request", "dicom", "predicted"]
    warnings: list[str] = Field(description="one line each: decoded, but not cleanly (e.g. a cut file)")
    image_png: str | None = Field(None, description="with cam=true: the image (base64 PNG, at most 512 px)")
    cam_png: str | None = Field(None, description="with cam=true: the Grad-CAM overlay (base64 PNG)")


class SkippedView(BaseModel):
    """A view of a study that could not be used, and why."""

    filename: str
    error: str = Field(description="machine-readable code, as in an error answer")
    detail: str


class StudyAnswer(Prediction):
    """A study: the mean probability of its usable views, computed as `mura predict --study` does."""

    kind: Literal["study"]
    views: int = Field(ge=1, description="views used")
    views_failed: int = Field(ge=0, description="views skipped")
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
    400: "bad request: malformed multipart, missing file, unknown body part, bad cam value, too many files",
    408: "the request body did not arrive within the server's deadline",
    413: "the request body is over the upload limit",
    415: "not multipart/form-data, or a file that is not PNG, JPEG or DICOM by its content",
    422: "the image cannot be used: undecodable, too large in pixels, too small, or no model answer",
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

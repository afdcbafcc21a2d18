"""The HTTP service: a JSON API around one loaded Predictor, plus a one-page web front end.

Endpoints: `POST /v1/predict` (one image), `POST /v1/predict/study` (several views, probability =
mean), `GET /v1/model`, `GET /healthz`, `GET /` (the page), `GET /docs` (OpenAPI).

Refusals, always JSON `{"error": code, "detail": message}`:
- 400 `bad_request`: malformed multipart, missing file, unknown body part, too many files;
- 413 `payload_too_large`: body over `max_upload_bytes` (announced Content-Length, or counted while reading);
- 415 `unsupported_media_type`: not PNG/JPEG/DICOM by magic bytes (or not multipart at all);
- 422 `undecodable_image`: the bytes do not decode; 422 `image_too_large`: the header declares more than
  `max_pixels` pixels (decompression bomb: the request was small, its content is what cannot be processed);
- 503 `busy` + Retry-After: all `workers + max_queue` slots are taken.
Uploads stay in memory (see uploads.py) and are never logged.
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse

from mura.constants import BODY_PARTS, UNKNOWN_BODY_PART, body_part_index
from mura.service.analysis import Explainer, SupportsPredictImages, predict_uploads, study_summary
from mura.service.engine import InferenceEngine
from mura.service.errors import ServiceError, bad_request
from mura.service.uploads import MultipartForm, check_content_length, read_multipart

log = logging.getLogger(__name__)

DEFAULT_MAX_UPLOAD_BYTES = 32 * 1024 * 1024
DEFAULT_MAX_PIXELS = 64_000_000  # 8,000 x 8,000: three times a large detector plate
DEFAULT_MAX_STUDY_FILES = 16
TRUE_WORDS = ("1", "true", "yes", "on")


def _upload_body(multiple: bool) -> dict[str, Any]:
    """OpenAPI description of the multipart body (the app parses it itself, so FastAPI cannot infer it)."""
    file_schema = {"type": "string", "format": "binary"}
    files = {"files": {"type": "array", "items": file_schema}} if multiple else {"file": file_schema}
    required = ["files"] if multiple else ["file"]
    properties = {
        **files,
        "body_part": {
            "type": "string",
            "enum": list(BODY_PARTS),
            "description": "omit to let the model predict it",
        },
        "cam": {"type": "boolean", "description": "include the image and its Grad-CAM overlay as base64 PNG"},
    }
    schema = {"type": "object", "properties": properties, "required": required}
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": schema}}}}


def _body_part(form: MultipartForm) -> int:
    text = form.fields.get("body_part", "").strip()
    if not text:
        return UNKNOWN_BODY_PART
    index = body_part_index(text)
    if index == UNKNOWN_BODY_PART:
        raise bad_request(f"unknown body_part {text[:40]!r} (one of {', '.join(BODY_PARTS)})")
    return index


def _wants_cam(request: Request, form: MultipartForm) -> bool:
    value = form.fields.get("cam", request.query_params.get("cam", ""))
    return value.strip().lower() in TRUE_WORDS


def create_app(
    predictor: SupportsPredictImages,
    *,
    explainer: Explainer | None = None,
    model_info: dict[str, Any] | None = None,
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_queue: int = 8,
    workers: int = 1,
    max_study_files: int = DEFAULT_MAX_STUDY_FILES,
) -> FastAPI:
    """Build the app around an already loaded predictor (the model is loaded once, by the caller).

    `explainer(image, body_part) -> RGB overlay` answers `cam=true`; without one such requests get 400.
    """
    engine = InferenceEngine(workers=workers, max_queue=max_queue)
    page = resources.files("mura.service").joinpath("static/index.html").read_text(encoding="utf-8")

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        yield
        engine.shutdown()

    app = FastAPI(
        title="mura",
        summary="Fracture / abnormality detection on musculoskeletal radiographs",
        version="1",
        lifespan=lifespan,
    )
    app.state.engine = engine

    @app.exception_handler(ServiceError)
    async def _service_error(_: Request, exc: ServiceError) -> JSONResponse:
        return JSONResponse(
            {"error": exc.code, "detail": exc.detail}, status_code=exc.status, headers=exc.headers
        )

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        # Logged by type only: the message of an exception raised mid-analysis could quote upload data.
        log.error("request failed with %s", type(exc).__name__)
        return JSONResponse({"error": "internal_error", "detail": "the server failed on this request"}, 500)

    async def _predict(request: Request, max_files: int) -> list[dict[str, Any]]:
        check_content_length(request.headers.get("content-length"), max_upload_bytes)
        async with engine.slot():
            form = await read_multipart(
                request.headers.get("content-type"),
                request.stream(),
                max_bytes=max_upload_bytes,
                max_files=max_files,
            )
            if not form.files:
                raise bad_request("no file uploaded (multipart field 'file' or 'files')")
            body_part = _body_part(form)
            cam = _wants_cam(request, form)
            if cam and explainer is None:
                raise bad_request("this server has no Grad-CAM explainer configured")
            records = await engine.run(
                predict_uploads,
                predictor,
                form.files,
                body_part,
                max_pixels,
                engine.gate,
                explainer if cam else None,
            )
        return records

    @app.post("/v1/predict", openapi_extra=_upload_body(multiple=False), summary="Predict one radiograph")
    async def predict(request: Request) -> dict[str, Any]:
        records = await _predict(request, max_files=1)
        return records[0]

    @app.post("/v1/predict/study", openapi_extra=_upload_body(multiple=True), summary="Predict a study")
    async def predict_study(request: Request) -> dict[str, Any]:
        records = await _predict(request, max_files=max_study_files)
        return {**study_summary(records), "images": records}

    @app.get("/v1/model", summary="Describe the served model")
    async def model() -> dict[str, Any]:
        return model_info or {}

    @app.get("/healthz", summary="Liveness and load")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "in_flight": engine.admitted, "capacity": engine.capacity}

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(page)

    return app

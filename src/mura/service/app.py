"""The HTTP service: a JSON API around one loaded Predictor, plus a one-page web front end.

Endpoints: `POST /v1/predict` (one image), `POST /v1/predict/study` (several views, probability =
mean of the usable ones, the others listed under `skipped`; `score_all=true` scores out-of-scope
uploads too, for research), `GET /v1/model`, `GET /healthz`,
`GET /` (the page), `GET /openapi.json` (every answer is a model in schemas.py), `GET /docs` (Swagger UI,
only with `docs=True`: it loads its assets from a CDN, which an offline hospital network cannot reach
and which would learn of every visit).

With `auth_tokens`, the `/v1/` routes need `Authorization: Bearer TOKEN` (401 otherwise);
`/healthz` (probed by load balancers; it shows load only), the page (it asks for the token) and the
schema stay open. With `allowed_hosts`, another Host header gets a plain-text 400 from Starlette's
TrustedHostMiddleware. Every answer carries the headers of `security.SECURITY_HEADERS`.

A request's body is read first, under a deadline and a cap on bodies read at once; only then does it
take an inference slot, so slow or stalled uploads cannot lock the model away from other clients.

Refusals, always JSON `{"error": code, "detail": message}`:
- 400 `bad_request`: malformed multipart, missing file, unknown body part, bad `cam` or `score_all`,
  too many files;
- 401 `unauthorized` + WWW-Authenticate: Bearer: no valid token (when the server has tokens);
- 408 `request_timeout`: the body did not arrive within `body_timeout_s`;
- 413 `payload_too_large`: body over `max_upload_bytes` (announced Content-Length, or counted while reading);
- 415 `unsupported_media_type`: not PNG/JPEG/DICOM by magic bytes (or not multipart at all);
- 422 `undecodable_image`: the bytes do not decode, or the image is under 32 px a side;
  422 `image_too_large`: the header declares more than `max_pixels` pixels (decompression bomb: the
  request was small, its content is what cannot be processed); 422 `no_usable_view`: a study none of
  whose views could be used (with `skipped`); 422 `not_one_study`: DICOM views of two patients or studies;
- 503 `busy` + Retry-After: `max_reading` bodies are being read, or all `workers + max_queue` slots are taken.
Uploads stay in memory (see uploads.py) and are never logged.
"""

from __future__ import annotations

import asyncio
import logging
import traceback
from collections.abc import Sequence
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import ClientDisconnect

from mura.service.analysis import SupportsPredictImages, predict_uploads, study_summary
from mura.service.dicom_answer import DICOM_MEDIA_TYPE, study_report_bytes, wants_dicom
from mura.service.engine import Admission, InferenceEngine
from mura.service.errors import ServiceError, bad_request, request_timeout
from mura.service.form_fields import body_part, switch, upload_body
from mura.service.schemas import Health, ImageAnswer, StudyAnswer, error_responses
from mura.service.security import (
    UNAUTHORIZED_RESPONSES,
    BearerTokens,
    SecurityHeaders,
    docs_policy,
    page_policy,
)
from mura.service.uploads import MultipartForm, check_content_length, read_multipart
from mura.service.viewer import Explainer

log = logging.getLogger(__name__)

DEFAULT_MAX_UPLOAD_BYTES = 32 * 1024 * 1024
DEFAULT_MAX_PIXELS = 64_000_000  # 8,000 x 8,000: three times a large detector plate
DEFAULT_MAX_STUDY_FILES = 16
DEFAULT_BODY_TIMEOUT_S = 30.0  # a 32 MB upload at ~1 MB/s
DEFAULT_MAX_READING = 16  # bodies received at once: with the 32 MB limit, at most 512 MB in flight


def _internal_error(exc: Exception) -> ServiceError:
    """A failure in model work as one log line: type and place only, since the message of an exception
    raised mid-analysis could quote upload data (a traceback would print it)."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" at {Path(frames[-1].filename).name}:{frames[-1].lineno} in {frames[-1].name}" if frames else ""
    log.error("prediction failed with %s%s", type(exc).__name__, where)
    return ServiceError(500, "internal_error", "the server failed on this request")


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
    body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S,
    max_reading: int = DEFAULT_MAX_READING,
    auth_tokens: Sequence[str] | None = None,
    allowed_hosts: Sequence[str] | None = None,
    docs: bool = False,
) -> FastAPI:
    """Build the app around an already loaded predictor (the model is loaded once, by the caller).

    `explainer.heatmap(image, body_part)` answers `cam=true`; without one such requests get 400.
    `auth_tokens`: the bearer tokens the `/v1/` routes accept (None: no authentication);
    `allowed_hosts`: the Host names accepted (None: any, for a caller that checks them itself).
    """
    if body_timeout_s <= 0:
        raise ValueError("body_timeout_s must be > 0")
    engine = InferenceEngine(workers=workers, max_queue=max_queue)
    reading = Admission(max_reading, lambda: 1)
    page = resources.files("mura.service").joinpath("static/index.html").read_text(encoding="utf-8")
    page_headers = {"Content-Security-Policy": page_policy(page)}
    auth = [] if auth_tokens is None else [BearerTokens(auth_tokens).dependency()]
    v1 = APIRouter(dependencies=auth, responses=UNAUTHORIZED_RESPONSES if auth else None)

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        yield
        engine.shutdown()

    app = FastAPI(
        title="mura",
        summary="Fracture / abnormality detection on musculoskeletal radiographs",
        version="1",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    if allowed_hosts is not None:
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts))
    app.add_middleware(SecurityHeaders)  # added last: outermost, so the Host refusals carry the headers too
    app.state.engine = engine
    app.state.reading = reading

    @app.exception_handler(ServiceError)
    async def _service_error(_: Request, exc: ServiceError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(ClientDisconnect)
    async def _client_gone(request: Request, _: ClientDisconnect) -> Response:
        # Routine (a closed tab, a dropped link): one line, no traceback; nobody is left to answer.
        log.warning("client disconnected during the upload to %s", request.url.path)
        return Response(status_code=400)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        # Outside model work; Starlette logs these with their traceback after this answer.
        log.error("request failed with %s", type(exc).__name__)
        return JSONResponse({"error": "internal_error", "detail": "the server failed on this request"}, 500)

    async def _read_form(request: Request, max_files: int) -> MultipartForm:
        """The whole body in memory, within the deadline; no inference slot is held meanwhile."""
        check_content_length(request.headers.get("content-length"), max_upload_bytes)
        async with reading.slot():
            body = read_multipart(
                request.headers.get("content-type"),
                request.stream(),
                max_bytes=max_upload_bytes,
                max_files=max_files,
            )
            try:
                form = await asyncio.wait_for(body, body_timeout_s)
            except asyncio.TimeoutError:  # not yet the builtin TimeoutError on Python 3.10
                raise request_timeout(body_timeout_s) from None
        if not form.files:
            raise bad_request("no file uploaded (multipart field 'file' or 'files')")
        return form

    async def _predict(
        request: Request, max_files: int, study: bool
    ) -> tuple[list[ImageAnswer], list[dict[str, str]]]:
        form = await _read_form(request, max_files)
        part, cam = body_part(form, predictor.body_parts), switch(request, form, "cam")
        score_all = switch(request, form, "score_all")  # research only: see form_fields.SCORE_ALL_TEXT
        if cam and explainer is None:
            raise bad_request("this server has no Grad-CAM explainer configured")
        async with engine.slot():
            try:
                return await engine.run(
                    predict_uploads,
                    predictor,
                    form.files,
                    part,
                    max_pixels,
                    engine.gate,
                    explainer if cam else None,
                    skip_bad=study,
                    score_all=score_all,
                )
            except ServiceError:
                raise
            except Exception as exc:
                raise _internal_error(exc) from None

    @v1.post(
        "/v1/predict",
        openapi_extra=upload_body(
            multiple=False, max_files=1, cam=explainer is not None, body_parts=predictor.body_parts
        ),
        summary="Predict one radiograph",
        response_model=ImageAnswer,
        response_model_exclude_unset=True,
        responses=error_responses(),
    )
    async def predict(request: Request) -> ImageAnswer:
        answers, _ = await _predict(request, max_files=1, study=False)
        return answers[0]

    @v1.post(
        "/v1/predict/study",
        openapi_extra=upload_body(
            multiple=True,
            max_files=max_study_files,
            cam=explainer is not None,
            body_parts=predictor.body_parts,
        ),
        summary="Predict a study (views that cannot be used are skipped and listed)",
        response_model=StudyAnswer,
        response_model_exclude_unset=True,
        responses={
            200: {
                "description": "the study as JSON; with `Accept: application/dicom`, its DICOM SR",
                "content": {DICOM_MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}}},
            },
            **error_responses(study=True),
        },
    )
    async def predict_study(request: Request) -> Any:
        if wants_dicom(request.headers.get("accept")):
            form = await _read_form(request, max_study_files)
            async with engine.slot():
                sr = await engine.run(study_report_bytes, predictor, form.files, explainer, engine.gate)
            return Response(sr, media_type=DICOM_MEDIA_TYPE)
        answers, skipped = await _predict(request, max_files=max_study_files, study=True)
        return study_summary(answers, skipped, predictor.tiers)

    @v1.get("/v1/model", summary="Describe the served model")
    async def model() -> dict[str, Any]:
        return model_info or {}

    @app.get("/healthz", summary="Liveness and load", response_model=Health)
    async def healthz() -> dict[str, Any]:
        return {
            "status": "ok",
            "in_flight": engine.admitted,
            "capacity": engine.capacity,
            "reading": reading.in_use,
            "reading_capacity": reading.capacity,
        }

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(page, headers=page_headers)

    if docs:

        @app.get("/docs", include_in_schema=False)
        async def swagger() -> HTMLResponse:
            html = get_swagger_ui_html(openapi_url=app.openapi_url or "", title="mura API")
            text = html.body.decode()
            html.headers["Content-Security-Policy"] = docs_policy(text, "https://cdn.jsdelivr.net")
            return html

    app.include_router(v1)
    return app

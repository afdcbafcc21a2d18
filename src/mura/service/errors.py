"""HTTP errors the service answers with: a status, a stable machine-readable code and one line for people.

Every refusal goes through `ServiceError` so that clients always get the same JSON shape
(`{"error": code, "detail": message}`) and the server never leaks a traceback.
"""

from __future__ import annotations

from typing import Any


class ServiceError(Exception):
    """A request the service refuses; rendered as JSON by the app's exception handler."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = headers or {}
        self.extra = extra or {}  # more fields of the JSON answer (e.g. a study's skipped views)

    def body(self) -> dict[str, Any]:
        return {"error": self.code, "detail": self.detail, **self.extra}


def payload_too_large(limit_bytes: int) -> ServiceError:
    return ServiceError(413, "payload_too_large", f"upload exceeds the limit of {limit_bytes} bytes")


def unsupported_type(filename: str) -> ServiceError:
    return ServiceError(
        415, "unsupported_media_type", f"{filename}: not a PNG, JPEG or DICOM file (checked by its content)"
    )


def undecodable(filename: str, reason: str) -> ServiceError:
    return ServiceError(422, "undecodable_image", f"{filename}: {reason}")


def too_many_pixels(filename: str, pixels: int | None, limit: int) -> ServiceError:
    size = f"image of {pixels} pixels" if pixels is not None else "image"
    return ServiceError(
        422,
        "image_too_large",
        f"{filename}: {size} is over the limit of {limit} pixels (decompression guard)",
    )


def bad_request(detail: str) -> ServiceError:
    return ServiceError(400, "bad_request", detail)


def busy(retry_after_s: int) -> ServiceError:
    return ServiceError(
        503,
        "busy",
        "the server is at capacity; retry later",
        headers={"Retry-After": str(retry_after_s)},
    )


def request_timeout(seconds: float) -> ServiceError:
    # The rest of the body may still be on its way: the connection cannot be reused.
    return ServiceError(
        408,
        "request_timeout",
        f"the request body did not arrive within {seconds:g} s",
        headers={"Connection": "close"},
    )

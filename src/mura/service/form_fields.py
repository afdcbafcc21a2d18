"""What an upload request may say besides its files, and how the OpenAPI schema describes it.

The app parses multipart bodies itself (so it can cap and time them), which means FastAPI cannot infer
the request body; it is described here, next to the code that reads the same fields, so the schema and
the parsing cannot drift apart. Switches (`cam`, `score_all`) are accepted as a form field or a query
parameter, and an unreadable value is refused (400) rather than taken as off.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from starlette.requests import Request

from mura.constants import BODY_PARTS, given_body_part
from mura.service.errors import bad_request
from mura.service.uploads import MultipartForm

TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("", "0", "false", "no", "off")
CAM_TEXT = "include what a viewer draws: the film and its Grad-CAM heatmap, as base64 PNG layers"
SCORE_ALL_TEXT = (
    "research only, off by default: score uploads outside the model's scope too (CT, photographs, other "
    "body parts, ...) instead of answering `not_assessed`; the scope gate's reasons become `warnings` "
    "('out of scope, scored anyway: ...'). An `Accept: application/dicom` answer is always gated"
)


def upload_body(multiple: bool, max_files: int, cam: bool, body_parts: Sequence[str]) -> dict[str, Any]:
    """OpenAPI description of the multipart body and its switches (`cam` only on a server with a Grad-CAM
    explainer: elsewhere `cam=true` gets 400); `body_parts` are the served model's."""
    file_schema = {"type": "string", "format": "binary"}
    files = (
        {"files": {"type": "array", "items": file_schema, "minItems": 1, "maxItems": max_files}}
        if multiple
        else {"file": file_schema}
    )
    properties: dict[str, Any] = {
        **files,
        "body_part": {
            "type": "string",
            "enum": list(body_parts),
            "description": "omit to let the model predict it (DICOM files: read from their tags)",
        },
        "score_all": {"type": "boolean", "default": False, "description": SCORE_ALL_TEXT},
    }
    switches = {"score_all": SCORE_ALL_TEXT}
    if cam:
        properties["cam"] = {"type": "boolean", "description": CAM_TEXT}
        switches["cam"] = CAM_TEXT
    schema = {"type": "object", "properties": properties, "required": ["files" if multiple else "file"]}
    parameters = [
        {"name": name, "in": "query", "schema": {"type": "boolean", "default": False}, "description": text}
        for name, text in switches.items()
    ]
    body = {"required": True, "content": {"multipart/form-data": {"schema": schema}}}
    return {"parameters": parameters, "requestBody": body}


def body_part(form: MultipartForm, body_parts: Sequence[str]) -> int:
    """The BODY_PARTS index of the part the request names, or -1 for none; 400 for a name that is not one
    of the served model's `body_parts` (its head was trained on those only)."""
    name = form.fields.get("body_part", "")
    try:
        index = given_body_part(name)
    except ValueError:
        index = None
    if index is None or (index >= 0 and BODY_PARTS[index] not in body_parts):
        raise bad_request(
            f"body_part {name.strip()[:40]!r} is not one this model knows ({', '.join(body_parts)})"
        )
    return index


def switch(request: Request, form: MultipartForm, name: str) -> bool:
    """A yes/no switch from the form, else the query string; off when absent, 400 when unreadable."""
    value = form.fields.get(name, request.query_params.get(name, "")).strip().lower()
    if value not in TRUE_WORDS + FALSE_WORDS:
        raise bad_request(f"{name} must be true or false, not {value[:20]!r}")
    return value in TRUE_WORDS

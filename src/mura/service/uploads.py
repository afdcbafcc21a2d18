"""Read a multipart upload into memory, never onto disk, with the size limit enforced while reading.

Starlette's own form parser spools files over 1 MB to temporary files; radiographs are patient data,
so the service parses the stream itself (python-multipart's streaming parser) into byte buffers and
stops reading as soon as the body passes the limit, whatever Content-Length claimed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from mura.service.errors import ServiceError, bad_request, payload_too_large

MAX_FIELD_BYTES = 4096  # plain form fields (body_part, cam) are short words


@dataclass
class UploadedFile:
    field: str
    filename: str
    data: bytes


@dataclass
class MultipartForm:
    files: list[UploadedFile] = field(default_factory=list)
    fields: dict[str, str] = field(default_factory=dict)


def check_content_length(value: str | None, max_bytes: int) -> None:
    """Refuse early when the client announces a body over the limit (it is enforced again while reading)."""
    if value is None:
        return
    try:
        announced = int(value)
    except ValueError:
        raise bad_request("Content-Length is not a number") from None
    if announced > max_bytes:
        raise payload_too_large(max_bytes)


class _Collector:
    """Callbacks for python-multipart that keep every part in memory."""

    def __init__(self, max_files: int) -> None:
        self.form = MultipartForm()
        self.max_files = max_files
        self.finished = False
        self._header_name = b""
        self._header_value = b""
        self._disposition = b""
        self._buffer = bytearray()
        self._name = ""
        self._filename: str | None = None

    def callbacks(self) -> dict:
        return {
            "on_part_begin": self.on_part_begin,
            "on_part_data": self.on_part_data,
            "on_part_end": self.on_part_end,
            "on_header_field": self.on_header_field,
            "on_header_value": self.on_header_value,
            "on_header_end": self.on_header_end,
            "on_headers_finished": self.on_headers_finished,
            "on_end": self.on_end,
        }

    def on_part_begin(self) -> None:
        self._disposition = b""
        self._buffer = bytearray()
        self._filename = None

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        if self._header_name.lower() == b"content-disposition":
            self._disposition = self._header_value
        self._header_name = self._header_value = b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        if b"name" not in options:
            raise bad_request("multipart part without a name")
        self._name = options[b"name"].decode("utf-8", "replace")
        if b"filename" in options:
            self._filename = options[b"filename"].decode("utf-8", "replace") or "upload"
            if len(self.form.files) >= self.max_files:
                raise bad_request(f"too many files (at most {self.max_files})")

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._filename is None and len(self._buffer) + (end - start) > MAX_FIELD_BYTES:
            raise bad_request(f"form field {self._name!r} is too long")
        self._buffer += data[start:end]

    def on_part_end(self) -> None:
        if self._filename is None:
            self.form.fields[self._name] = self._buffer.decode("utf-8", "replace")
        else:
            self.form.files.append(UploadedFile(self._name, self._filename, bytes(self._buffer)))
        self._buffer = bytearray()

    def on_end(self) -> None:
        self.finished = True


async def read_multipart(
    content_type: str | None, stream: AsyncIterator[bytes], *, max_bytes: int, max_files: int
) -> MultipartForm:
    """Parse a multipart/form-data body chunk by chunk; 413 as soon as more than `max_bytes` arrive."""
    mime, params = parse_options_header(content_type or "")
    if mime != b"multipart/form-data" or b"boundary" not in params:
        raise ServiceError(415, "unsupported_media_type", "send the image as multipart/form-data")
    collector = _Collector(max_files)
    try:
        parser = MultipartParser(params[b"boundary"], collector.callbacks())
        received = 0
        async for chunk in stream:
            received += len(chunk)
            if received > max_bytes:
                raise payload_too_large(max_bytes)
            parser.write(chunk)
        parser.finalize()
    except FormParserError as exc:
        raise bad_request(f"malformed multipart body ({exc})") from None
    if not collector.finished:
        raise bad_request("malformed multipart body (truncated)")
    return collector.form

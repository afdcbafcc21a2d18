"""Who may talk to the service and what every answer tells the browser: tokens, Host names, headers.

- Bearer tokens come from a file (one per line) that only its owner may read, as ssh insists for keys;
  only their SHA-256 is kept, and a presented token is compared with every one in constant time.
- The Host header must name this server: a web page that rebinds its own DNS name to 127.0.0.1
  would otherwise reach a loopback-only service from the user's browser.
- Every answer carries headers that stop MIME sniffing, framing, referrers and caching (answers carry
  patient data); the page gets a Content-Security-Policy made from the hashes of its own inline code,
  so no other script can run in it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mura.errors import MuraError
from mura.secret_files import read_secret_file
from mura.service.errors import ServiceError
from mura.service.schemas import ErrorAnswer

MIN_TOKEN_LENGTH = 16
TOKEN_PATTERN = re.compile(r"[A-Za-z0-9._~+/=-]+")  # RFC 6750's b64token: what fits in the header
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")
WILDCARD_BINDS = ("", "0.0.0.0", "::")
NEW_TOKEN_HINT = "python -c 'import secrets; print(secrets.token_urlsafe(32))'"

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",  # JSON answers run nothing
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",  # predictions and images are patient data; nothing here is worth caching
}

UNAUTHORIZED_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {
        "model": ErrorAnswer,
        "description": "no valid bearer token (header `Authorization: Bearer TOKEN`)",
        "headers": {"WWW-Authenticate": {"description": "Bearer", "schema": {"type": "string"}}},
    }
}


def load_tokens(path: Path) -> tuple[str, ...]:
    """The tokens of a token file: one per line; blank lines and lines starting with # are skipped."""
    text = read_secret_file(path, f"token file {path}")
    tokens = []
    for number, line in enumerate(text.splitlines(), start=1):
        token = line.strip()
        if not token or token.startswith("#"):
            continue
        if len(token) < MIN_TOKEN_LENGTH or not TOKEN_PATTERN.fullmatch(token):
            raise MuraError(
                f"token file {path}, line {number}: a token needs {MIN_TOKEN_LENGTH}+ characters of "
                f"A-Z a-z 0-9 - . _ ~ + / =; make one with {NEW_TOKEN_HINT}"
            )
        tokens.append(token)
    if not tokens:
        raise MuraError(f"token file {path}: holds no token; add one per line, made with {NEW_TOKEN_HINT}")
    return tuple(tokens)


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


class BearerTokens:
    """The accepted tokens, as SHA-256 digests (equal length, so the comparison reveals no length)."""

    def __init__(self, tokens: Sequence[str]) -> None:
        if not tokens:
            raise MuraError("auth_tokens is empty; give at least one token, or None for no authentication")
        self._digests = [_digest(token) for token in tokens]
        self.scheme = HTTPBearer(auto_error=False, description="a token from the server's token file")

    def accepts(self, token: str) -> bool:
        given = _digest(token)
        matched = False
        for digest in self._digests:  # no early exit: the time does not depend on which token matched
            matched |= hmac.compare_digest(given, digest)
        return matched

    def dependency(self) -> Any:
        """A FastAPI dependency that answers 401 unless the request carries an accepted token."""

        async def require_token(
            credentials: HTTPAuthorizationCredentials | None = Depends(self.scheme),
        ) -> None:
            if credentials is None or not self.accepts(credentials.credentials):
                raise ServiceError(
                    401,
                    "unauthorized",
                    "a valid bearer token is required (header Authorization: Bearer TOKEN)",
                    headers={"WWW-Authenticate": 'Bearer realm="mura"'},
                )

        return Depends(require_token)


def _host_name(host: str) -> str:
    """How a Host header spells `host`: lower case, IPv6 literals in brackets."""
    host = host.strip().lower()
    try:
        if ipaddress.ip_address(host.strip("[]")).version == 6:
            return f"[{host.strip('[]')}]"
    except ValueError:
        pass
    return host


def allowed_hosts(bind_host: str, extra: Sequence[str] = ()) -> list[str]:
    """Host names requests may carry: loopback, the bind address (unless a wildcard) and `extra`."""
    names = [*LOOPBACK_HOSTS, *([] if bind_host in WILDCARD_BINDS else [bind_host]), *extra]
    return list(dict.fromkeys(_host_name(name) for name in names))


def _inline_hashes(html: str, tag: str) -> str:
    blocks = re.findall(rf"<{tag}>(.*?)</{tag}>", html, flags=re.DOTALL)
    digests = (base64.b64encode(hashlib.sha256(block.encode()).digest()).decode() for block in blocks)
    return " ".join(f"'sha256-{digest}'" for digest in digests)


def page_policy(html: str) -> str:
    """The page's CSP: its own inline script and style only, images from data: URLs, requests to us."""
    return (
        f"default-src 'none'; script-src {_inline_hashes(html, 'script')}; "
        f"style-src {_inline_hashes(html, 'style')}; style-src-attr 'unsafe-inline'; img-src data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )


def docs_policy(html: str, cdn: str) -> str:
    """The CSP of Swagger UI (`/docs`, off unless asked for): its assets from `cdn`, requests to us."""
    return (
        f"default-src 'none'; script-src {cdn} {_inline_hashes(html, 'script')}; "
        f"style-src {cdn} 'unsafe-inline'; img-src data: https://fastapi.tiangolo.com; "
        "connect-src 'self'; base-uri 'none'; frame-ancestors 'none'"
    )


class SecurityHeaders:
    """ASGI middleware: SECURITY_HEADERS on every answer, unless the answer set that header itself."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, send_with_headers)

"""How `mura serve` runs the app under uvicorn so that idle or half-open connections cannot lock it up.

uvicorn counts every open connection toward `limit_concurrency` and its h11 protocol has no deadline
for a request head: its keep-alive timer starts only after a first response and stops at the first
byte received. Seventy clients that send half a request head and then nothing held a server with a
limit of 68 at 503 for everyone, `/healthz` included, for as long as they liked. Here each connection
that is not being answered (waiting for a head, or still sending a body nobody reads any more) must
start its next request within `head_timeout_s`, and at most `max_idle` such connections are kept: a
new one closes the longest-idle one instead of being refused. So idle sockets cost their sender a
connection each and can no longer exhaust the slots of connections that are being served.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from mura.errors import MuraError

log = logging.getLogger(__name__)

HEADROOM = 64  # connections beyond idle + request slots: quick answers (/healthz, the page, refusals)


@dataclass(frozen=True)
class ConnectionLimits:
    """Per-connection limits of the HTTP server (the app's own limits are create_app's arguments)."""

    head_timeout_s: float = 10.0  # to send a complete request head, from connect or from the last answer
    keep_alive_s: int = 5  # a silent kept-alive connection is closed after this (uvicorn's default)
    max_idle: int = 100  # connections not being answered; beyond it the longest-idle one is closed
    max_head_bytes: int = 16 * 1024  # request line + headers (h11's default; 400 above)

    def __post_init__(self) -> None:
        least = {"head_timeout_s": 0.1, "keep_alive_s": 1, "max_idle": 1, "max_head_bytes": 1024}
        for name, lowest in least.items():
            if (value := getattr(self, name)) < lowest:
                raise MuraError(f"connection limit {name} {value} is too low; use {lowest} or more")


class IdleConnections:
    """The connections of one server that are not being answered, longest-idle first."""

    def __init__(self, limits: ConnectionLimits) -> None:
        self.limits = limits
        self._idle: dict[GuardedH11Protocol, asyncio.TimerHandle] = {}

    def enter(self, connection: GuardedH11Protocol) -> None:
        """`connection` waits for its next request head: start its deadline, make room if needed."""
        timer = connection.loop.call_later(self.limits.head_timeout_s, connection.close_idle, "head timeout")
        self._idle[connection] = timer
        while len(self._idle) > self.limits.max_idle:
            oldest = next(iter(self._idle))
            self.leave(oldest)
            oldest.close_idle("too many idle connections")

    def leave(self, connection: GuardedH11Protocol) -> None:
        timer = self._idle.pop(connection, None)
        if timer is not None:
            timer.cancel()

    def __contains__(self, connection: object) -> bool:
        return connection in self._idle


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol plus a request-head deadline and a bound on idle connections."""

    def __init__(self, *args: Any, idle: IdleConnections, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._idle_connections = idle

    def _sync_idle(self) -> None:
        """Idle: open, with no answer in progress. The deadline runs from the moment it became idle."""
        answering = self.cycle is not None and not self.cycle.response_complete
        idle = not answering and not self.transport.is_closing() and self.conn.their_state is not h11.CLOSED
        if idle and self not in self._idle_connections:
            self._idle_connections.enter(self)
        elif not idle and self in self._idle_connections:
            self._idle_connections.leave(self)

    def close_idle(self, reason: str) -> None:
        self._idle_connections.leave(self)
        if not self.transport.is_closing():
            log.debug("closing an idle connection from %s: %s", self.client, reason)
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._sync_idle()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._sync_idle()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._sync_idle()

    def connection_lost(self, exc: Exception | None) -> None:
        self._idle_connections.leave(self)
        super().connection_lost(exc)


def check_tls_files(cert: Path, key: Path | None) -> None:
    """Load the certificate and key once before serving, so a wrong file is one line, not a traceback."""
    for path in (cert, key):
        if path is not None and not path.is_file():
            raise MuraError(f"TLS file {path}: not found; give the PEM certificate and its private key")
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
    except (ssl.SSLError, ValueError) as exc:
        raise MuraError(
            f"TLS certificate {cert} / key {key or cert}: cannot be loaded ({exc}); give a PEM certificate "
            "and the private key that matches it, unencrypted"
        ) from None


def uvicorn_options(
    limits: ConnectionLimits,
    request_slots: int,
    tls_cert: Path | None = None,
    tls_key: Path | None = None,
) -> dict[str, Any]:
    """Keyword arguments for `uvicorn.run` / `uvicorn.Config` that apply `limits`.

    `request_slots` is what the app admits at once (bodies read + inference slots): uvicorn's own
    connection cap sits above idle + request slots + HEADROOM, so it only ever trips on a flood of
    connections that are all being answered.
    """
    if tls_key is not None and tls_cert is None:
        raise MuraError(f"TLS key {tls_key} given without its certificate; give the certificate too")
    if tls_cert is not None:
        check_tls_files(tls_cert, tls_key)
    return {
        "http": functools.partial(GuardedH11Protocol, idle=IdleConnections(limits)),
        "timeout_keep_alive": limits.keep_alive_s,
        "h11_max_incomplete_event_size": limits.max_head_bytes,
        "limit_concurrency": limits.max_idle + request_slots + HEADROOM,
        "server_header": False,  # do not announce the server software
        "ssl_certfile": str(tls_cert) if tls_cert else None,
        "ssl_keyfile": str(tls_key) if tls_key else None,
    }

"""DICOM TLS (PS3.15 B.1, BCP 195): the TLS contexts the node listens and forwards with.

AE titles are names, not authentication: anyone who can reach the port can claim any of them. TLS
with client certificates is what authenticates a peer, so the listener requires a certificate signed
by the given CA as soon as a CA is given. Both sides use TLS 1.2 or later with Python's default
(modern, forward-secret) ciphers; the forward side checks the peer's certificate and host name.

pynetdicom wraps each accepted socket on its single accepting thread, where the handshake would run:
one client that connects and stays silent would then stop every other connection. The listener's
context therefore defers the handshake to the association's own thread (OpenSSL performs it on the
first read) and bounds every blocking read and write on the socket by `io_timeout`.
"""

from __future__ import annotations

import socket
import ssl
from pathlib import Path
from typing import Any

from mura.errors import MuraError


class _DeferredHandshakeContext(ssl.SSLContext):
    """A server context whose sockets do their handshake on first use, each under a time limit."""

    io_timeout: float = 30.0

    def wrap_socket(self, sock: socket.socket, *args: Any, **kwargs: Any) -> ssl.SSLSocket:  # type: ignore[override]
        sock.settimeout(self.io_timeout)
        kwargs["do_handshake_on_connect"] = False
        return super().wrap_socket(sock, *args, **kwargs)


def listener_context(cert: Path, key: Path | None, ca: Path | None, io_timeout: float) -> ssl.SSLContext:
    """TLS for receiving: this node's certificate (+ key); with `ca`, peers must present one it signed."""
    context = _DeferredHandshakeContext(ssl.PROTOCOL_TLS_SERVER)
    context.io_timeout = io_timeout
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    _load_chain(context, cert, key, "tls_cert")
    if ca is not None:
        _load_ca(context, ca, "tls_ca")
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def forward_context(ca: Path, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    """TLS for sending: the destination's certificate must be signed by `ca` and name its host;
    `cert` (+ `key`) is this node's client certificate, for destinations that require one."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies the certificate and the host name
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    _load_ca(context, ca, "forward_tls_ca")
    if cert is not None:
        _load_chain(context, cert, key, "forward_tls_cert")
    elif key is not None:
        raise MuraError(f"forward_tls_key {key}: given without its certificate; give forward_tls_cert too")
    return context


def _load_chain(context: ssl.SSLContext, cert: Path, key: Path | None, name: str) -> None:
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or str(exc)
        raise MuraError(
            f"{name} {cert}{f' (key {key})' if key else ''}: cannot be loaded ({reason}); give a PEM "
            "certificate and its unencrypted private key"
        ) from None


def _load_ca(context: ssl.SSLContext, ca: Path, name: str) -> None:
    try:
        context.load_verify_locations(cafile=ca)
    except (OSError, ssl.SSLError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or str(exc)
        raise MuraError(
            f"{name} {ca}: cannot be loaded ({reason}); give the CA certificate(s) in PEM"
        ) from None

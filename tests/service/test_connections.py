"""Idle and half-open connections against the server as `mura serve` configures it (live, on loopback).

The probe that found the problem: 70 sockets that sent half a request head kept every request,
`/healthz` included, at 503 for 90 s, because uvicorn counted them toward `limit_concurrency`
and never timed them out.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import httpx
import pytest

from mura.inference.predictor import Predictor
from mura.service.app import create_app
from mura.service.server import ConnectionLimits, uvicorn_options

HALF_HEAD = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "
REQUEST_SLOTS = 1 + 8 + 16  # mura serve's defaults: workers + max_queue + max_reading


@pytest.fixture(scope="module")
def predictor(tiny_checkpoint: Path) -> Predictor:
    return Predictor.from_checkpoints([tiny_checkpoint], device="cpu", runtime="torch")


class HeldPredictor:
    """Holds its inference slot until released, as a long model run would."""

    def __init__(self, inner: Predictor) -> None:
        self.inner, self.entered, self.release = inner, threading.Event(), threading.Event()

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def predict_images(self, images, body_parts):
        self.entered.set()
        assert self.release.wait(30)
        return self.inner.predict_images(images, body_parts)


def half_open(url: str, count: int) -> list[socket.socket]:
    port = int(url.rsplit(":", 1)[1])
    sockets = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.sendall(HALF_HEAD)
        sockets.append(sock)
    return sockets


def closed_by_server(sock: socket.socket, within_s: float) -> bool:
    """Whether the server closes `sock` within `within_s` (it never answers a half-sent head)."""
    sock.settimeout(within_s)
    try:
        return sock.recv(1024) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_seventy_half_sent_heads_leave_healthz_and_predictions_answering(
    serve, predictor, make_radiograph, encode_image
) -> None:
    held = HeldPredictor(predictor)
    app = create_app(held, workers=1, max_queue=8)
    png = encode_image(make_radiograph("WRIST"))
    with serve(app, **uvicorn_options(ConnectionLimits(), REQUEST_SLOTS)) as url:
        stalled = half_open(url, 70)
        with httpx.Client(base_url=url, timeout=5) as http:
            try:
                upload = {"files": {"file": png}}
                busy = threading.Thread(target=http.post, args=("/v1/predict",), kwargs=upload)
                busy.start()  # the inference slot is taken for as long as the test wants
                assert held.entered.wait(10)
                started = time.monotonic()
                health = http.get("/healthz")
                assert health.status_code == 200 and health.json()["in_flight"] == 1
                assert time.monotonic() - started < 2
                held.release.set()
                busy.join(10)
                answer = http.post("/v1/predict", files={"file": ("wrist.png", png)})
                assert answer.status_code == 200, answer.text
            finally:
                held.release.set()
                for sock in stalled:
                    sock.close()


@pytest.mark.parametrize("after_a_response", [False, True])
def test_a_trickled_request_head_is_closed_at_the_head_deadline(serve, predictor, after_a_response) -> None:
    """A byte every 0.1 s never completes a head: the connection is closed at the deadline, not kept."""
    limits = ConnectionLimits(head_timeout_s=0.5, keep_alive_s=30)
    with serve(create_app(predictor), **uvicorn_options(limits, REQUEST_SLOTS)) as url:
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            if after_a_response:  # a kept-alive connection gets the same deadline for its next head
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                assert sock.recv(4096).startswith(b"HTTP/1.1 200")
            started = time.monotonic()
            closed = False
            try:
                for byte in HALF_HEAD * 10:
                    sock.sendall(bytes([byte]))
                    if closed_by_server(sock, 0.1):
                        closed = True
                        break
            except (BrokenPipeError, ConnectionResetError):
                closed = True
            elapsed = time.monotonic() - started
        assert closed and 0.4 <= elapsed < 3, elapsed


def test_beyond_max_idle_the_longest_idle_connections_are_closed_first(serve, predictor) -> None:
    limits = ConnectionLimits(max_idle=5)
    with serve(create_app(predictor), **uvicorn_options(limits, REQUEST_SLOTS)) as url:
        stalled = half_open(url, 8)
        try:
            assert [closed_by_server(sock, 2) for sock in stalled[:3]] == [True] * 3
            with httpx.Client(base_url=url, timeout=5) as http:
                assert http.get("/healthz").status_code == 200
            # the newcomer /healthz took the place of the next longest-idle one
            assert closed_by_server(stalled[3], 2)
            assert [closed_by_server(sock, 0.2) for sock in stalled[5:]] == [False] * 3
        finally:
            for sock in stalled:
                sock.close()

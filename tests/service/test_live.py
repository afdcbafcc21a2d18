"""The service under uvicorn on loopback, with raw sockets playing slow, stalled and vanishing clients."""

from __future__ import annotations

import json
import logging
import socket
import time
from pathlib import Path

import httpx
import pytest

from mura.inference.predictor import Predictor
from mura.service.app import create_app

BOUNDARY = "stalled-upload"


@pytest.fixture(scope="module")
def predictor(tiny_checkpoint: Path) -> Predictor:
    return Predictor.from_checkpoints([tiny_checkpoint], device="cpu", runtime="torch")


@pytest.fixture(scope="module")
def wrist_png(make_radiograph, encode_image) -> bytes:
    return encode_image(make_radiograph("WRIST", abnormal=True))


def stall(base_url: str) -> socket.socket:
    """A client that sends its headers and the start of a 100 kB upload, then nothing more."""
    port = int(base_url.rsplit(":", 1)[1])
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    head = (
        "POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: 100000\r\n\r\n"
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="slow.png"\r\n\r\n'
    )
    sock.sendall(head.encode() + b"\x89PNG\r\n\x1a\n")
    return sock


def wait_for_reading(http: httpx.Client, count: int, timeout_s: float = 10) -> None:
    """Until the server reports `count` bodies being received (it has accepted what was sent)."""
    deadline = time.monotonic() + timeout_s
    while http.get("/healthz").json()["reading"] != count:
        assert time.monotonic() < deadline, f"the server never had {count} bodies in reading"
        time.sleep(0.02)


def read_response(sock: socket.socket) -> tuple[int, dict]:
    data = b""
    while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def test_stalled_uploads_do_not_lock_out_other_clients(serve, predictor, wrist_png) -> None:
    """Nine stalled uploads used to hold all nine inference slots: everyone else got 503."""
    app = create_app(predictor, workers=1, max_queue=8)
    with serve(app) as url, httpx.Client(base_url=url, timeout=10) as http:
        stalled = [stall(url) for _ in range(9)]
        try:
            wait_for_reading(http, 9)
            started = time.monotonic()
            response = http.post("/v1/predict", files={"file": ("wrist.png", wrist_png)})
            elapsed = time.monotonic() - started
            assert response.status_code == 200, response.text
            assert response.json()["path"] == "wrist.png" and elapsed < 5
            assert http.get("/healthz").json()["in_flight"] == 0  # stalled uploads hold no slot
        finally:
            for sock in stalled:
                sock.close()


def test_a_stalled_upload_gets_408_after_the_deadline(serve, predictor) -> None:
    app = create_app(predictor, body_timeout_s=0.5)
    with serve(app) as url, httpx.Client(base_url=url, timeout=10) as http:
        started = time.monotonic()
        with stall(url) as sock:
            status, body = read_response(sock)
            elapsed = time.monotonic() - started
            assert status == 408 and body["error"] == "request_timeout" and "0.5 s" in body["detail"]
            assert 0.5 <= elapsed < 5
            assert sock.recv(1024) == b""  # the connection is closed: the rest of the body is unwanted
        wait_for_reading(http, 0)


def test_too_many_bodies_at_once_get_503_and_the_server_recovers(serve, predictor, wrist_png) -> None:
    app = create_app(predictor, max_reading=2)
    with serve(app) as url, httpx.Client(base_url=url, timeout=10) as http:
        stalled = [stall(url) for _ in range(2)]
        wait_for_reading(http, 2)
        refused = http.post("/v1/predict", files={"file": ("wrist.png", wrist_png)})
        assert refused.status_code == 503 and refused.json()["error"] == "busy"
        assert int(refused.headers["retry-after"]) >= 1
        for sock in stalled:
            sock.close()
        wait_for_reading(http, 0)
        assert http.post("/v1/predict", files={"file": ("wrist.png", wrist_png)}).status_code == 200


def test_a_client_disconnect_is_one_log_line(serve, predictor, caplog) -> None:
    caplog.set_level(logging.INFO)
    app = create_app(predictor)
    with serve(app) as url, httpx.Client(base_url=url, timeout=10) as http:
        sock = stall(url)
        wait_for_reading(http, 1)
        sock.close()
        wait_for_reading(http, 0)
    gone = [r for r in caplog.records if "disconnected" in r.getMessage()]
    assert len(gone) == 1 and gone[0].getMessage() == "client disconnected during the upload to /v1/predict"
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]

"""Fixtures for the service tests: encoded uploads and the app served over real sockets (the model and
the radiographs come from the root conftest)."""

from __future__ import annotations

import contextlib
import io
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image


@pytest.fixture(scope="session")
def encode_image():
    """`encode_image(array, "PNG" | "JPEG")` -> file bytes."""

    def encode(image: np.ndarray, fmt: str = "PNG") -> bytes:
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format=fmt)
        return buffer.getvalue()

    return encode


@pytest.fixture(scope="session")
def serve():
    """`with serve(app) as base_url:` the app under uvicorn on a free loopback port."""
    return live_server


@pytest.fixture(scope="session")
def serve_cli():
    """`with serve_cli(checkpoint, log, *flags) as base_url:` `mura serve` in a subprocess."""
    return mura_serve


@contextlib.contextmanager
def live_server(app, **options) -> Iterator[str]:
    """Serve `app` with uvicorn on a free loopback port in a thread; yields the base URL, then stops it."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    # log_config=None: uvicorn's records reach the root logger, so tests can see them (caplog).
    config = uvicorn.Config(app, log_level="warning", log_config=None, lifespan="on", **options)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(20)
        sock.close()


@contextlib.contextmanager
def mura_serve(checkpoint: Path, log: Path, *flags: str) -> Iterator[str]:
    """`mura serve` as a user starts it, in a subprocess on a free loopback port; yields its base URL.

    Its output goes to `log`; a server that exits or does not answer within 180 s fails the test.
    """
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "mura", "serve", "--checkpoint", str(checkpoint)]
    command += ["--port", str(port), *flags]
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180  # imports of torch and friends are slow on a busy 2-core machine
    try:
        while True:
            if process.poll() is not None:
                pytest.fail(f"mura serve exited with {process.returncode}:\n{log.read_text()}")
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"mura serve did not answer within 180 s:\n{log.read_text()}")
            time.sleep(0.25)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()

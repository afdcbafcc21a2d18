"""Fixtures for the service tests: a real (randomly initialised, tiny) checkpoint and radiograph files."""

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
import torch
from PIL import Image

from mura.checkpoint import build_model, save_model
from mura.config import load_config
from mura.data.synth import render_image
from mura.decision import Decision
from mura.preprocessing import Preprocessing

TINY_SIZE = 32
THRESHOLDS = {"default": 0.5, "youden": 0.47}
VAL_METRICS = {"auc": 0.61, "kappa": 0.12, "loss": 0.69}
TEST_METRICS = {"data": "index.csv", "n_images": 40, "image": {"default": {"roc_auc": 0.58}}, "study": {}}


def write_tiny_checkpoint(path: Path, seed: int = 0) -> Path:
    """A custom_cnn at 32 px with random weights, saved the way training saves a best checkpoint."""
    torch.manual_seed(seed)
    cfg = load_config(overrides={"model.name": "custom_cnn", "model.size": TINY_SIZE, "model.freeze": "full"})
    model = build_model(cfg, load_pretrained=False)
    preprocessing = Preprocessing(TINY_SIZE, "stretch", 0.5, 0.25)
    return save_model(
        path,
        model,
        cfg,
        preprocessing,
        Decision(thresholds=dict(THRESHOLDS)),
        epoch=3,
        val_metrics=VAL_METRICS,
        test_metrics=TEST_METRICS,  # as `mura evaluate --record` stores them
    )


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_checkpoint(tmp_path_factory.mktemp("service_ckpt") / "best.pt")


@pytest.fixture(scope="session")
def tiny_thresholds() -> dict[str, float]:
    return dict(THRESHOLDS)


@pytest.fixture(scope="session")
def make_radiograph():
    """`make_radiograph(part, abnormal, seed, view)` -> a synthetic radiograph, uint8 [H, W]."""

    def make(part: str = "WRIST", abnormal: bool = True, seed: int = 0, view: int = 0) -> np.ndarray:
        return render_image(part, abnormal, [seed, 1, 1], view)

    return make


@pytest.fixture(scope="session")
def encode_image():
    """`encode_image(array, "PNG" | "JPEG")` -> file bytes."""

    def encode(image: np.ndarray, fmt: str = "PNG") -> bytes:
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format=fmt)
        return buffer.getvalue()

    return encode


@pytest.fixture(scope="session")
def make_dicom():
    return dicom_bytes


def dicom_bytes(
    pixels: np.ndarray, body_part: str | None = "WRIST", rows_cols: tuple[int, int] | None = None
) -> bytes:
    """A minimal valid DX DICOM (12-bit MONOCHROME2); `rows_cols` overrides the declared size (a lie)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.Rows, ds.Columns = rows_cols or pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = (pixels.astype(np.uint16) * 16).tobytes()
    if body_part:
        ds.BodyPartExamined = body_part
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


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

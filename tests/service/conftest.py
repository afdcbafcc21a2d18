"""Fixtures for the service tests: a real (randomly initialised, tiny) checkpoint and radiograph files."""

from __future__ import annotations

import io
from pathlib import Path

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

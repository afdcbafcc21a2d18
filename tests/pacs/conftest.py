"""Fixtures for the DICOM exchange tests: checkpoints and radiographs from the inference and service
fixtures, a synthetic DX study with bad instances, and dicom3tools' validator."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from mura.data.synth import render_image
from mura.inference.predictor import Predictor
from tests.inference.conftest import make_checkpoint
from tests.service.conftest import make_dicom, make_radiograph, tiny_checkpoint

__all__ = ["make_checkpoint", "make_dicom", "make_radiograph", "tiny_checkpoint"]  # shared fixtures

DX = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation
BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"
THRESHOLDS = {"default": 0.5, "youden": 0.45, "suspicious": 0.3}
# Warnings dciodvfy gives that we cannot avoid: our private codes' scheme (declared in the SR's Coding
# Scheme Identification Sequence, still not one dciodvfy knows) and an empty Laterality where the source
# does not say which side (allowed "when actually unknown").
ACCEPTED_WARNINGS = ("Unrecognized defined term <99MURA>", "attribute <Laterality>")


def write_dx(path: Path, study: Dataset, view: int, photometric: str, **tags: object) -> Path:
    """A DX instance of a synthetic wrist radiograph (12-bit), in the patient and study of `study`."""
    grey = render_image("WRIST", view % 2 == 0, [7, view], view).astype(np.float64)[::4, ::4]
    stored = np.clip(grey * 16, 0, 4095).astype(np.uint16)
    if photometric == "MONOCHROME1":
        stored = 4095 - stored
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = DX, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.update(study)
    ds.SOPClassUID, ds.SOPInstanceUID = DX, meta.MediaStorageSOPInstanceUID
    ds.SeriesInstanceUID, ds.SeriesNumber, ds.InstanceNumber = generate_uid(), 1, view
    ds.Modality, ds.ImageType, ds.PatientOrientation = "DX", ["ORIGINAL", "PRIMARY"], ["L", "F"]
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = stored.tobytes()
    for key, value in tags.items():
        setattr(ds, key, value)
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture(scope="session")
def dx_instance() -> Callable[..., Path]:
    """`dx_instance(path, study, view, photometric, **tags)` -> a DX file of the study."""
    return write_dx


@pytest.fixture(scope="session")
def pacs_checkpoint(make_checkpoint) -> Path:
    return make_checkpoint("dicom_out.pt", "custom_cnn", 32, seed=3, threshold=THRESHOLDS)


@pytest.fixture(scope="session")
def predictor(pacs_checkpoint: Path) -> Predictor:
    return Predictor.from_checkpoints([pacs_checkpoint], device="cpu", runtime="torch")


@pytest.fixture(scope="session")
def study_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 good DX views (MONOCHROME1 and 2, body part on two), one undecodable, one text SR."""
    folder = tmp_path_factory.mktemp("study")
    study = Dataset()
    study.PatientName, study.PatientID, study.PatientBirthDate, study.PatientSex = "Doe^Jane", "P7", "", "F"
    study.StudyInstanceUID, study.StudyDate, study.StudyTime = generate_uid(), "20260301", "101500"
    study.StudyID, study.AccessionNumber, study.ReferringPhysicianName = "S1", "ACC7", ""
    write_dx(folder / "1.dcm", study, 1, "MONOCHROME2", BodyPartExamined="WRIST", ImageLaterality="L")
    write_dx(folder / "2.dcm", study, 2, "MONOCHROME1", BodyPartExamined="WRIST", ImageLaterality="L")
    write_dx(folder / "3.dcm", study, 3, "MONOCHROME2")
    broken = pydicom.dcmread(write_dx(folder / "4.dcm", study, 4, "MONOCHROME2"))
    broken.PixelData = broken.PixelData[:100]  # truncated: cannot be decoded
    broken.save_as(folder / "4.dcm")
    report = Dataset()
    report.file_meta = FileMetaDataset()
    report.file_meta.MediaStorageSOPClassUID, report.file_meta.MediaStorageSOPInstanceUID = (
        BASIC_TEXT_SR,
        "1.2.3",
    )
    report.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    report.update(study)
    report.SOPClassUID, report.SOPInstanceUID, report.Modality = BASIC_TEXT_SR, "1.2.3", "SR"
    report.save_as(folder / "5.dcm", enforce_file_format=True)
    return folder


@pytest.fixture(scope="session")
def good_uids(study_dir: Path) -> set[str]:
    """SOP Instance UIDs of the study's three good views."""
    return {str(pydicom.dcmread(study_dir / f"{i}.dcm").SOPInstanceUID) for i in (1, 2, 3)}


@pytest.fixture(scope="session")
def png_study(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("png_study")
    paths = []
    for view in (1, 2):
        path = folder / f"view{view}.png"
        Image.fromarray(render_image("HAND", False, [5, view], view)[::4, ::4]).save(path)
        paths.append(path)
    return paths


def _dciodvfy(path: Path) -> tuple[list[str], list[str]]:
    """(errors, warnings) dicom3tools' validator reports for one file."""
    if shutil.which("dciodvfy") is None:
        pytest.skip("dicom3tools' dciodvfy is not installed (Debian package dicom3tools)")
    run = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    lines = (run.stdout + run.stderr).splitlines()
    return [x for x in lines if x.startswith("Error")], [x for x in lines if x.startswith("Warning")]


def _assert_valid(paths: list[Path], strict: bool = True) -> None:
    for path in paths:
        errors, warnings = _dciodvfy(path)
        assert errors == [], f"{path.name}: {errors}"
        unexpected = [w for w in warnings if not any(a in w for a in ACCEPTED_WARNINGS)]
        assert not strict or unexpected == [], f"{path.name}: {unexpected}"


@pytest.fixture(scope="session")
def assert_valid() -> Callable[..., None]:
    """`assert_valid(paths, strict=True)`: dciodvfy finds no error (and, if strict, no unexpected warning)."""
    return _assert_valid

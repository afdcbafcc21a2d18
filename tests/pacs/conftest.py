"""Fixtures for the DICOM exchange tests: a synthetic DX study with bad instances, a PNG study, and
dicom3tools' validator (checkpoints, radiographs and DICOM files come from the root conftest)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.uid import BasicTextSRStorage, generate_uid

from mura.data.synth import render_image
from mura.inference.predictor import Predictor
from tests.factories.dicom import dicom_dataset, twelve_bit, write_dicom

THRESHOLDS = {"default": 0.5, "youden": 0.45, "suspicious": 0.3}
# The one warning dciodvfy gives that we cannot avoid: an empty Laterality where the source does not say
# which side (allowed "when actually unknown"). Every code the SR uses is SNOMED CT or DICOM's own.
ACCEPTED_WARNINGS = ("attribute <Laterality>",)


def write_dx(path: Path, study: Dataset, view: int, photometric: str, **tags: object) -> Path:
    """A DX instance of a synthetic wrist radiograph (12-bit), in the patient and study of `study`;
    MONOCHROME1 stores the inverted values, so both show the same picture."""
    stored = twelve_bit(render_image("WRIST", view % 2 == 0, [7, view], view)[::4, ::4])
    if photometric == "MONOCHROME1":
        stored = 4095 - stored
    ds = dicom_dataset(stored, photometric=photometric, SeriesNumber=1, InstanceNumber=view, **tags)
    ds.ImageType, ds.PatientOrientation = ["ORIGINAL", "PRIMARY"], ["L", "F"]
    ds.update(study)
    return write_dicom(ds, path)


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
    report = dicom_dataset(None, modality="SR", sop_class=BasicTextSRStorage, sop_uid="1.2.3")
    report.update(study)
    write_dicom(report, folder / "5.dcm")
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

"""DICOM results of studies outside the model's scope: a CT study gets nothing (no SR, no capture), a
radiograph the model cannot judge (a knee for a model of the upper limb) an SR that states "not
assessed" with the reason and claims no finding, and a CT instance in a radiograph study is left out."""

from __future__ import annotations

import shutil
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from mura.cli import main
from mura.errors import MuraError
from mura.inference.predictor import Predictor
from mura.pacs.sr import sr_summary
from mura.pacs.study import study_results


@pytest.fixture(scope="module")
def study() -> Dataset:
    ds = Dataset()
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Doe^John", "P9", "", "M"
    ds.StudyInstanceUID, ds.StudyDate, ds.StudyTime = generate_uid(), "20260302", "091500"
    ds.StudyID, ds.AccessionNumber, ds.ReferringPhysicianName = "S9", "ACC9", ""
    return ds


def ct_in(folder: Path, study: Dataset | None = None) -> Path:
    """pydicom's CT_small.dcm, as it is or moved into `study`."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / "ct.dcm"
    if study is None:
        return Path(shutil.copy(get_testdata_file("CT_small.dcm"), target))
    ct = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ct.update(study)
    ct.save_as(target)
    return target


def test_a_ct_study_gets_no_dicom_result(predictor: Predictor, tmp_path: Path, capsys) -> None:
    ct = ct_in(tmp_path / "ct")
    with pytest.raises(MuraError, match="not assessed: dicom: SOP class CT Image Storage"):
        study_results(predictor, [ct])
    out = tmp_path / "out"
    main(["predict", str(ct), "-c", str(predictor.members[0].source), "--dicom-out", str(out)])
    assert "no DICOM results" in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())


def test_a_knee_radiograph_gets_an_sr_stating_not_assessed_and_no_capture(
    predictor: Predictor, dx_instance, study: Dataset, tmp_path: Path
) -> None:
    knee = dx_instance(tmp_path / "knee.dcm", study, 1, "MONOCHROME2", BodyPartExamined="KNEE")
    made = study_results(predictor, [knee])
    assert made.prediction.decision == "not_assessed" and made.captures == []
    summary = sr_summary(made.sr)
    assert summary["study_probability"] is None and summary["finding"] not in ("present", "absent")
    assert any("BodyPartExamined KNEE is not one of the parts" in r for r in summary["reasons"])


def test_a_ct_instance_in_a_radiograph_study_is_left_out_and_listed(
    predictor: Predictor, dx_instance, study: Dataset, tmp_path: Path
) -> None:
    wrist = dx_instance(tmp_path / "wrist.dcm", study, 1, "MONOCHROME2", BodyPartExamined="WRIST")
    made = study_results(predictor, [wrist, ct_in(tmp_path, study)])
    assert made.prediction.assessed and made.prediction.views == 1 and len(made.captures) == 1
    ((path, reason),) = made.skipped
    assert path.name == "ct.dcm" and reason.startswith("not assessed: dicom: SOP class CT Image Storage")

"""A study score is a mean over the views of one patient and one study: DICOM views naming two patients
or two studies are refused on every surface (CLI `--study`, `Model.predict_study`, the service's JSON
study endpoint, DICOM results) with the files and the attribute named, never the patient's values."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

import mura
from mura.cli import main
from mura.errors import MuraError
from mura.inference.predictor import Predictor
from mura.service.app import create_app
from tests.factories.dicom import dicom_dataset, twelve_bit, write_dicom

STUDY = "1.2.826.0.1.3680043.8.498.1"


@pytest.fixture(scope="module")
def folders(tmp_path_factory, make_radiograph) -> dict[str, Path]:
    """two_patients/ (same study UID, PatientIDs SMITH-1 and JONES-2), two_studies/ (one patient), and
    one_study/ (two DICOM views of one patient and study, and a PNG beside them)."""
    root = tmp_path_factory.mktemp("one_study")
    views = [twelve_bit(make_radiograph("WRIST", seed=s, view=s % 2)) for s in range(2)]
    layouts = {
        "two_patients": [("SMITH-1", STUDY), ("JONES-2", STUDY)],
        "two_studies": [("SMITH-1", STUDY), ("SMITH-1", STUDY + ".2")],
        "one_study": [("SMITH-1", STUDY), ("SMITH-1", STUDY)],
    }
    found = {}
    for name, identities in layouts.items():
        folder = root / name
        folder.mkdir()
        for i, (patient, study) in enumerate(identities):
            ds = dicom_dataset(views[i], body_part="WRIST", patient_id=patient, study_uid=study)
            write_dicom(ds, folder / f"view{i}.dcm")
        found[name] = folder
    Image.fromarray(make_radiograph("WRIST", seed=5)).save(found["one_study"] / "view2.png")
    return found


def test_mura_predict_study_refuses_two_patients_or_two_studies_in_one_line(
    tiny_checkpoint, folders, capsys
) -> None:
    for name, differs in (("two_patients", "PatientID"), ("two_studies", "StudyInstanceUID")):
        code = main(["predict", str(folders[name]), "-c", str(tiny_checkpoint), "--study"])
        captured = capsys.readouterr()
        assert code != 0 and captured.out == ""  # refused before anything was predicted
        (line,) = captured.err.strip().splitlines()
        assert f"view0.dcm and {folders[name] / 'view1.dcm'}: different {differs};" in line
        assert "SMITH" not in line and "JONES" not in line and STUDY not in line


def test_the_python_api_refuses_views_of_two_patients(tiny_checkpoint, folders) -> None:
    model = mura.load(tiny_checkpoint, device="cpu")
    with pytest.raises(MuraError, match="different PatientID;") as refused:
        model.predict_study(sorted(folders["two_patients"].iterdir()))
    assert "SMITH" not in str(refused.value) and "JONES" not in str(refused.value)
    with pytest.raises(MuraError, match="different StudyInstanceUID;"):
        model.dicom_results(sorted(folders["two_studies"].iterdir()))


def test_the_service_refuses_a_study_of_two_patients_without_echoing_them(tiny_checkpoint, folders) -> None:
    predictor = Predictor.from_checkpoints([tiny_checkpoint], device="cpu", runtime="torch")
    with TestClient(create_app(predictor)) as client:
        files = [("files", (p.name, p.read_bytes())) for p in sorted(folders["two_patients"].iterdir())]
        response = client.post("/v1/predict/study", files=files)
        assert response.status_code == 422 and response.json()["error"] == "not_one_study"
        assert "different PatientID" in response.json()["detail"]
        assert "SMITH" not in response.text and "JONES" not in response.text
        files = [("files", (p.name, p.read_bytes())) for p in sorted(folders["one_study"].iterdir())]
        study = client.post("/v1/predict/study", files=files)
        assert study.status_code == 200 and study.json()["views"] == 3


def test_views_of_one_patient_and_study_are_scored_together_with_a_png_beside_them(
    tiny_checkpoint, folders, capsys
) -> None:
    code = main(["predict", str(folders["one_study"]), "-c", str(tiny_checkpoint), "--study"])
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    study = next(r for r in records if "views" in r)
    assert code == 0 and study["views"] == 3 and study["fracture_probability"] is not None
    api = mura.load(tiny_checkpoint, device="cpu").predict_study(sorted(folders["one_study"].iterdir()))
    assert api.views == 3 and api.fracture_probability == pytest.approx(study["fracture_probability"])

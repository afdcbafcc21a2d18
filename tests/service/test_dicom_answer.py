"""The study endpoint answers `Accept: application/dicom` with the study's Structured Report, built by
the code `mura predict --dicom-out` and the DICOM node use; its probability is the JSON answer's."""

from __future__ import annotations

import io

import pydicom
import pytest
from fastapi.testclient import TestClient
from pydicom.uid import generate_uid

from mura.inference.predictor import Predictor
from mura.pacs.sr import sr_summary
from mura.service.app import create_app
from mura.service.loading import make_explainer
from tests.factories.dicom import dicom_bytes, dicom_dataset, twelve_bit


@pytest.fixture(scope="module")
def client(tiny_checkpoint):
    predictor = Predictor.from_checkpoints([tiny_checkpoint], device="cpu", runtime="torch")
    with TestClient(create_app(predictor, explainer=make_explainer(predictor))) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def study(make_radiograph):
    """Two DX views of one study (patient and study modules set) and one undecodable view."""
    study_uid, views = generate_uid(), []
    for view in range(2):
        ds = dicom_dataset(
            twelve_bit(make_radiograph("WRIST", True, seed=4, view=view)),
            body_part="WRIST",
            patient_id="P1",
            study_uid=study_uid,
            PatientName="Test^Patient",
            StudyID="1",
            AccessionNumber="A1",
            StudyDate="20260101",
            StudyTime="120000",
            ReferringPhysicianName="",
            PatientBirthDate="",
            PatientSex="O",
            SeriesNumber=1,
            InstanceNumber=view + 1,
        )
        views.append((f"view{view}.dcm", dicom_bytes(ds), str(ds.SOPInstanceUID)))
    broken = views[0][1][: len(views[0][1]) // 3]
    return views, broken


def test_the_study_as_a_structured_report(client, study) -> None:
    views, broken = study
    files = [("files", (name, data)) for name, data, _ in views] + [("files", ("bad.dcm", broken))]
    as_json = client.post("/v1/predict/study", files=files)
    assert as_json.status_code == 200, as_json.text
    answer = client.post("/v1/predict/study", files=files, headers={"Accept": "application/dicom"})
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/dicom"
    sr = pydicom.dcmread(io.BytesIO(answer.content))
    assert sr.Modality == "SR" and sr.PatientID == "P1"
    summary = sr_summary(sr)
    assert summary["study_probability"] == pytest.approx(as_json.json()["fracture_probability"], abs=1e-6)
    assert sorted(summary["referenced_sop_instance_uids"]) == sorted(uid for _, _, uid in views)


def test_non_dicom_uploads_cannot_be_answered_in_dicom(client, make_radiograph, encode_image) -> None:
    png = encode_image(make_radiograph("WRIST", True), "PNG")
    answer = client.post(
        "/v1/predict/study", files=[("files", ("a.png", png))], headers={"Accept": "application/dicom"}
    )
    assert answer.status_code == 422 and answer.json()["error"] == "not_dicom"

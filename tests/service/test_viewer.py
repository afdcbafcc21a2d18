"""What the page's viewer gets: a film large enough to zoom into, a heatmap layer, the DICOM identity."""

from __future__ import annotations

import base64
import io
import logging
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from mura.inference.predictor import Predictor
from mura.service.app import create_app
from mura.service.engine import ModelGate
from mura.service.loading import make_explainer
from mura.service.schemas import ImageAnswer
from mura.service.viewer import HEATMAP_SIDE, VIEW_SIDE, add_view_layers, dicom_identity

PATIENT = {"PatientName": "DOE^JANE^Q", "PatientID": "MRN-55501", "AccessionNumber": "ACC-0042"}


def decode(text: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(text))))


class CountingExplainer:
    """A heatmap that rises left to right, and how often it was asked for one."""

    def __init__(self) -> None:
        self.calls: list[tuple[tuple[int, ...], int]] = []

    def heatmap(self, image: np.ndarray, body_part: int = -1) -> np.ndarray:
        self.calls.append((image.shape, body_part))
        return np.tile(np.linspace(0, 1, image.shape[1], dtype=np.float32), (image.shape[0], 1))


@pytest.fixture(scope="module")
def predictor(tiny_checkpoint: Path) -> Predictor:
    return Predictor.from_checkpoints([tiny_checkpoint], device="cpu", runtime="torch")


@pytest.fixture()
def answer(predictor: Predictor) -> ImageAnswer:
    batch = predictor.predict_images([np.full((64, 64), 120, np.uint8)], [6])
    return ImageAnswer(**batch.prediction(0, predictor.identity, path="film.png").model_dump())


def test_a_detector_sized_film_comes_back_at_2048_px_and_about_two_megabytes(answer) -> None:
    """A 2,800 x 2,240 plate with quantum noise: the viewer gets 2048 px lossless, the heatmap a small
    grey layer; the JSON answer stays within 3 MB (measured: ~2.5 MB)."""
    rng = np.random.default_rng(0)
    ramp = np.linspace(40, 210, 2240, dtype=np.float32)[None, :].repeat(2800, axis=0)
    film = np.clip(ramp + rng.normal(0, 3, ramp.shape), 0, 255).astype(np.uint8)
    explainer = CountingExplainer()
    add_view_layers(answer, film, explainer, ModelGate())
    shown, heatmap = decode(answer.image_png), decode(answer.heatmap_png)
    assert shown.shape == (VIEW_SIDE, 1638) and shown.dtype == np.uint8
    assert answer.image_size == (2240, 2800)  # the frame findings' boxes are given in
    assert heatmap.ndim == 2 and max(heatmap.shape) == HEATMAP_SIDE
    assert heatmap[:, 0].max() < 5 and heatmap[:, -1].min() > 250  # 0..1 -> 0..255, left to right
    assert explainer.calls == [((HEATMAP_SIDE, 410), 6)]  # computed on the small film, body part kept
    size = len(answer.model_dump_json())
    assert 1_000_000 < size < 3_000_000, size


def test_a_film_not_assessed_is_shown_without_a_heatmap(predictor) -> None:
    refused = ImageAnswer(
        path="ct.dcm",
        fracture_probability=None,
        decision="not_assessed",
        operating_point=predictor.threshold_name,
        threshold=predictor.threshold,
        body_part=None,
        body_part_origin="predicted",
        body_part_probabilities={},
        reasons=["dicom: Modality CT is not a projection radiograph"],
        model=predictor.identity,
    )
    explainer = CountingExplainer()
    add_view_layers(refused, np.full((300, 200), 90, np.uint8), explainer, ModelGate())
    assert decode(refused.image_png).shape == (300, 200)
    assert refused.heatmap_png is None and explainer.calls == []


@pytest.mark.filterwarnings("ignore:Invalid value for VR DA")
def test_the_identity_is_what_the_dicom_names_and_nothing_else(wrist_dicom) -> None:
    identity = dicom_identity(wrist_dicom(StudyDate="20240131", **PATIENT))
    assert identity.model_dump() == {
        "patient_name": "DOE^JANE^Q",
        "patient_id": "MRN-55501",
        "accession_number": "ACC-0042",
        "study_date": "2024-01-31",
    }
    partial = dicom_identity(wrist_dicom(StudyDate="2024", patient_id="MRN-1"))
    assert partial.patient_name is None and partial.study_date == "2024"  # not a date: as stored
    assert dicom_identity(wrist_dicom()) is None
    assert dicom_identity(b"\x89PNG\r\n\x1a\n not a dicom") is None


@pytest.fixture(scope="module")
def wrist_dicom(make_dicom, make_radiograph):
    return lambda **tags: make_dicom(make_radiograph("WRIST", abnormal=True, seed=2), **tags)


def test_the_answer_carries_the_identity_and_no_log_line_does(
    predictor, wrist_dicom, make_radiograph, caplog
) -> None:
    app = create_app(predictor, explainer=make_explainer(predictor))
    caplog.set_level(logging.DEBUG)
    dicom = wrist_dicom(StudyDate="20240131", **PATIENT)
    png = io.BytesIO()
    Image.fromarray(make_radiograph("WRIST", abnormal=False, seed=3)).save(png, format="PNG")
    with TestClient(app) as client:
        study = client.post(
            "/v1/predict/study?cam=true",
            files=[("files", ("view1.dcm", dicom)), ("files", ("view2.png", png.getvalue()))],
        )
    assert study.status_code == 200, study.text
    views = study.json()["images"]
    assert views[0]["dicom_identity"]["patient_name"] == "DOE^JANE^Q"
    assert views[0]["dicom_identity"]["study_date"] == "2024-01-31"
    assert "dicom_identity" not in views[1]  # a PNG names nobody
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert not [value for value in (*PATIENT.values(), "DOE", "JANE") if value in logged]

"""The service answers an upload outside the model's scope `not_assessed`, with its reasons, never a
probability; a study leaves such views out of its mean; the OpenAPI schema says so."""

from __future__ import annotations

from pathlib import Path

import matplotlib.cbook as cbook
import numpy as np
import pytest
from fastapi.testclient import TestClient
from pydicom.data import get_testdata_file

from mura.inference.predictor import Predictor
from mura.service.app import create_app
from mura.service.loading import make_explainer


@pytest.fixture(scope="module")
def client(tiny_checkpoint: Path) -> TestClient:
    predictor = Predictor.from_checkpoints([tiny_checkpoint], device="cpu", runtime="torch")
    with TestClient(create_app(predictor, explainer=make_explainer(predictor))) as test_client:
        yield test_client


def post_one(client: TestClient, name: str, data: bytes, query: str = "") -> dict:
    response = client.post(f"/v1/predict{query}", files={"file": (name, data, "application/octet-stream")})
    assert response.status_code == 200, response.text
    return response.json()


def test_a_ct_and_a_photograph_are_not_assessed_with_their_reasons(client: TestClient) -> None:
    ct = post_one(client, "ct.dcm", Path(get_testdata_file("CT_small.dcm")).read_bytes())
    assert ct["decision"] == "not_assessed" and ct["fracture_probability"] is None and ct["body_part"] is None
    assert any(r.startswith("dicom: Modality CT is not projection radiography") for r in ct["reasons"])
    photo = Path(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).read_bytes()
    answer = post_one(client, "photo.jpg", photo, "?cam=true")
    assert answer["decision"] == "not_assessed" and answer["reasons"][0].startswith(
        "pixels: a colour picture"
    )
    assert answer["image_png"] and not answer.get("cam_png") and not answer.get("heatmap_png")  # no heat map


def test_a_study_leaves_a_blank_view_out_of_its_mean(client, encode_image, make_radiograph) -> None:
    views = [
        ("files", ("view0.png", encode_image(make_radiograph("ELBOW", seed=3)))),
        ("files", ("blank.png", encode_image(np.zeros((300, 300), np.uint8)))),
    ]
    study = client.post("/v1/predict/study", files=views).json()
    assert study["views"] == 1 and study["views_not_assessed"] == 1
    assert study["fracture_probability"] == pytest.approx(study["images"][0]["fracture_probability"])
    assert study["images"][1]["decision"] == "not_assessed"
    blank = [("files", ("blank.png", encode_image(np.zeros((300, 300), np.uint8))))]
    only_blank = client.post("/v1/predict/study", files=blank).json()
    assert only_blank["decision"] == "not_assessed" and only_blank["fracture_probability"] is None
    assert only_blank["reasons"][0].startswith("blank.png: pixels: a near-uniform image")


def test_the_schema_documents_not_assessed(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()["components"]["schemas"]["ImageAnswer"]
    assert "not_assessed" in schema["properties"]["decision"]["enum"]
    assert "not_assessed" in schema["description"] and "reasons" in schema["description"]


def test_score_all_is_off_by_default_documented_and_scores_with_the_reasons_as_warnings(
    client, encode_image
) -> None:
    blank = [("files", ("blank.png", encode_image(np.zeros((300, 300), np.uint8))))]
    for where in ({"params": {"score_all": "true"}}, {"data": {"score_all": "yes"}}):
        study = client.post("/v1/predict/study", files=blank, **where).json()
        assert study["decision"] in ("abnormal", "normal") and study["views_not_assessed"] == 0
        (view,) = study["images"]
        assert view["fracture_probability"] is not None and view["reasons"] == []
        assert view["warnings"][0].startswith("out of scope, scored anyway: pixels: a near-uniform image")
    single = client.post(
        "/v1/predict?score_all=1", files={"file": ("blank.png", encode_image(np.zeros((300, 300), np.uint8)))}
    )
    assert single.json()["fracture_probability"] is not None
    assert client.post("/v1/predict/study", files=blank, data={"score_all": "maybe"}).status_code == 400
    operation = client.get("/openapi.json").json()["paths"]["/v1/predict/study"]["post"]
    (parameter,) = [p for p in operation["parameters"] if p["name"] == "score_all"]
    assert parameter["schema"]["default"] is False and "research" in parameter["description"]
    form = operation["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"]
    assert form["score_all"]["default"] is False

"""The body part a request may name is one of the served model's: the form's list, the OpenAPI enum and
the 400 for any other all come from the model, not from mura's global vocabulary."""

from __future__ import annotations

from fastapi.testclient import TestClient

from mura.constants import BODY_PARTS, MURA_BODY_PARTS
from mura.inference.predictor import Predictor
from mura.service.app import create_app
from mura.service.model_card import model_card


def served(checkpoint) -> TestClient:
    predictor = Predictor.from_checkpoints([checkpoint], device="cpu", runtime="torch")
    return TestClient(create_app(predictor, model_info=model_card(predictor)))


def form_enum(client: TestClient) -> list[str]:
    body = client.get("/openapi.json").json()["paths"]["/v1/predict"]["post"]["requestBody"]
    return body["content"]["multipart/form-data"]["schema"]["properties"]["body_part"]["enum"]


def test_a_mura_model_offers_its_seven_parts_and_refuses_a_hip(
    make_checkpoint, make_radiograph, encode_image
):
    with served(make_checkpoint("mura7.pt", legacy_body_parts=True)) as client:
        assert form_enum(client) == list(MURA_BODY_PARTS)
        assert client.get("/v1/model").json()["body_parts"] == list(MURA_BODY_PARTS)  # the page's list
        film = encode_image(make_radiograph("WRIST", abnormal=False))
        answer = client.post("/v1/predict", files={"file": ("a.png", film)}, data={"body_part": "hip"})
        assert answer.status_code == 400
        assert answer.json()["detail"] == (
            "body_part 'hip' is not one this model knows "
            "(ELBOW, FINGER, FOREARM, HAND, HUMERUS, SHOULDER, WRIST)"
        )
        assert client.post(
            "/v1/predict", files={"file": ("a.png", film)}, data={"body_part": "wrist"}
        ).is_success


def test_a_model_trained_on_fracatlas_regions_accepts_them(tiny_checkpoint, make_radiograph, encode_image):
    with served(tiny_checkpoint) as client:
        assert form_enum(client) == list(BODY_PARTS)
        film = encode_image(make_radiograph("WRIST", abnormal=False))
        answer = client.post("/v1/predict", files={"file": ("a.png", film)}, data={"body_part": "HIP"}).json()
        assert answer["body_part"] == "HIP" and answer["body_part_origin"] == "given"

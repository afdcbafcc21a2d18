"""Findings in the service's answer: the OpenAPI schema documents each box, its score and its operating
point, and a model with a map head answers an upload with its box in the film's own pixels."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from mura.inference.predictor import Predictor
from mura.service.app import create_app
from mura.service.loading import make_explainer
from mura.service.model_card import model_card
from mura.service.schemas import ImageAnswer


@pytest.fixture(scope="module")
def client(make_checkpoint) -> TestClient:
    """The service over a model whose map head boxes the film's central cells, graded so every film it
    assesses is `definite` (`tests.factories.checkpoints.mark_central_cells`)."""
    ckpt = make_checkpoint(
        "central.pt", "custom_cnn", 32, threshold={"suspicious": 0.01, "definite": 0.02}, central_map=True
    )
    predictor = Predictor.from_checkpoints([ckpt], device="cpu", runtime="torch")
    app = create_app(predictor, explainer=make_explainer(predictor), model_info=model_card(predictor))
    with TestClient(app) as test_client:
        yield test_client


def resolve(schema: dict, node: dict) -> dict:
    """A schema node with its `$ref` (and a nullable `anyOf` around one) followed."""
    if "anyOf" in node:
        node = next(option for option in node["anyOf"] if option.get("type") != "null")
    if "$ref" in node:
        return schema["components"]["schemas"][node["$ref"].rsplit("/", 1)[-1]]
    return node


def test_the_schema_documents_each_finding_with_its_box_score_and_operating_point(client) -> None:
    schema = client.get("/openapi.json").json()
    findings = schema["components"]["schemas"]["ImageAnswer"]["properties"]["findings"]
    assert findings["type"] == "array" and findings["description"]
    finding = resolve(schema, findings["items"])
    assert set(finding["required"]) == {"box", "score", "operating_point"}
    box, score, point = (finding["properties"][k] for k in ("box", "score", "operating_point"))
    assert box["type"] == "array" and len(box["prefixItems"]) == 4 and box["maxItems"] == 4
    assert "x0, y0, x1, y1" in box["description"] and "original pixels" in box["description"]
    assert (score["minimum"], score["maximum"]) == (0, 1)
    assert point["type"] == "string" and "operating point" in point["description"]


def test_an_answer_carries_the_map_heads_box_in_the_films_pixels(
    client, make_radiograph, encode_image
) -> None:
    film = make_radiograph("WRIST", abnormal=True)
    height, width = film.shape
    response = client.post("/v1/predict", files={"file": ("wrist.png", encode_image(film), "image/png")})
    assert response.status_code == 200
    answer = ImageAnswer.model_validate(response.json())  # the answer is what the schema says
    (finding,) = answer.findings
    # a 4 x 4 map over the 32 px input; its centre 2 x 2 cells are the middle half of the film each way
    assert finding.box == pytest.approx((width / 4, height / 4, 3 * width / 4, 3 * height / 4), abs=0.1)
    assert finding.operating_point == "definite" and finding.score <= answer.fracture_probability

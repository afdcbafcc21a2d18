"""The three tiers and their validated figures reach every surface a reader sees: `mura predict` JSON
lines and CSV, `mura.load(...)` (image and study), and the HTTP service (image, study, OpenAPI schema)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

import mura
from mura.checkpoint import update_checkpoint
from mura.cli import main
from mura.decision import Decision, PointFigures
from mura.inference.predictor import Predictor
from mura.service.app import create_app

SUSPICIOUS, DEFINITE = 0.3, 0.7
FITTED_ON = "out-of-fold predictions of 5-fold cross-validation (20 images)"
FIGURES = {
    "suspicious": PointFigures(tp=9, fp=5, tn=5, fn=1),
    "definite": PointFigures(tp=5, fp=1, tn=9, fn=5),
}


@pytest.fixture(scope="module")
def fracture_model(make_checkpoint, tmp_path_factory) -> Path:
    """A checkpoint trained on fracture labels whose two points were validated on 20 images."""
    base = make_checkpoint("tiers.pt", "custom_cnn", 32, seed=4)
    decision = Decision(
        thresholds={"default": 0.5, "suspicious": SUSPICIOUS, "definite": DEFINITE},
        fitted_on=FITTED_ON,
        figures=FIGURES,
    )
    out = tmp_path_factory.mktemp("tiers") / "fracture.pt"
    return update_checkpoint(base, out, decision=decision, positive_class="fracture")


@pytest.fixture(scope="module")
def films(tmp_path_factory, smooth_images) -> list[Path]:
    folder = tmp_path_factory.mktemp("tier_films") / "study"
    folder.mkdir()
    paths = []
    for i, pixels in enumerate(smooth_images(6, seed=11)):
        paths.append(folder / f"film{i}.png")
        Image.fromarray(pixels).save(paths[-1])
    return paths


def expected_tier(probability: float) -> tuple[str, str, str]:
    """(tier, words, operating point whose figures it carries), by the rule written out."""
    if probability >= DEFINITE:
        return "fracture_likely", "Fracture likely", "definite"
    if probability >= SUSPICIOUS:
        return "possible_fracture", "Possible fracture", "suspicious"
    return "no_fracture_seen", "No fracture seen", "suspicious"


def check_record(record: dict) -> None:
    tier, words, point = expected_tier(record["fracture_probability"])
    assert (record["tier"], record["tier_text"]) == (tier, words)
    figures = record["tier_figures"]
    counts = FIGURES[point]
    assert figures["operating_point"] == point
    assert figures["threshold"] == pytest.approx(DEFINITE if point == "definite" else SUSPICIOUS)
    assert (figures["sensitivity"], figures["specificity"]) == pytest.approx(
        (counts.sensitivity, counts.specificity)
    )
    assert (figures["ppv"], figures["npv"]) == pytest.approx((counts.ppv, counts.npv))
    assert (figures["prevalence"], figures["images"]) == (0.5, 20)
    assert figures["validated_on"] == FITTED_ON


def test_predict_json_lines_and_csv_carry_the_tiers(fracture_model, films, capsys) -> None:
    folder = str(films[0].parent)
    argv = ["predict", folder, "--checkpoint", str(fracture_model), "--runtime", "torch", "--study"]
    assert main(argv) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(records) == len(films) + 1 and records[-1]["kind"] == "study"
    for record in records:
        check_record(record)
    assert main([*argv, "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    for row, record in zip(rows, records, strict=True):
        assert (row["tier"], row["tier_text"]) == (record["tier"], record["tier_text"])
        assert float(row["tier_ppv"]) == pytest.approx(record["tier_figures"]["ppv"])
        assert row["tier_operating_point"] == record["tier_figures"]["operating_point"]
        assert row["tier_validated_on"] == FITTED_ON


def test_the_python_api_carries_the_tiers(fracture_model, films) -> None:
    model = mura.load(fracture_model, device="cpu")
    for prediction in model.predict_batch(films):
        check_record(prediction.model_dump())
    study = model.predict_study(films)
    check_record(study.model_dump())
    assert study.tier == expected_tier(study.fracture_probability)[0]


def test_the_service_answers_and_documents_the_tiers(fracture_model, films) -> None:
    predictor = Predictor.from_checkpoints([fracture_model], device="cpu", runtime="torch")
    with TestClient(create_app(predictor)) as client:
        image = client.post(
            "/v1/predict", files={"file": (films[0].name, films[0].read_bytes(), "image/png")}
        )
        assert image.status_code == 200, image.text
        check_record(image.json())
        uploads = [("files", (p.name, p.read_bytes(), "image/png")) for p in films[:3]]
        study = client.post("/v1/predict/study", files=uploads)
        assert study.status_code == 200, study.text
        check_record(study.json())
        assert all(view["tier_text"] for view in study.json()["images"])
        schema = client.get("/openapi.json").json()["components"]["schemas"]
    assert {"tier", "tier_text", "tier_figures"} <= set(schema["ImageAnswer"]["properties"])
    assert {"sensitivity", "ppv", "npv", "prevalence", "validated_on"} <= set(
        schema["TierFigures"]["properties"]
    )


def test_a_model_trained_on_mura_says_abnormality(make_checkpoint, films) -> None:
    legacy = mura.load(make_checkpoint("tiers_mura.pt", "custom_cnn", 32, seed=4), device="cpu")
    prediction = legacy.predict(films[0])
    assert "abnormality" in prediction.tier_text.lower() and "fracture" not in prediction.tier_text.lower()

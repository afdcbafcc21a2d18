"""The one prediction record: its rules, the study rule over it, and `not_assessed` and the tiers through
every surface that writes it (CLI JSON lines and CSV, the service's schema, the study mean)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from mura.cli.infer import RecordWriter
from mura.constants import BODY_PARTS
from mura.decision import Decision, PointFigures
from mura.inference.files import FileResult, study_prediction
from mura.prediction import Finding, ModelIdentity, Prediction, StudyPrediction, csv_fields
from mura.service.schemas import ImageAnswer, StudyAnswer
from mura.tiers import TierScale

MODEL = ModelIdentity.of(["custom_cnn"], ["ab" * 32], "0.1.0")
UNIFORM = {name: 1 / len(BODY_PARTS) for name in BODY_PARTS}
TIERS = TierScale.of(
    [
        Decision(
            thresholds={"suspicious": 0.3, "definite": 0.65},
            fitted_on="out-of-fold predictions of 5-fold cross-validation (20 images)",
            figures={"suspicious": PointFigures(9, 5, 5, 1), "definite": PointFigures(5, 1, 9, 5)},
        )
    ],
    ["fracture"],
)


def assessed(path: str, probability: float, part: str = "WRIST", origin: str = "dicom") -> Prediction:
    return Prediction(
        path=path,
        fracture_probability=probability,
        decision="abnormal" if probability >= 0.3 else "normal",
        operating_point="suspicious",
        threshold=0.3,
        body_part=part,
        body_part_origin=origin,
        body_part_probabilities=UNIFORM,
        **TIERS.assign(probability)._asdict(),
        model=MODEL,
    )


def refused(path: str, reason: str = "modality CT is not projection radiography") -> Prediction:
    return Prediction(
        path=path,
        fracture_probability=None,
        decision="not_assessed",
        operating_point="suspicious",
        threshold=0.3,
        body_part=None,
        body_part_origin="predicted",
        body_part_probabilities={},
        reasons=[reason],
        model=MODEL,
    )


def test_a_record_is_consistent_or_refused() -> None:
    with pytest.raises(ValidationError, match="reason"):
        Prediction.model_validate({**refused("ct.dcm").model_dump(), "reasons": []})
    with pytest.raises(ValidationError, match="no probability"):
        Prediction.model_validate({**refused("ct.dcm").model_dump(), "fracture_probability": 0.4})
    with pytest.raises(ValidationError, match="needs a probability"):
        Prediction.model_validate({**assessed("a.png", 0.5).model_dump(), "fracture_probability": None})
    with pytest.raises(ValidationError, match="extra"):
        Prediction.model_validate({**assessed("a.png", 0.5).model_dump(), "body_part_used": "given"})
    with pytest.raises(ValidationError, match="needs a tier"):
        Prediction.model_validate({**assessed("a.png", 0.5).model_dump(), "tier": None})
    with pytest.raises(ValidationError, match="tier"):
        Prediction.model_validate({**refused("ct.dcm").model_dump(), "tier": "no_fracture_seen"})


def test_the_body_part_reads_in_plain_words_and_an_unsure_part_never_as_unknown() -> None:
    assert assessed("a.dcm", 0.5, "HAND", "dicom").body_part_words == "hand (from the DICOM header)"
    assert assessed("a.png", 0.5, "HIP", "predicted").body_part_words == "hip (predicted)"
    unsure = assessed("b.png", 0.5, "UNKNOWN", "predicted").body_part_words
    assert unsure.startswith("body part not recognised") and "UNKNOWN" not in unsure
    assert refused("c.dcm").body_part_words == "body part not assessed"


def test_one_identity_per_set_of_checkpoint_files() -> None:
    one = ModelIdentity.of(["a", "b"], ["1" * 64, "2" * 64], "0.1.0")
    assert one == ModelIdentity.of(["a", "b"], ["2" * 64, "1" * 64], "0.1.0")  # order-free
    assert one.sha256 != ModelIdentity.of(["a", "b"], ["1" * 64, "3" * 64], "0.1.0").sha256
    assert ModelIdentity.of(["a"], ["1" * 64], "0.1.0").sha256 == "1" * 64  # one file: its own hash


def test_the_study_mean_leaves_out_views_not_assessed() -> None:
    views = [assessed("v1.dcm", 0.2), refused("v2.dcm"), assessed("v3.dcm", 0.6)]
    results = [FileResult(Path(p.path), prediction=p) for p in views]
    results.append(FileResult(Path("v4.dcm"), error="v4.dcm: truncated"))
    study = study_prediction("study", results, TIERS)
    assert study.fracture_probability == pytest.approx(0.4) and study.decision == "abnormal"
    assert (study.views, study.views_not_assessed, study.views_failed) == (2, 1, 1)
    assert study.body_part == "WRIST" and study.body_part_origin == "dicom"
    assert (study.tier, study.tier_text) == ("possible_fracture", "Possible fracture")  # of the mean, 0.4
    assert study.tier_figures.operating_point == "suspicious" and study.tier_figures.sensitivity == 0.9
    none_left = study_prediction("study", [FileResult(Path("v2.dcm"), prediction=refused("v2.dcm"))], TIERS)
    assert none_left.decision == "not_assessed" and none_left.fracture_probability is None
    assert none_left.reasons == ["v2.dcm: modality CT is not projection radiography"]
    assert none_left.tier is None and none_left.tier_figures is None


def test_not_assessed_round_trips_through_json_lines_and_csv() -> None:
    records = [assessed("a.png", 0.7, origin="given"), refused("ct.dcm")]
    lines = io.StringIO()
    writer = RecordWriter(lines, "jsonl")
    for record in records:
        writer.write(record)
    assert [Prediction.model_validate(json.loads(x)) for x in lines.getvalue().splitlines()] == records
    table = io.StringIO()
    writer = RecordWriter(table, "csv")
    for record in records:
        writer.write(record)
    rows = list(csv.DictReader(io.StringIO(table.getvalue())))
    assert list(rows[0]) == csv_fields()
    assert rows[1]["decision"] == "not_assessed" and rows[1]["fracture_probability"] == ""
    assert rows[1]["reasons"] == "modality CT is not projection radiography"
    assert rows[0]["model_sha256"] == MODEL.sha256
    assert float(rows[0]["prob_WRIST"]) == pytest.approx(1 / len(BODY_PARTS))
    assert (rows[0]["tier"], rows[0]["tier_text"]) == ("fracture_likely", "Fracture likely")
    assert (rows[0]["tier_operating_point"], float(rows[0]["tier_ppv"])) == ("definite", pytest.approx(5 / 6))
    assert rows[0]["tier_validated_on"].startswith("out-of-fold") and rows[0]["tier_images"] == "20"
    assert rows[1]["tier"] == rows[1]["tier_ppv"] == ""


def test_csv_carries_each_finding_as_the_json_lines_do_and_their_count() -> None:
    boxes = [
        Finding(box=(120.0, 40.5, 180.0, 90.0), score=0.81, operating_point="definite"),
        Finding(box=(10.0, 20.0, 30.0, 44.0), score=0.35, operating_point="suspicious"),
    ]
    records = [assessed("a.png", 0.9).model_copy(update={"findings": boxes}), assessed("b.png", 0.1)]
    table = io.StringIO()
    writer = RecordWriter(table, "csv")
    for record in records:
        writer.write(record)
    rows = list(csv.DictReader(io.StringIO(table.getvalue())))
    assert list(rows[0]) == csv_fields()
    read_back = [Finding.model_validate(f) for f in json.loads(rows[0]["findings"])]
    assert read_back == boxes and rows[0]["findings_count"] == "2"
    assert json.loads(rows[0]["findings"])[0] == {
        "box": [120.0, 40.5, 180.0, 90.0],
        "score": 0.81,
        "operating_point": "definite",
    }
    assert (json.loads(rows[1]["findings"]), rows[1]["findings_count"]) == ([], "0")


def test_not_assessed_round_trips_through_the_service_schema() -> None:
    image = ImageAnswer(**refused("ct.dcm").model_dump())
    assert ImageAnswer.model_validate_json(image.model_dump_json()) == image
    study = StudyPrediction.model_validate(
        study_prediction("x", [FileResult(Path("ct.dcm"), prediction=image)], TIERS).model_dump()
    )
    answer = StudyAnswer(**study.model_dump(), images=[image], skipped=[])
    assert StudyAnswer.model_validate_json(answer.model_dump_json()).decision == "not_assessed"

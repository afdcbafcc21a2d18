"""The SR says what produced it, read back the way a consumer reads TID 1500 (highdicom): the model's
one identity item, the operating point, the body part and its source, and an observer device that is
the same for every report of one model and different for another model."""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import pydicom
import pytest

import mura
from mura.checkpoint import file_sha256
from mura.inference.predictor import Predictor
from mura.pacs.sr import STUDY_GROUP, make_report, sr_summary
from mura.pacs.study import study_results
from mura.prediction import ModelIdentity

GOOD = ("1.dcm", "2.dcm", "3.dcm")


def report_of(predictor: Predictor, study_dir: Path, **options: object) -> pydicom.Dataset:
    made = study_results(predictor, [study_dir / name for name in GOOD], captures=False, **options)
    assert made.sr is not None
    return made.sr


def load(*checkpoints: Path) -> Predictor:
    return Predictor.from_checkpoints(list(checkpoints), device="cpu", runtime="torch")


@pytest.fixture(scope="module")
def other_checkpoint(make_checkpoint) -> Path:
    return make_checkpoint("dicom_other.pt", "custom_cnn", 32, seed=4)


def test_sr_names_the_model_its_sha256_and_the_operating_point(predictor, pacs_checkpoint, study_dir) -> None:
    algorithm = sr_summary(report_of(predictor, study_dir, operating_point="suspicious"))["algorithm"]
    assert algorithm["name"] == "mura custom_cnn" and algorithm["version"] == mura.__version__
    assert algorithm["parameters"] == [
        f"sha256={file_sha256(pacs_checkpoint)} checkpoints=1",
        "operating point suspicious threshold=0.300000",
        "decision origin: not fitted",  # where calibration and thresholds were fitted (the factory: nowhere)
    ]


def test_an_ensemble_is_one_identity_item_not_one_per_member(
    pacs_checkpoint, other_checkpoint, study_dir
) -> None:
    ensemble = load(pacs_checkpoint, other_checkpoint)
    algorithm = sr_summary(report_of(ensemble, study_dir))["algorithm"]
    identity = ModelIdentity.of(
        ["custom_cnn"] * 2, [file_sha256(pacs_checkpoint), file_sha256(other_checkpoint)], mura.__version__
    )
    assert [p for p in algorithm["parameters"] if "sha256" in p] == [
        f"sha256={identity.sha256} checkpoints=2"
    ]


def test_one_checkpoint_is_one_device_and_another_checkpoint_another(
    predictor, pacs_checkpoint, other_checkpoint, study_dir
) -> None:
    first = sr_summary(report_of(predictor, study_dir))
    again = sr_summary(report_of(load(pacs_checkpoint), study_dir, operating_point="youden"))
    other = sr_summary(report_of(load(other_checkpoint), study_dir))
    assert first["device_uid"] and pydicom.uid.UID(first["device_uid"]).is_valid
    assert again["device_uid"] == first["device_uid"]  # reloaded, other operating point: the same model
    assert other["device_uid"] != first["device_uid"]


def test_body_part_and_its_source_per_view(predictor, study_dir) -> None:
    sr = report_of(predictor, study_dir)
    report = hd.sr.ComprehensiveSR.from_dataset(sr, copy=True).content
    sites = {
        g.tracking_identifier: [(s.value.scheme_designator, s.value.meaning) for s in g.finding_sites]
        for g in report.get_image_measurement_groups()
    }
    sources = {
        uid: sr_summary(sr)["body_part_sources"][uid]
        for uid in (str(pydicom.dcmread(study_dir / name).SOPInstanceUID) for name in GOOD)
    }
    # views 1 and 2 carry BodyPartExamined WRIST (SNOMED coded); view 3 has no tag: the model's part
    assert list(sources.values()) == ["dicom", "dicom", "predicted"]
    assert sites["view 1: 1.dcm"] == sites["view 2: 2.dcm"] == [("SCT", "Wrist joint")]
    assert STUDY_GROUP in sites and len(sites[STUDY_GROUP]) == 1


def test_a_not_assessed_study_round_trips_through_the_sr_without_a_finding(predictor, study_dir) -> None:
    made = study_results(predictor, [study_dir / name for name in GOOD], captures=False)
    why = "CT: not a projection radiograph"
    blank = {
        "fracture_probability": None,
        "decision": "not_assessed",
        "body_part": None,
        "reasons": [why],
        "tier": None,
        "tier_text": None,
        "tier_figures": None,
    }
    made.prediction = made.prediction.model_copy(update={**blank, "views": 0, "views_not_assessed": 3})
    for view in made.views:
        view.prediction = view.prediction.model_copy(update=blank)
    reference = made.views[0].header
    summary = sr_summary(make_report(predictor.identity, made, reference, "fracture"))
    assert summary["study_probability"] is None and summary["finding"] == "not evaluated"
    assert summary["reasons"] == [why] and set(summary["views"].values()) == {None}
    assert summary["text"] == f"Not assessed: {why}"

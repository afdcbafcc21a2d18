"""`GET /v1/model` names the model, never the server's folders."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from mura.decision import Decision, PointFigures
from mura.inference.predictor import Predictor
from mura.service.model_card import model_card

SERVER_FOLDERS = ("/srv/pacs-export", "/home/radiology", "C:\\Users\\rad", "D:/cv-runs")


@pytest.fixture()
def trained_predictor(tiny_checkpoint: Path) -> Predictor:
    """The tiny model with the metadata a real run leaves: index, cache and CV folders, evaluation data."""
    predictor = Predictor.from_checkpoints([tiny_checkpoint], device="cpu", runtime="torch")
    member = predictor.members[0]
    info = dict(member.info)
    info["config"] = {
        **info["config"],
        "data": {
            **info["config"]["data"],
            "index": "/srv/pacs-export/mura/index.csv",
            "cache": "/home/radiology/cache64",
        },
    }
    info["test_metrics"] = {**info["test_metrics"], "data": "C:\\Users\\rad\\eval\\test_index.csv"}
    info["provenance"] = {
        "versions": {"mura": "0.1.0", "torch": "2.5"},
        "created": "2025-01-01T00:00:00+0000",
        "data": {"index": "/srv/pacs-export/mura/index.csv", "cache": "/home/radiology/cache64"},
        "cross_validation": {"folds": 5, "fold": 2, "out": "D:/cv-runs/wrist"},
    }
    predictor.members[0] = dataclasses.replace(member, info=info)
    return predictor


def test_the_card_keeps_file_names_and_hashes_and_drops_every_server_path(trained_predictor) -> None:
    card = model_card(trained_predictor)
    text = json.dumps(card)
    assert not [folder for folder in SERVER_FOLDERS if folder in text]
    assert "cache64" not in text and "mura/index.csv" not in text
    member = card["members"][0]
    assert member["checkpoint"] == "best.pt"
    assert member["test_metrics"]["data"] == "test_index.csv"
    assert member["cross_validation"] == {"folds": 5, "fold": 2}
    assert member["versions"]["mura"] == "0.1.0"
    assert member["training_data"] == {"train_split": "train", "val_split": "val", "max_train_images": 0}
    assert card["model"]["sha256"] == trained_predictor.identity.sha256 and len(card["model"]["sha256"]) == 64


def test_the_card_says_what_the_model_is_for_and_what_each_tier_was_validated_at(trained_predictor) -> None:
    """What the page's "About this model" shows: use, not a medical device, data, tiers, held-out test."""
    member = trained_predictor.members[0]
    decision = Decision(
        thresholds={"default": 0.5, "suspicious": 0.08, "definite": 0.62},
        fitted_on="out-of-fold predictions of 5-fold cross-validation (2826 images)",
        figures={
            "suspicious": PointFigures(tp=65, fp=800, tn=1300, fn=5),
            "definite": PointFigures(40, 90, 2010, 30),
        },
    )
    info = {**member.info, "scope_parts": ["HAND", "WRIST", "KNEE"]}
    info["provenance"] = {
        **info["provenance"],
        "scope": "body parts named by the train, val split(s) (2261 images)",
    }
    trained_predictor.members[0] = dataclasses.replace(
        member, decision=decision, positive_class="fracture", info=info
    )
    card = model_card(trained_predictor)
    assert "fractures" in card["intended_use"] and "hand, knee, wrist" in card["intended_use"]
    assert "not a medical device" in card["not_a_medical_device"]
    assert card["trained_on"]["labels"] == "fracture"
    assert card["trained_on"]["body_parts"] == ["HAND", "KNEE", "WRIST"]
    assert card["trained_on"]["body_parts_from"] == [
        "body parts named by the train, val split(s) (2261 images)"
    ]
    tiers = {row["tier"]: row for row in card["validation"]}
    assert [row["text"] for row in card["validation"]] == [
        "Fracture likely",
        "Possible fracture",
        "No fracture seen",
    ]
    assert tiers["possible_fracture"]["sensitivity"] == pytest.approx(65 / 70)
    assert tiers["fracture_likely"]["specificity"] == pytest.approx(2010 / 2100)
    assert tiers["no_fracture_seen"]["npv"] == pytest.approx(1300 / 1305)  # the lowest point's NPV
    assert tiers["no_fracture_seen"]["validated_on"].startswith("out-of-fold")
    assert card["held_out_test"]["n_images"] == 40 and card["held_out_test"]["data"] == "test_index.csv"

"""Layer 3 of the scope gate: a detector fitted on the training films' features at training time, stored
in the checkpoint with a threshold for a stated refusal rate, and applied from the prediction's own pass."""

from __future__ import annotations

import shutil
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from mura.checkpoint import load_checkpoint
from mura.data.cache import open_cache
from mura.inference.cache_predictions import predict_cache
from mura.inference.files import iter_file_predictions
from mura.inference.predictor import Predictor
from mura.inference.scope import image_reasons, not_assessed_rows
from mura.inference.scope_features import FeatureGate
from mura.inference.trace import RunTrace
from mura.models.feature_depths import feature_depths
from mura.scope_detector import ScopeDetector
from mura.training.loop import train
from mura.training.scope_fit import fit_checkpoint_detector, rows_features


@pytest.fixture(scope="module")
def trained(make_cfg):
    """custom_cnn at 32 px, two epochs on synthetic MURA: best.pt carries its detector."""
    cfg = make_cfg("scope_features")
    return cfg, train(cfg)


@pytest.fixture(scope="module")
def test_films(trained):
    cfg, _ = trained
    cache = open_cache(cfg.data.cache)
    rows = cache.index[cache.index["split"] == "test"]
    return np.asarray(cache.images[rows["cache_row"].to_numpy()])


def _refused_share(predictor: Predictor, images) -> float:
    batch = predictor.predict_images(list(images))
    return float(np.mean([bool(r) for r in batch.feature_reasons]))


def test_training_stores_a_detector_that_refuses_the_stated_share_of_its_validation_films(trained) -> None:
    cfg, result = trained
    checkpoint = load_checkpoint(result.best_checkpoint)  # weights_only: tensors and plain types
    detector = checkpoint.meta.scope_detector
    assert detector is not None and detector.variant == "plain" and len(detector.depths) == 3
    assert detector.target_rate == 0.01 and "val split" in detector.fitted_on
    cache = open_cache(cfg.data.cache)
    model = (
        Predictor.from_checkpoints([result.best_checkpoint], device="cpu", runtime="torch").members[0].model
    )
    val = cache.index[cache.index["split"] == "val"]
    scores = detector.scores(rows_features(model, cache, val, checkpoint.meta.preprocessing))
    assert np.mean(scores > detector.threshold) == detector.rate_reached <= detector.target_rate
    assert detector.depth_names == feature_depths(model)


def test_the_detector_refits_to_the_same_numbers(trained, tmp_path) -> None:
    cfg, result = trained
    stored = load_checkpoint(result.best_checkpoint).meta.scope_detector
    copy = shutil.copy(result.best_checkpoint, tmp_path / "best.pt")
    cache = open_cache(cfg.data.cache)
    again = fit_checkpoint_detector(copy, cache, "train", "val", device="cpu", seed=cfg.train.seed)
    assert again.threshold == stored.threshold and again.rate_reached == stored.rate_reached
    for mine, theirs in zip(again.depths, stored.depths, strict=True):
        assert np.allclose(mine.whitening, theirs.whitening, rtol=1e-5, atol=1e-6)
        assert np.allclose(mine.class_means, theirs.class_means, rtol=1e-5, atol=1e-6)


def test_inputs_unlike_the_training_films_are_refused_far_more_often(trained, test_films) -> None:
    _, result = trained
    predictor = Predictor.from_checkpoints([result.best_checkpoint], device="cpu")
    inverted = 255 - test_films
    assert not any(image_reasons(x) for x in inverted)  # layers 1-2 let them through
    in_scope, out_of_scope = _refused_share(predictor, test_films), _refused_share(predictor, inverted)
    assert in_scope <= 0.1 and out_of_scope >= 0.5


def test_a_refused_file_is_not_assessed_unless_everything_is_scored(trained, test_films, tmp_path) -> None:
    _, result = trained
    predictor = Predictor.from_checkpoints([result.best_checkpoint], device="cpu")
    batch = predictor.predict_images(list(255 - test_films))
    refused = next(i for i, r in enumerate(batch.feature_reasons) if r)
    path = tmp_path / "inverted.png"
    Image.fromarray(255 - test_films[refused]).save(path)
    (gated,) = [r.prediction for r in iter_file_predictions(predictor, [path])]
    assert gated.decision == "not_assessed" and gated.fracture_probability is None
    assert gated.reasons[0].startswith("features: unlike the training films (distance ")
    assert "set for 1% refusals of held-out in-scope films" in gated.reasons[0]
    (scored,) = [r.prediction for r in iter_file_predictions(predictor, [path], score_all=True)]
    assert scored.decision in ("abnormal", "normal") and scored.fracture_probability is not None
    assert any(w.startswith("out of scope, scored anyway: features:") for w in scored.warnings)


def test_evaluation_counts_refusals_by_the_feature_layer(trained) -> None:
    cfg, result = trained
    predictor = Predictor.from_checkpoints([result.best_checkpoint], device="cpu")
    member = predictor.members[0]
    member.scope_detector = replace(member.scope_detector, threshold=-np.inf)  # refuses every film
    cache = open_cache(cfg.data.cache)
    predictions = predict_cache(predictor, cache, "test")
    rows = cache.index[cache.index["split"] == "test"]
    refused = not_assessed_rows(cache.images, rows, predictions)
    assert len(refused) == len(rows) and set(refused["layer"]) == {"features"}
    assert not_assessed_rows(cache.images, rows).empty  # layer 2 alone refuses none of them


def test_the_trace_names_the_layers_applied(trained, tiny_checkpoint) -> None:
    _, result = trained
    gated = RunTrace(Predictor.from_checkpoints([result.best_checkpoint], device="cpu")).to_dict()["scope"]
    assert gated["layers"] == ["dicom", "pixels", "features"] and gated["features"]["members_gated"] == 1
    plain = RunTrace(Predictor.from_checkpoints([tiny_checkpoint], device="cpu")).to_dict()["scope"]
    assert plain["layers"] == ["dicom", "pixels"]
    assert "no scope detector" in plain["features"]["members_not_gated"][0]


def test_an_ensemble_refuses_when_its_members_mean_margin_is_positive(trained) -> None:
    _, result = trained
    stored = load_checkpoint(result.best_checkpoint).meta.scope_detector
    low: ScopeDetector = replace(stored, threshold=1.0)
    high: ScopeDetector = replace(stored, threshold=3.0)
    gate = FeatureGate((low, high, None))  # a member without a detector does not vote
    reasons = gate.reasons([np.array([1.5, 2.5]), np.array([2.0, 4.0]), None])
    assert reasons[0] == []  # margins +0.5 and -1.0: mean below zero
    assert "distance 3.2 > 2.0, mean of 2 members" in reasons[1][0]  # +1.5 and +1.0


def test_auto_runtime_keeps_torch_where_the_export_would_skip_the_detector(trained, tmp_path) -> None:
    from mura.inference.onnx_export import export_onnx

    _, result = trained
    checkpoint = tmp_path / "best.pt"
    shutil.copy2(result.best_checkpoint, checkpoint)
    export_onnx(checkpoint, checkpoint.with_suffix(".onnx"))  # a fresh sibling `auto` would take
    assert Predictor.from_checkpoints([checkpoint], device="cpu").runtime == "torch"
    onnx_only = Predictor.from_checkpoints([checkpoint.with_suffix(".onnx")], device="cpu")
    assert onnx_only.runtime == "onnx"  # asked for by name, it runs; the trace says layer 3 was not applied
    assert "not applied" in onnx_only.members[0].info["scope_features"]

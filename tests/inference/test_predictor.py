"""Predictor: exact checkpoint preprocessing, ensembles, TTA, thresholds, body-part modes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.special import expit

from mura.checkpoint import load_model
from mura.errors import MuraError
from mura.inference.predictor import Predictor
from mura.preprocessing import resize_image


def images(n: int = 5, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    shapes = [(40, 56), (64, 48), (33, 33), (80, 60), (50, 70)]
    return [rng.integers(0, 256, shapes[i % len(shapes)], dtype=np.uint8) for i in range(n)]


def manual_probs(path, imgs, parts, flip: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """What the checkpoint means, computed by hand: resize, /255, (x - mean) / std, model, softmax."""
    model, checkpoint = load_model(path, "cpu")
    pre = checkpoint.meta.preprocessing
    x = np.stack([resize_image(im, pre.size, pre.resize_mode) for im in imgs]).astype(np.float32)
    x = torch.from_numpy((x / 255.0 - pre.mean) / pre.std)[:, None]
    if flip:
        x = torch.flip(x, dims=[-1])
    with torch.no_grad():
        output = model(x, torch.tensor(parts))
    fracture, body = output.fracture_logits, output.body_part_logits
    return expit((fracture[:, 1] - fracture[:, 0]).double().numpy()), torch.softmax(body.double(), 1).numpy()


def test_single_model_uses_the_checkpoint_preprocessing(make_checkpoint) -> None:
    path = make_checkpoint("letterbox48.pt", "custom_cnn", 48, seed=3, resize_mode="letterbox")
    imgs, parts = images(), [-1, 0, 3, -1, 6]
    batch = Predictor.from_checkpoints([path], runtime="torch").predict_images(imgs, parts)
    expected_fracture, expected_body = manual_probs(path, imgs, parts)
    np.testing.assert_allclose(batch.fracture_prob, expected_fracture, atol=1e-5)
    np.testing.assert_allclose(batch.body_part_probs, expected_body, atol=1e-5)
    assert batch.body_part_used == ["predicted", "given", "given", "predicted", "given"]
    assert batch.body_part[1:3].tolist() == [0, 3]
    assert batch.body_part[0] == expected_body[0].argmax()
    assert np.ptp(batch.fracture_prob) > 1e-3  # the inputs matter: not a constant model


def test_ensemble_is_the_mean_of_its_members_even_with_different_sizes(make_checkpoint) -> None:
    a = make_checkpoint("cnn32.pt", "custom_cnn", 32, seed=1, threshold={"default": 0.5, "youden": 0.3})
    b = make_checkpoint("cnn48.pt", "custom_cnn", 48, seed=2, threshold={"default": 0.5, "youden": 0.6})
    imgs, parts = images(6), [-1, 1, 2, -1, 4, 5]
    members = [Predictor.from_checkpoints([p], runtime="torch").predict_images(imgs, parts) for p in (a, b)]
    ensemble = Predictor.from_checkpoints([a, b], runtime="torch")
    both = ensemble.predict_images(imgs, parts)
    np.testing.assert_allclose(both.fracture_prob, (members[0].fracture_prob + members[1].fracture_prob) / 2)
    np.testing.assert_allclose(
        both.body_part_probs, (members[0].body_part_probs + members[1].body_part_probs) / 2
    )
    assert ensemble.threshold_name == "youden" and both.threshold == pytest.approx(0.45)
    assert [len(s) for s in [ensemble.input_specs]] == [2]
    assert np.array_equal(both.decision, both.fracture_prob >= 0.45)


def test_flip_tta_averages_the_image_and_its_mirror(make_checkpoint) -> None:
    path = make_checkpoint("cnn32.pt", "custom_cnn", 32, seed=1, threshold={"default": 0.5, "youden": 0.3})
    imgs, parts = images(4), [2, 2, -1, 5]
    batch = Predictor.from_checkpoints([path], runtime="torch", tta=True).predict_images(imgs, parts)
    plain, _ = manual_probs(path, imgs, parts)
    mirrored, _ = manual_probs(path, imgs, parts, flip=True)
    np.testing.assert_allclose(batch.fracture_prob, (plain + mirrored) / 2, atol=1e-5)
    assert not np.allclose(plain, mirrored, atol=1e-4)


def test_operating_point_choice_and_calibration(make_checkpoint) -> None:
    plain = make_checkpoint("plain.pt", "custom_cnn", 32, seed=4)
    tuned = make_checkpoint(
        "tuned.pt",
        "custom_cnn",
        32,
        seed=4,
        threshold={"default": 0.5, "youden": 0.2, "suspicious": 0.1, "definite": 0.8},
        temperature=2.0,
    )
    assert Predictor.from_checkpoints([plain]).threshold_name == "default"  # nothing stored -> 0.5
    assert Predictor.from_checkpoints([plain]).threshold == 0.5
    default = Predictor.from_checkpoints([tuned])
    assert (default.threshold_name, default.threshold) == ("suspicious", 0.1)  # high sensitivity first
    assert Predictor.from_checkpoints([tuned], threshold="definite").threshold == 0.8
    assert Predictor.from_checkpoints([tuned], threshold=0.7).threshold_name == "custom"
    with pytest.raises(MuraError, match="no stored operating point 'youden'"):
        Predictor.from_checkpoints([plain, tuned], threshold="youden")
    with pytest.raises(MuraError, match="not a probability"):
        Predictor.from_checkpoints([tuned], threshold=1.5)
    imgs, parts = images(), [0] * 5
    raw = Predictor.from_checkpoints([plain]).predict_images(imgs, parts)  # same weights, no calibration
    calibrated = default.predict_images(imgs, parts)
    logits = np.log(raw.fracture_prob / (1 - raw.fracture_prob))
    np.testing.assert_allclose(calibrated.fracture_prob, expit(logits / 2.0), atol=1e-5)
    np.testing.assert_allclose(calibrated.uncalibrated_prob, raw.fracture_prob, atol=1e-9)
    record = calibrated.prediction(0, default.identity)
    assert record.operating_point == "suspicious" and record.threshold == 0.1
    assert record.decision == ("abnormal" if record.fracture_probability >= 0.1 else "normal")


def test_model_without_body_part_head_needs_given_parts(make_checkpoint) -> None:
    path = make_checkpoint("single.pt", "custom_cnn", 32, seed=5, body_part_head=False)
    predictor = Predictor.from_checkpoints([path])
    assert len(predictor.predict_images(images(2), [1, 2])) == 2
    with pytest.raises(MuraError, match="no body-part head"):
        predictor.predict_images(images(2), [1, -1])


def test_missing_checkpoint_is_a_one_line_error(tmp_path) -> None:
    with pytest.raises(MuraError, match="checkpoint not found"):
        Predictor.from_checkpoints([tmp_path / "nope.pt"])

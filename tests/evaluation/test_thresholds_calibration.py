"""Thresholds chosen on validation hit their target; temperature scaling lowers NLL; ECE by hand."""

import numpy as np
import pytest

from mura.evaluation.calibration import (
    apply_temperature,
    binary_nll,
    expected_calibration_error,
    fit_temperature,
    probs_to_logits,
)
from mura.evaluation.thresholds import apply_threshold, choose_thresholds


def _scores(n=400, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    probs = np.clip(rng.normal(0.35 + 0.3 * labels, 0.15), 0, 1)
    return labels, probs


@pytest.mark.parametrize("target", [0.8, 0.9, 0.95])
def test_sensitivity_threshold_is_the_highest_reaching_the_target(target):
    labels, probs = _scores()
    chosen = choose_thresholds(labels, probs, target)
    t = chosen[f"sensitivity_{target:.2f}"]
    sens = apply_threshold(probs[labels == 1], t).mean()
    assert sens >= target
    higher = np.nextafter(t, 1.0)
    assert apply_threshold(probs[labels == 1], higher).mean() < target
    assert chosen["default"] == 0.5


def test_youden_threshold_maximises_j():
    labels, probs = _scores()
    t = choose_thresholds(labels, probs)["youden"]

    def j(thr):
        pred = apply_threshold(probs, thr)
        return pred[labels == 1].mean() - pred[labels == 0].mean()

    assert j(t) >= max(j(c) for c in np.linspace(0, 1, 201)) - 1e-12


def test_degenerate_validation_keeps_half(caplog):
    assert choose_thresholds(np.zeros(5, int), np.linspace(0, 1, 5)) == {
        "default": 0.5,
        "youden": 0.5,
        "sensitivity_0.90": 0.5,
    }
    assert "no positives" in caplog.text
    assert choose_thresholds(np.array([], int), np.array([]))["youden"] == 0.5


def test_temperature_scaling_lowers_nll_of_overconfident_logits():
    rng = np.random.default_rng(1)
    true_log_odds = rng.normal(0.0, 1.5, 4000)
    labels = (rng.random(4000) < 1 / (1 + np.exp(-true_log_odds))).astype(int)
    logits = np.stack([np.zeros(4000), 4.0 * true_log_odds], axis=1)  # 4x overconfident
    t = fit_temperature(logits, labels)
    assert 3.3 < t < 4.8
    margins = logits[:, 1] - logits[:, 0]
    assert binary_nll(margins, labels, t) < binary_nll(margins, labels, 1.0)


def test_temperature_degenerate_is_one():
    assert fit_temperature(np.zeros((3, 2)), np.zeros(3, int)) == 1.0
    assert fit_temperature(np.zeros((0, 2)), np.zeros(0, int)) == 1.0


def test_probs_round_trip_through_logits():
    p = np.array([0.01, 0.3, 0.5, 0.9])
    assert np.allclose(apply_temperature(p, 1.0), p)
    logits = probs_to_logits(p)
    assert np.allclose(np.exp(logits[:, 1]) / np.exp(logits).sum(1), p)


def test_ece_by_hand():
    # Two bins used: [0.2 bin] two samples, one positive -> |0.5 - 0.2| ; [0.8 bin] two positives -> 0.2
    labels = np.array([0, 1, 1, 1])
    probs = np.array([0.2, 0.2, 0.8, 0.8])
    assert expected_calibration_error(labels, probs, bins=10) == pytest.approx(0.5 * 0.3 + 0.5 * 0.2)
    assert expected_calibration_error(np.array([]), np.array([])) is None

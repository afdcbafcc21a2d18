"""The decision module: calibration recovers a known shift, operating points hit their targets."""

import numpy as np
import pytest

from mura.decision import (
    Calibration,
    Decision,
    apply_threshold,
    auc_or_nan,
    binary_nll,
    fit_calibration,
    fit_decision,
    kappa_or_nan,
    margins_from_probs,
    operating_points,
)
from mura.evaluation.calibration import expected_calibration_error


def _scores(n=400, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    probs = np.clip(rng.normal(0.35 + 0.3 * labels, 0.15), 0.001, 0.999)
    return labels, probs


def _shifted(n=6000, slope=0.4, intercept=-1.5, seed=1):
    """Labels drawn from sigmoid(true z); the model reports z' with sigmoid(slope z' + intercept) = p."""
    rng = np.random.default_rng(seed)
    true = rng.normal(-0.8, 1.6, n)
    labels = (rng.random(n) < 1 / (1 + np.exp(-true))).astype(int)
    reported = (true - intercept) / slope  # over-confident and shifted up, as class weighting does
    return reported, labels


@pytest.mark.parametrize("target", [0.8, 0.9, 0.95])
def test_suspicious_point_is_the_highest_reaching_the_target_sensitivity(target):
    labels, probs = _scores()
    t = operating_points(labels, probs, target_sensitivity=target)["suspicious"]
    assert apply_threshold(probs[labels == 1], t).mean() >= target
    assert apply_threshold(probs[labels == 1], np.nextafter(t, 1.0)).mean() < target


@pytest.mark.parametrize("target", [0.8, 0.9, 0.95])
def test_definite_point_is_the_lowest_reaching_the_target_specificity(target):
    labels, probs = _scores()
    t = operating_points(labels, probs, target_specificity=target)["definite"]
    specificity = 1 - apply_threshold(probs[labels == 0], t).mean()
    assert specificity >= target
    lower = np.sort(probs[labels == 0])
    below = lower[lower < t].max()  # the next lower candidate flips one more negative to abnormal
    assert 1 - apply_threshold(probs[labels == 0], below).mean() < target


def test_youden_threshold_maximises_j():
    labels, probs = _scores()
    t = operating_points(labels, probs)["youden"]

    def j(thr):
        pred = apply_threshold(probs, thr)
        return pred[labels == 1].mean() - pred[labels == 0].mean()

    assert j(t) >= max(j(c) for c in np.linspace(0, 1, 201)) - 1e-12


def test_degenerate_data_keeps_half(caplog):
    points = operating_points(np.zeros(5, int), np.linspace(0, 1, 5))
    assert set(points.values()) == {0.5}
    assert "both classes" in caplog.text
    assert operating_points(np.array([], int), np.array([]))["suspicious"] == 0.5


def test_platt_recovers_a_known_shift_and_temperature_cannot():
    margins, labels = _shifted()
    platt = fit_calibration(margins, labels, "platt")
    assert platt.slope == pytest.approx(0.4, abs=0.04)
    assert platt.intercept == pytest.approx(-1.5, abs=0.15)
    temperature = fit_calibration(margins, labels, "temperature")
    assert temperature.intercept == 0.0
    raw_ece = expected_calibration_error(labels, Calibration().probabilities(margins))
    platt_ece = expected_calibration_error(labels, platt.probabilities(margins))
    temp_ece = expected_calibration_error(labels, temperature.probabilities(margins))
    assert platt_ece < 0.03 < temp_ece < raw_ece
    assert binary_nll(margins, labels, platt.slope, platt.intercept) < binary_nll(margins, labels)


def test_calibration_degenerate_is_identity():
    assert fit_calibration(np.zeros(3), np.zeros(3, int)) == Calibration()
    assert fit_calibration(np.zeros(0), np.zeros(0, int), "temperature") == Calibration()


def test_fit_decision_thresholds_live_on_the_calibrated_scale_and_round_trip():
    margins, labels = _shifted(2000)
    decision = fit_decision(margins, labels, method="platt", target_sensitivity=0.9, fitted_on="test data")
    probs = decision.probabilities(margins)
    assert apply_threshold(probs[labels == 1], decision.threshold("suspicious")).mean() >= 0.9
    assert decision.default_point() == "suspicious"
    assert Decision.from_dict(decision.to_dict()) == decision


def test_auc_and_kappa_edge_cases():
    assert np.isnan(auc_or_nan(np.ones(4, int), np.linspace(0, 1, 4)))
    assert np.isnan(kappa_or_nan(np.zeros(4, int), np.zeros(4, int)))
    assert kappa_or_nan(np.array([0, 1, 0, 1]), np.zeros(4, int)) == 0.0
    assert auc_or_nan(np.array([0, 1]), np.array([0.2, 0.8])) == 1.0


def test_margins_round_trip():
    p = np.array([0.01, 0.3, 0.5, 0.9])
    assert np.allclose(Calibration().probabilities(margins_from_probs(p)), p)


def test_ece_by_hand():
    # Two bins used: [0.2 bin] two samples, one positive -> |0.5 - 0.2| ; [0.8 bin] two positives -> 0.2
    labels = np.array([0, 1, 1, 1])
    probs = np.array([0.2, 0.2, 0.8, 0.8])
    assert expected_calibration_error(labels, probs, bins=10) == pytest.approx(0.5 * 0.3 + 0.5 * 0.2)
    assert expected_calibration_error(np.array([]), np.array([])) is None

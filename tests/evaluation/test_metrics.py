"""Metrics equal hand-computed values; degenerate input is "undefined" with a reason, never a crash."""

import warnings

import numpy as np
import pandas as pd
import pytest

from mura.constants import BODY_PARTS
from mura.evaluation.metrics import fracture_metrics, per_group_fracture_metrics


def test_fracture_metrics_match_hand_computation():
    # truth 0 0 0 1 1 ; probs give predictions 0 1 0 1 0 at threshold 0.5
    labels = np.array([0, 0, 0, 1, 1])
    probs = np.array([0.1, 0.6, 0.3, 0.8, 0.4])
    m = fracture_metrics(labels, probs, 0.5)
    assert m["confusion_matrix"] == [[2, 1], [1, 1]]
    assert m["accuracy"] == pytest.approx(3 / 5)
    c0, c1 = m["report"]["classes"]
    assert (c0["precision"], c0["recall"], c0["support"]) == (pytest.approx(2 / 3), pytest.approx(2 / 3), 3)
    assert (c1["precision"], c1["recall"], c1["support"]) == (pytest.approx(1 / 2), pytest.approx(1 / 2), 2)
    assert c1["f1"] == pytest.approx(0.5)
    assert m["report"]["macro_avg"]["f1"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert m["report"]["weighted_avg"]["recall"] == pytest.approx(3 / 5)
    # AUC: positives 0.8, 0.4 vs negatives 0.1, 0.6, 0.3 -> pairs won: 3 + 2 = 5 of 6
    assert m["roc_auc"] == pytest.approx(5 / 6)
    # kappa: p_o = 0.6, p_e = (3/5*3/5) + (2/5*2/5) = 0.52
    assert m["kappa"] == pytest.approx((0.6 - 0.52) / (1 - 0.52))
    assert m["sensitivity"] == pytest.approx(0.5) and m["specificity"] == pytest.approx(2 / 3)
    assert m["undefined"] == {}


def test_threshold_is_inclusive():
    m = fracture_metrics(np.array([0, 1]), np.array([0.2, 0.5]), 0.5)
    assert m["accuracy"] == 1.0


@pytest.mark.parametrize("labels", [np.array([0, 0, 0]), np.array([1, 1]), np.array([], dtype=int)])
def test_degenerate_fracture_input_is_undefined_not_a_crash(labels):
    probs = np.linspace(0.1, 0.9, len(labels))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no scikit-learn warning may escape
        m = fracture_metrics(labels, probs, 0.5)
    assert m["roc_auc"] is None and "roc_auc" in m["undefined"]
    if len(labels) == 0:
        assert m["accuracy"] is None and m["kappa"] is None
        assert m["undefined"]["kappa"] == "no samples"


def test_kappa_undefined_when_everything_is_one_class():
    m = fracture_metrics(np.array([0, 0, 0]), np.array([0.1, 0.2, 0.3]), 0.5)
    assert m["accuracy"] == 1.0
    assert m["kappa"] is None and "chance agreement" in m["undefined"]["kappa"]
    assert m["report"]["classes"][1]["precision"] is None


def test_missing_body_part_group_is_reported_undefined():
    frame = pd.DataFrame(
        {"body_part": ["ELBOW", "ELBOW", "HAND"], "label": [0, 1, 1], "fracture_prob": [0.2, 0.7, 0.9]}
    )
    groups = per_group_fracture_metrics(frame, "body_part", 0.5, groups=BODY_PARTS)
    assert list(groups)[: len(BODY_PARTS)] == list(BODY_PARTS)
    assert groups["ELBOW"]["roc_auc"] == 1.0
    assert groups["WRIST"]["n"] == 0 and groups["WRIST"]["accuracy"] is None
    assert groups["HAND"]["roc_auc"] is None  # one class only

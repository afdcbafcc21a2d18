"""Three tiers in plain words: the rule, the figures each tier carries, the words per positive class."""

from __future__ import annotations

import numpy as np
import pytest

from mura.checkpoint_meta import positive_class_of
from mura.decision import Decision, PointFigures, fit_decision, point_figures
from mura.tiers import TierScale


@pytest.fixture(scope="module")
def fitted() -> Decision:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 600)
    margins = rng.normal(-1.0 + 2.0 * labels, 1.2)
    return fit_decision(
        margins, labels, target_sensitivity=0.9, target_specificity=0.9, fitted_on="val split"
    )


def test_three_tiers_at_definite_and_suspicious_with_their_validated_figures(fitted) -> None:
    scale = TierScale.of([fitted], ["fracture"])
    definite, suspicious = fitted.thresholds["definite"], fitted.thresholds["suspicious"]
    assert suspicious < definite
    likely = scale.assign(definite)
    possible = scale.assign((definite + suspicious) / 2)
    nothing = scale.assign(np.nextafter(suspicious, 0))
    assert [t.tier for t in (likely, possible, nothing)] == [
        "fracture_likely",
        "possible_fracture",
        "no_fracture_seen",
    ]
    assert [t.tier_text for t in (likely, possible, nothing)] == [
        "Fracture likely",
        "Possible fracture",
        "No fracture seen",
    ]
    counts = fitted.figures["definite"]
    assert likely.tier_figures.operating_point == "definite" and likely.tier_figures.threshold == definite
    assert likely.tier_figures.specificity == pytest.approx(counts.specificity) and counts.specificity >= 0.9
    assert likely.tier_figures.ppv == pytest.approx(counts.ppv) and likely.tier_figures.images == 600
    assert likely.tier_figures.validated_on == "val split"
    # "nothing seen" is worth the NPV of the lowest point, the one it fell below
    assert nothing.tier_figures.operating_point == "suspicious"
    assert nothing.tier_figures.npv == pytest.approx(fitted.figures["suspicious"].npv)
    assert nothing.tier_figures.sensitivity >= 0.9


def test_abnormality_labels_give_abnormality_words(fitted) -> None:
    scale = TierScale.of([fitted], ["abnormality"])
    assert scale.assign(0.999).tier_text == "Abnormality likely"
    assert scale.assign(0.0).tier_text == "No abnormality seen"
    assert scale.assign(0.999).tier == "fracture_likely"  # the code stays; only the words change
    assert TierScale.of([fitted, fitted], ["fracture", "abnormality"]).positive_class == "abnormality"


def test_one_stored_point_gives_two_tiers_around_it() -> None:
    old = Decision(thresholds={"default": 0.5, "youden": 0.4}, fitted_on="format 1 checkpoint")
    scale = TierScale.of([old], ["fracture"])
    assert [scale.assign(p).tier for p in (0.99, 0.4, 0.39)] == [
        "possible_fracture",
        "possible_fracture",
        "no_fracture_seen",
    ]
    figures = scale.assign(0.99).tier_figures
    assert (figures.operating_point, figures.threshold) == ("youden", 0.4)
    assert figures.sensitivity is None and figures.validated_on is None  # never recorded: nothing claimed
    only_definite = TierScale.of([Decision(thresholds={"definite": 0.7})], ["fracture"])
    assert [only_definite.assign(p).tier for p in (0.7, 0.69)] == ["fracture_likely", "no_fracture_seen"]
    assert "Fracture likely >= 0.7 (definite)" in only_definite.describe()


def test_when_definite_lies_below_suspicious_there_is_no_doubt_band() -> None:
    decision = Decision(thresholds={"suspicious": 0.6, "definite": 0.3})
    scale = TierScale.of([decision], ["fracture"])
    assert [scale.assign(p).tier for p in (0.7, 0.5, 0.2)] == [
        "fracture_likely",
        "fracture_likely",
        "no_fracture_seen",
    ]
    assert scale.assign(0.2).tier_figures.operating_point == "definite"


def test_an_ensemble_states_figures_only_when_its_members_were_validated_together(fitted) -> None:
    together = TierScale.of([fitted, fitted], ["fracture", "fracture"])
    assert together.assign(0.99).tier_figures.ppv == pytest.approx(fitted.figures["definite"].ppv)
    other = Decision(
        thresholds={"suspicious": 0.2, "definite": 0.8},
        fitted_on="another model's val split",
        figures={"suspicious": PointFigures(9, 5, 5, 1), "definite": PointFigures(5, 1, 9, 5)},
    )
    apart = TierScale.of([fitted, other], ["fracture", "fracture"])
    figures = apart.assign(0.99).tier_figures
    assert figures.threshold == pytest.approx((fitted.thresholds["definite"] + 0.8) / 2)  # as predict decides
    assert figures.ppv is None and figures.images is None


def test_counts_at_each_point_by_hand() -> None:
    labels = np.array([1, 1, 1, 0, 0, 0, 0, 0])
    probs = np.array([0.9, 0.6, 0.2, 0.7, 0.3, 0.1, 0.1, 0.1])
    counts = point_figures(labels, probs, {"low": 0.5})["low"]
    assert counts == PointFigures(tp=2, fp=1, tn=4, fn=1)
    assert (counts.sensitivity, counts.specificity) == pytest.approx((2 / 3, 4 / 5))
    assert (counts.ppv, counts.npv, counts.prevalence) == pytest.approx((2 / 3, 4 / 5, 3 / 8))
    assert PointFigures(0, 0, 4, 0).sensitivity is None  # no positive: undefined, not 0
    assert point_figures(labels[:0], probs[:0], {"low": 0.5}) == {}


def test_figures_round_trip_and_old_decisions_load_without_them(fitted) -> None:
    assert Decision.from_dict(fitted.to_dict()) == fitted
    old = {k: v for k, v in fitted.to_dict().items() if k != "figures"}
    assert Decision.from_dict(old).figures == {}


@pytest.mark.parametrize(
    ("sources", "meaning"),
    [
        (["fracatlas"], "fracture"),
        (["folders", "fracatlas"], "fracture"),
        (["mura"], "abnormality"),
        (["synthetic"], "abnormality"),
        (["fracatlas", "mura"], "abnormality"),  # mixed: the wider claim
        ([""], "abnormality"),  # an index that does not say
        ([], "abnormality"),
    ],
)
def test_what_label_one_means_follows_the_training_sources(sources, meaning) -> None:
    assert positive_class_of(sources) == meaning

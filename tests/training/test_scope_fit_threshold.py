"""Where the scope detector's refusal threshold sits among the held-out scores it is set on."""

from __future__ import annotations

import numpy as np
import pytest

from mura.training.scope_fit import refusal_threshold


def test_the_threshold_refuses_the_stated_share_and_sits_between_scores_not_on_one() -> None:
    scores = np.arange(1.0, 201.0)  # 200 films: at most 1% refused (the quantile keeps 199 of them)
    threshold, reached = refusal_threshold(scores, 0.01)
    assert reached == 0.005 and threshold == 199.5
    assert np.mean(scores * (1 + 1e-9) > threshold) == reached  # rescoring noise flips no film


def test_with_too_few_films_to_refuse_any_the_threshold_clears_the_highest_by_a_margin() -> None:
    scores = np.array([0.5, 3.7, 17.8857757])
    threshold, reached = refusal_threshold(scores, 0.01)
    assert reached == 0.0 and threshold == pytest.approx(17.8857757 * 1.0005)
    assert not np.any(scores * (1 + 1e-6) > threshold)  # the film at the top stays kept when rescored

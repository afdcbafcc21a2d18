"""Study-level aggregation (order-invariant), the MURA scorer file, ensembles, bootstrap over studies."""

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import roc_auc_score

from mura.constants import MURA_BODY_PARTS
from mura.evaluation.bootstrap import bootstrap_over_studies
from mura.evaluation.report import ensemble_tables
from mura.evaluation.study import study_level_scores, study_metrics, write_mura_scorer_csv


def _images(n_studies=60, seed=0, max_views=3):
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(n_studies):
        label = int(rng.random() < 0.4)
        for v in range(int(rng.integers(1, max_views + 1))):
            rows.append(
                dict(
                    path=f"/d/s{s}/image{v}.png",
                    study_id=f"MURA-v1.1/valid/XR_HAND/p{s}/study1/",
                    body_part="HAND" if s % 2 else "WRIST",
                    label=label,
                    fracture_prob=float(np.clip(rng.normal(0.35 + 0.3 * label, 0.2), 0, 1)),
                )
            )
    return pd.DataFrame(rows)


def test_study_probability_is_the_mean_of_its_images():
    df = pd.DataFrame(
        {
            "study_id": ["a", "a", "b"],
            "body_part": ["HAND", "HAND", ""],
            "label": [1, 1, 0],
            "fracture_prob": [0.2, 0.6, 0.9],
        }
    )
    studies = study_level_scores(df).set_index("study_id")
    assert studies.loc["a", "fracture_prob"] == pytest.approx(0.4)
    assert studies.loc["a", "n_images"] == 2 and studies.loc["b", "label"] == 0


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), order_seed=st.integers(0, 10_000))
def test_study_aggregation_is_invariant_to_image_order(seed, order_seed):
    df = _images(n_studies=15, seed=seed)
    shuffled = df.sample(frac=1.0, random_state=order_seed).reset_index(drop=True)
    pd.testing.assert_frame_equal(study_level_scores(df), study_level_scores(shuffled))
    a, b = study_metrics(df, 0.5, MURA_BODY_PARTS), study_metrics(shuffled, 0.5, MURA_BODY_PARTS)
    assert a["overall"]["roc_auc"] == b["overall"]["roc_auc"]
    assert a["kappa"] == b["kappa"]


def test_study_metrics_have_per_part_kappa_and_missing_parts_undefined():
    m = study_metrics(_images(), 0.5, MURA_BODY_PARTS)
    assert m["kappa"]["HAND"]["kappa"] is not None
    assert m["kappa"]["ELBOW"] == {"kappa": None, "n_studies": 0, "undefined": "no samples"}
    assert m["n_studies"] == 60


def test_mura_scorer_file_is_headerless_study_prediction(tmp_path):
    studies = study_level_scores(_images(n_studies=5))
    path = write_mura_scorer_csv(studies, 0.5, tmp_path / "scorer.csv")
    lines = path.read_text().splitlines()
    assert len(lines) == 5
    study, pred = lines[0].rsplit(",", 1)
    assert study.startswith("MURA-v1.1/valid/") and pred in ("0", "1")
    expected = (studies["fracture_prob"] >= 0.5).astype(int).astype(str).tolist()
    assert [line.rsplit(",", 1)[1] for line in lines] == expected


def test_ensemble_averages_member_probabilities_by_path():
    a = pd.DataFrame(
        {
            "path": ["x", "y", "z"],
            "label": [0, 1, 1],
            "fracture_prob": [0.2, 0.8, 0.4],
            "body_part_pred": ["HAND", "HAND", "WRIST"],
        }
    )
    b = a.iloc[::-1].assign(fracture_prob=[0.6, 0.4, 0.0], body_part_pred=["WRIST", "WRIST", "HAND"])
    c = a.assign(fracture_prob=[0.5, 0.5, 0.5])
    out = ensemble_tables([a, b, c]).set_index("path")
    assert out.loc["x", "fracture_prob"] == pytest.approx((0.2 + 0.0 + 0.5) / 3)
    assert out.loc["z", "fracture_prob"] == pytest.approx((0.4 + 0.6 + 0.5) / 3)
    assert out.loc["y", "body_part_pred"] == 3  # HAND twice, WRIST once


def test_ensemble_rejects_tables_of_different_images():
    from mura.errors import MuraError

    a = pd.DataFrame({"path": ["x", "y"], "label": [0, 1], "fracture_prob": [0.2, 0.8]})
    with pytest.raises(MuraError, match="different images"):
        ensemble_tables([a, a.assign(path=["x", "q"])])


def test_bootstrap_ci_contains_estimate_and_shrinks_with_more_studies():
    widths = []
    for n in (40, 800):
        df = _images(n_studies=n, seed=3)
        ci = bootstrap_over_studies(df["study_id"], df["label"], df["fracture_prob"], 0.5, 300, seed=0)
        auc = ci["roc_auc"]
        assert auc["estimate"] == pytest.approx(roc_auc_score(df["label"], df["fracture_prob"]))
        for metric in ("roc_auc", "kappa"):
            assert ci[metric]["low"] <= ci[metric]["estimate"] <= ci[metric]["high"]
        widths.append(auc["high"] - auc["low"])
    assert widths[1] < widths[0] / 2


def test_bootstrap_is_seeded_and_degenerate_is_undefined():
    df = _images(seed=4)
    args = (df["study_id"], df["label"], df["fracture_prob"], 0.5, 200)
    assert bootstrap_over_studies(*args, seed=7) == bootstrap_over_studies(*args, seed=7)
    one_class = bootstrap_over_studies(df["study_id"], np.zeros(len(df)), df["fracture_prob"], 0.5, 50)
    assert one_class["roc_auc"]["low"] is None and "undefined" in one_class["roc_auc"]
    assert bootstrap_over_studies([], [], [], 0.5, 50)["kappa"]["estimate"] is None

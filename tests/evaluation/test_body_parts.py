"""Body-part evaluation in the model's own vocabulary: unsure answers counted apart, never as wrong
names, and no rows for parts the model was not trained on."""

import numpy as np
import pandas as pd
import pytest

from mura.constants import BODY_PARTS, MURA_BODY_PARTS
from mura.errors import MuraError
from mura.evaluation.body_parts import UNSURE_COLUMN, body_part_answers, body_part_metrics
from mura.evaluation.report import evaluate_predictions, write_report


def test_accuracy_is_over_the_films_named_and_the_unsure_share_is_stated() -> None:
    truth = ["ELBOW", "ELBOW", "FINGER", "FINGER", "", "WRIST", "HIP"]
    said = ["ELBOW", "FINGER", "FINGER", "UNKNOWN", "HAND", "WRIST", "UNKNOWN"]
    m = body_part_metrics(truth, said, MURA_BODY_PARTS)
    assert (m["n"], m["n_named"], m["n_unsure"]) == (5, 4, 1)  # the empty and the HIP film are not scored
    assert m["accuracy"] == pytest.approx(3 / 4) and m["unsure_share"] == pytest.approx(1 / 5)
    rows = {r["cls"]: r for r in m["report"]["classes"]}
    assert rows["ELBOW"]["recall"] == pytest.approx(0.5) and rows["FINGER"]["precision"] == pytest.approx(0.5)
    assert m["confusion_columns"] == [*MURA_BODY_PARTS, UNSURE_COLUMN]
    assert np.shape(m["confusion_matrix"]) == (7, 8)
    finger = m["confusion_matrix"][MURA_BODY_PARTS.index("FINGER")]
    assert finger[MURA_BODY_PARTS.index("FINGER")] == 1 and finger[-1] == 1
    assert m["outside_vocabulary"] == {"n": 1, "unsure": 1}  # a hip film: unsure is the right answer


def test_a_model_unsure_of_every_film_or_without_a_head_has_no_accuracy() -> None:
    unsure = body_part_metrics(["HAND", "WRIST"], ["UNKNOWN", "UNKNOWN"], MURA_BODY_PARTS)
    assert unsure["accuracy"] is None and unsure["unsure_share"] == 1.0
    assert "named none" in unsure["undefined"]["body_part"]
    headless = body_part_metrics(["HAND", "WRIST"], ["", ""], MURA_BODY_PARTS)
    assert headless["accuracy"] is None and "no body-part predictions" in headless["undefined"]["body_part"]


def test_a_guess_below_the_floor_is_unsure_and_a_part_outside_the_vocabulary_is_refused() -> None:
    frame = pd.DataFrame(
        {"body_part_pred": ["HAND", "HIP", "LEG", ""], "body_part_prob": [0.9, 0.5, 0.7, 0.9]}
    )
    assert body_part_answers(frame, BODY_PARTS, 0.6) == ["HAND", "UNKNOWN", "LEG", ""]
    assert body_part_answers(frame, BODY_PARTS, None) == ["HAND", "HIP", "LEG", ""]  # no floor: all named
    with pytest.raises(MuraError, match=r"body part\(s\) HIP, LEG outside the model's body_parts"):
        body_part_answers(frame, MURA_BODY_PARTS, 0.6)


def films(parts: tuple[str, ...], n: int = 120, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    truth = [parts[i % len(parts)] for i in range(n)]
    label = rng.integers(0, 2, n)
    return pd.DataFrame(
        {
            "path": [f"/d/{i}.png" for i in range(n)],
            "study_id": [f"s{i}" for i in range(n)],
            "body_part": truth,
            "label": label,
            "fracture_prob": np.clip(0.3 + 0.4 * label + rng.normal(0, 0.2, n), 0, 1),
            "body_part_pred": truth,
            "body_part_prob": np.where(np.arange(n) % 5 == 0, 0.4, 0.95),  # every fifth film unsure
        }
    )


def test_a_mura_model_report_has_no_hip_or_leg_rows(tmp_path) -> None:
    df = films(("HAND", "WRIST", "SHOULDER"))
    result = evaluate_predictions(df, {}, body_parts=MURA_BODY_PARTS, body_part_floor=0.8, n_bootstrap=0)
    assert list(result["per_body_part"]["default"]) == list(MURA_BODY_PARTS)
    assert list(result["study"]["default"]["per_body_part"]) == list(MURA_BODY_PARTS)
    body = result["body_part"]
    assert body["accuracy"] == 1.0 and body["unsure_share"] == pytest.approx(0.2)
    assert np.shape(body["confusion_matrix"]) == (7, 8)
    md = write_report(result, df, tmp_path / "eval")["markdown"].read_text()
    section = md.split("## Body part classification", 1)[1].split("\n## ", 1)[0]
    assert UNSURE_COLUMN in section and "| HIP" not in section
    assert "on the 96 films the model named" in section and "(20.0%)" in section


def test_a_fracatlas_model_reports_its_own_parts_and_counts_unsure_answers_apart() -> None:
    df = films(("HAND", "LEG", "HIP", "SHOULDER"))
    df.loc[df["body_part"] == "LEG", "body_part_pred"] = "SHOULDER"  # confident and wrong
    result = evaluate_predictions(df, {}, body_parts=BODY_PARTS, body_part_floor=0.8, n_bootstrap=0)
    assert list(result["per_body_part"]["default"]) == list(BODY_PARTS)
    body = result["body_part"]
    assert body["accuracy"] == pytest.approx(72 / 96)  # LEG films named SHOULDER, unsure ones not counted
    leg = body["confusion_matrix"][BODY_PARTS.index("LEG")]
    assert leg[BODY_PARTS.index("SHOULDER")] == 24 and leg[-1] == 6
    assert result["meta"]["body_parts"] == list(BODY_PARTS) and result["meta"]["body_part_floor"] == 0.8

"""The report: every section written, synthetic banner, degenerate splits, external data, Tables 8-9."""

import json
import warnings

import numpy as np
import pandas as pd
import pytest

from mura.cli import main
from mura.constants import BODY_PARTS, MURA_BODY_PARTS
from mura.errors import MuraError
from mura.evaluation.report import compare_runs, evaluate_predictions, write_report

SECTIONS = (
    "Summary",
    "Data distribution",
    "Fracture classification",
    "Decision thresholds",
    "ROC and precision-recall curves",
    "Per body part",
    "Body part classification",
    "Study level (MURA paper)",
    "Confidence intervals",
    "Calibration",
    "Subgroups by hardware",
    "Training curves",
    "Undefined figures",
)


def evaluate(table: pd.DataFrame, thresholds: dict, **kwargs) -> dict:
    """`evaluate_predictions` for a MURA model (seven parts, no confidence floor)."""
    return evaluate_predictions(table, thresholds, body_parts=MURA_BODY_PARTS, **kwargs)


def predictions(n_studies=80, seed=0, parts=BODY_PARTS[:6], source="synthetic", skill=0.3):
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(n_studies):
        part = parts[s % len(parts)]
        label = int(rng.random() < 0.45)
        for v in range(int(rng.integers(1, 4))):
            right = rng.random() < 0.9
            rows.append(
                dict(
                    path=f"/d/{s}/{v}.png",
                    study_id=f"MURA-v1.1/valid/XR_{part}/patient{s}/study1/",
                    body_part=part,
                    label=label,
                    fracture_prob=float(np.clip(rng.normal(0.35 + skill * label, 0.2), 0, 1)),
                    body_part_pred=part if right else "WRIST",
                    body_part_used="given",
                    source=source,
                    hardware=int(rng.random() < 0.3),
                    view=v,
                )
            )
    return pd.DataFrame(rows)


@pytest.fixture()
def run_dir(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    pd.DataFrame(
        {
            "epoch": [1, 2, 3],
            "train_loss": [0.7, 0.6, 0.5],
            "val_loss": [0.7, 0.65, 0.6],
            "val_auc": [0.6, 0.7, 0.75],
            "lr": [1e-3, 1e-3, 5e-4],
        }
    ).to_csv(run / "metrics.csv", index=False)
    return run


def test_report_has_every_section_and_the_synthetic_banner(tmp_path, run_dir):
    df = predictions()
    result = evaluate(
        df,
        {"youden": 0.45, "suspicious": 0.3},
        calibration_method="platt",
        by=["hardware"],
        n_bootstrap=50,
        meta={"split": "test", "models": ["resnet50"]},
    )
    files = write_report(result, df, tmp_path / "eval", run_dirs=[run_dir])
    html = files["html"].read_text()
    for title in SECTIONS:
        assert f">{title}</h" in html, title
    assert "SYNTHETIC DATA" in html and 'class="banner"' in html
    assert html.count("data:image/png;base64,") >= 8  # plots embedded, incl. training curves
    assert "<img" in html and 'src="plots/' not in html  # self-contained
    metrics = json.loads(files["metrics"].read_text())
    assert metrics["meta"]["synthetic"] is True
    assert set(metrics["thresholds"]) == {"default", "youden", "suspicious"}
    assert metrics["calibration"]["method"] == "platt" and metrics["calibration"]["ece"] is not None
    assert metrics["per_body_part"]["default"]["WRIST"]["roc_auc"] is None  # no WRIST images
    assert metrics["image"]["default"]["roc_auc"] == pytest.approx(
        metrics["bootstrap"]["default"]["image"]["roc_auc"]["estimate"]
    )
    md = files["markdown"].read_text()
    assert "| Macro Avg |" in md and "undefined" in md and "](plots/roc.png)" in md
    assert (tmp_path / "eval" / "mura_scorer.csv").is_file() and files["mura_scorer_youden"].is_file()
    assert (tmp_path / "eval" / "plots" / "training_0.png").is_file()


@pytest.mark.parametrize("case", ["one_class", "empty", "one_part", "no_body_part_head"])
def test_degenerate_splits_report_undefined_without_crashing(tmp_path, case):
    df = predictions(n_studies=12)
    if case == "one_class":
        df["label"] = 0
    elif case == "empty":
        df = df.iloc[:0]
    elif case == "one_part":
        df["body_part"] = "HAND"
    else:
        df["body_part_pred"] = ""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = evaluate(df, {"youden": 0.4}, n_bootstrap=20, meta={"split": "test"})
        files = write_report(result, df, tmp_path / case)
    html = files["html"].read_text()
    assert "Undefined figures" in html and "undefined" in html
    if case in ("one_class", "empty"):
        assert result["image"]["default"]["roc_auc"] is None
    if case == "no_body_part_head":
        assert result["body_part"]["accuracy"] is None
    json.loads(files["metrics"].read_text())  # strict JSON (no NaN)


def test_external_data_uses_tables_10_11_layout(tmp_path):
    df = predictions(source="folders").assign(body_part="", body_part_used="predicted")
    result = evaluate(df, {}, n_bootstrap=20, meta={"split": "test"})
    assert result["meta"]["external"] is True and result["meta"]["synthetic"] is False
    assert result["per_body_part"]["default"]["HAND"]["n"] > 0  # grouped by the predicted part
    html = write_report(result, df, tmp_path / "ext")["html"].read_text()
    assert "External data (spec Tables 10-11)" in html and "SYNTHETIC" not in html
    assert "<td>0.80</td>" in html or "Table 10 layout" in html


def test_a_folder_holding_files_no_report_wrote_is_refused_and_left_as_it_was(tmp_path):
    df = predictions(n_studies=12)
    result = evaluate(df, {"youden": 0.4}, n_bootstrap=0, meta={"split": "test"})
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "report.html").write_text("my own notes")
    with pytest.raises(MuraError, match=r"mine: holds files that no mura report wrote \(report.html\)"):
        write_report(result, df, mine)
    assert [p.name for p in mine.iterdir()] == ["report.html"]
    assert (mine / "report.html").read_text() == "my own notes"
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(MuraError, match="is a file, not a folder"):
        write_report(result, df, tmp_path / "a_file")
    # A folder an earlier report wrote is the report's to replace.
    first = write_report(result, df, tmp_path / "eval")
    again = write_report(evaluate(df, {}, n_bootstrap=0), df, tmp_path / "eval")
    assert again["html"] == first["html"] and "Undefined figures" in again["html"].read_text()


def test_bad_input_is_a_one_line_error():
    with pytest.raises(MuraError, match="fracture_prob"):
        evaluate(pd.DataFrame({"label": [0, 1]}), {})
    with pytest.raises(MuraError, match=r"column\(s\) to report by not in"):
        evaluate(predictions(n_studies=3), {}, by=["nope"], n_bootstrap=0)


def test_compare_writes_tables_8_and_9(tmp_path, capsys):
    dirs = []
    for name, skill in (("custom_cnn", 0.1), ("efficientnet_b0", 0.4)):
        df = predictions(seed=1, skill=skill)
        if name == "custom_cnn":
            df["body_part_pred"] = ""  # the spec's baseline has no body-part head
        result = evaluate(df, {}, n_bootstrap=30, meta={"split": "test", "models": [name]})
        write_report(result, df, tmp_path / name / "eval")
        dirs.append(tmp_path / name)  # a run dir holding eval/
    fracture, body = compare_runs(dirs, tmp_path / "cmp")
    assert list(fracture["Model"]) == ["Custom CNN", "EfficientNet-B0"]
    assert fracture.loc[1, "ROC AUC"] > fracture.loc[0, "ROC AUC"]
    assert list(body["Model"]) == ["EfficientNet-B0"]
    md = (tmp_path / "cmp" / "comparison.md").read_text()
    assert "| Model | Accuracy | Macro F1 | ROC AUC | Cohen's Kappa |" in md
    assert pd.read_csv(tmp_path / "cmp" / "compare_fracture.csv").shape[0] == 2
    html = (tmp_path / "cmp" / "report.html").read_text()
    assert "SYNTHETIC DATA" in html and "custom_cnn/eval/report.html" in html
    assert main(["compare", *map(str, dirs), "--out", str(tmp_path / "cmp2")]) == 0
    assert "EfficientNet-B0" in capsys.readouterr().out
    assert main(["compare", str(tmp_path / "missing"), "--out", str(tmp_path / "x")]) == 2


def test_the_summary_leads_with_the_stored_points_and_honest_intervals(tmp_path):
    df = predictions(n_studies=60, seed=3)
    df.loc[df["label"] == 1, "fracture_prob"] = 0.9  # every positive found at both points
    result = evaluate(
        df,
        {"suspicious": 0.3, "definite": 0.8},
        n_bootstrap=50,
        meta={"split": "test", "default_operating_point": "suspicious"},
    )
    assert result["meta"]["deployed_point"] == "suspicious"
    sensitivity = result["summary"]["suspicious"]["sensitivity"]
    assert sensitivity["estimate"] == 1.0 and 0.8 < sensitivity["low"] < 1.0 == sensitivity["high"]
    assert result["headline"].startswith("AUC ") and f"on {len(df)} images" in result["headline"]
    assert "suspicious: sensitivity 1.000 [" in result["headline"]
    md = write_report(result, df, tmp_path / "eval")["markdown"].read_text()
    summary = md.split("## Summary")[1].split("## ")[0]
    assert "suspicious (deployed)" in summary and "| definite |" in summary and "| default" not in summary
    assert "Wilson" in summary and "threshold 0.5" not in md.split("## Decision thresholds")[0]


def test_five_positives_all_found_do_not_make_a_certain_sensitivity():
    from mura.evaluation.summary import wilson_interval

    low, high = wilson_interval(5, 5)
    assert high == 1.0 and low == pytest.approx(0.566, abs=1e-3)
    assert wilson_interval(0, 0) is None


def test_one_film_studies_do_not_repeat_the_image_level(tmp_path):
    df = predictions(n_studies=40).drop_duplicates("study_id")
    result = evaluate(df, {"suspicious": 0.3}, n_bootstrap=20, meta={"split": "test"})
    assert result["meta"]["several_films_per_study"] is False
    md = write_report(result, df, tmp_path / "eval")["markdown"].read_text()
    assert "study level (the mean of a study's films) is the image level" in md
    assert "Study sens." not in md and "Study-level classification report" not in md
    assert "| study | roc_auc |" not in md
    several = predictions(n_studies=40)
    md = write_report(evaluate(several, {}, n_bootstrap=20), several, tmp_path / "b")["markdown"].read_text()
    assert "Study sens." in md and "Study-level classification report" in md


def test_undefined_figures_are_a_count_folded_away(tmp_path):
    df = predictions(n_studies=12)  # no WRIST images: dozens of undefined per-part figures
    result = evaluate(df, {"suspicious": 0.3}, n_bootstrap=0, meta={"split": "test"})
    html = write_report(result, df, tmp_path / "eval")["html"].read_text()
    undefined = html.split(">Undefined figures</h2>")[1]
    assert "<details><summary>" in undefined and "figures are undefined" in undefined
    figures = int(undefined.split("<details><summary>")[1].split(" figures are undefined")[0])
    assert undefined.count("<tr>") - 1 < figures / 3  # a row per reason, not per internal key

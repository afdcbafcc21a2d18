"""`not_assessed` on every surface that predicts files: `mura predict` (JSON lines, CSV, one warning line
per reason, the study rule), `mura.load(...)` (paths and arrays; `score_all=True`), `mura explain` /
`Model.explain` (no heatmap) and `mura evaluate` (refused cache rows listed apart and counted in the
summary and headline, every metric over the assessed rows)."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

import mura
from mura.cli import main
from mura.data.cache import build_cache
from mura.data.index import write_index
from mura.evaluation.report_folder import remove_report
from mura.evaluation.runner import evaluate_checkpoints


@pytest.fixture(scope="module")
def mixed(tmp_path_factory, make_radiograph) -> Path:
    """study/: two radiographs (PNG), a black PNG, pydicom's CT; blank_study/: a white PNG only."""
    root = tmp_path_factory.mktemp("scope")
    study, blank = root / "study", root / "blank_study"
    study.mkdir()
    blank.mkdir()
    for view in (0, 1):
        Image.fromarray(make_radiograph("WRIST", seed=view, view=view)).save(study / f"view{view}.png")
    Image.fromarray(np.zeros((300, 300), np.uint8)).save(study / "black.png")
    shutil.copy(get_testdata_file("CT_small.dcm"), study / "ct.dcm")
    Image.fromarray(np.full((300, 300), 255, np.uint8)).save(blank / "white.png")
    return root


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_predict_answers_out_of_scope_files_not_assessed_in_json_with_a_warning_line(
    tiny_checkpoint, mixed, capsys, tmp_path
) -> None:
    code, out, err = run(capsys, "predict", str(mixed), "-c", str(tiny_checkpoint), "--study")
    assert code == 0
    records = {Path(r["path"]).name: r for r in map(json.loads, out.splitlines())}
    for name in ("black.png", "ct.dcm", "white.png"):
        record = records[name]
        assert record["decision"] == "not_assessed" and record["fracture_probability"] is None
        assert record["body_part"] is None and record["reasons"]
    assert records["ct.dcm"]["reasons"][1].startswith("dicom: Modality CT")
    lines = [line for line in err.splitlines() if "not assessed" in line]
    black = f"mura predict: warning: {mixed / 'study' / 'black.png'}: not assessed: pixels: a near-uniform"
    assert any(line.startswith(black) for line in lines)
    assert len(lines) == 1 + 2 + 1  # one line per reason: black (1), CT (SOP class, Modality), white (1)
    views = [records[f"view{v}.png"]["fracture_probability"] for v in (0, 1)]
    study = records["study"]
    assert study["views"] == 2 and study["views_not_assessed"] == 2
    assert study["fracture_probability"] == pytest.approx(np.mean(views))
    blank = records["blank_study"]
    assert blank["decision"] == "not_assessed" and blank["reasons"][0].startswith("white.png: pixels:")
    code, out, err = run(
        capsys, "explain", str(mixed / "study"), "-c", str(tiny_checkpoint), "-o", str(tmp_path)
    )
    assert code == 0 and len(out.splitlines()) == 2 == len(list(tmp_path.iterdir()))  # the radiographs
    assert err.count("not assessed") == 2 and "ct.dcm: not assessed: dicom:" in err


def test_predict_csv_carries_the_decision_and_reasons_and_score_all_scores_with_warnings(
    tiny_checkpoint, mixed, capsys
) -> None:
    code, out, _ = run(capsys, "predict", str(mixed / "study"), "-c", str(tiny_checkpoint), "--format", "csv")
    rows = {Path(r["path"]).name: r for r in csv.DictReader(io.StringIO(out))}
    assert code == 0 and rows["ct.dcm"]["decision"] == "not_assessed"
    assert rows["ct.dcm"]["fracture_probability"] == "" and "dicom: Modality CT" in rows["ct.dcm"]["reasons"]
    code, out, err = run(capsys, "predict", str(mixed / "study"), "-c", str(tiny_checkpoint), "--score-all")
    records = {Path(r["path"]).name: r for r in map(json.loads, out.splitlines())}
    assert records["ct.dcm"]["decision"] in ("abnormal", "normal") and records["ct.dcm"]["reasons"] == []
    assert any(
        w.startswith("out of scope, scored anyway: dicom: Modality CT") for w in records["ct.dcm"]["warnings"]
    )
    assert "not assessed" not in err


def test_the_python_api_answers_not_assessed_unless_loaded_with_score_all(tiny_checkpoint, mixed) -> None:
    model = mura.load(tiny_checkpoint, device="cpu")
    ct, film = model.predict_batch([mixed / "study" / "ct.dcm", mixed / "study" / "view0.png"])
    assert not ct.assessed and ct.fracture_probability is None and film.assessed
    noise = np.random.default_rng(0).integers(0, 256, (256, 256), dtype=np.uint8)
    refused = model.predict(noise)
    assert refused.decision == "not_assessed" and refused.reasons[0].startswith("pixels: a noise-like image")
    study = model.predict_study([mixed / "blank_study" / "white.png"])
    assert study.decision == "not_assessed"
    anyway = mura.load(tiny_checkpoint, device="cpu", score_all=True).predict(noise)
    assert anyway.assessed and anyway.warnings[0].startswith("out of scope, scored anyway: pixels:")


def test_explain_draws_no_heatmap_for_what_the_gate_refuses_unless_score_all(
    tiny_checkpoint, mixed, capsys, tmp_path
) -> None:
    model = mura.load(tiny_checkpoint, device="cpu")
    ct = model.explain(mixed / "study" / "ct.dcm")
    assert ct.heatmap is None and ct.prediction.decision == "not_assessed"
    assert any(r.startswith("dicom: Modality CT") for r in ct.prediction.reasons)
    blank = model.explain(np.zeros((300, 300), np.uint8))
    assert blank.heatmap is None and blank.prediction.reasons[0].startswith("pixels: a near-uniform image")
    anyway = mura.load(tiny_checkpoint, device="cpu", score_all=True).explain(mixed / "study" / "ct.dcm")
    assert anyway.prediction.assessed and anyway.heatmap is not None
    code, out, err = run(
        capsys, "explain", str(mixed / "study" / "ct.dcm"), "-c", str(tiny_checkpoint), "-o", str(tmp_path)
    )
    assert code == 2 and out == "" and not list(tmp_path.iterdir())
    assert "ct.dcm: not assessed: dicom: " in err
    code, out, err = run(
        capsys,
        "explain",
        str(mixed / "study" / "ct.dcm"),
        "-c",
        str(tiny_checkpoint),
        "-o",
        str(tmp_path),
        "--score-all",
    )
    assert code == 0 and len(list(tmp_path.iterdir())) == 1
    assert "warning: " in err and "out of scope, scored anyway: dicom: Modality CT" in err


def test_evaluate_lists_refused_cache_rows_apart_and_scores_only_the_assessed(
    tiny_checkpoint, make_radiograph, tmp_path, capsys
) -> None:
    folder = tmp_path / "films"
    folder.mkdir()
    rows = []
    for i in range(8):
        path = folder / f"film{i}.png"
        Image.fromarray(make_radiograph("WRIST", abnormal=i % 2 == 0, seed=i, view=i % 2)).save(path)
        rows.append((path, i % 2))
    for name, pixels in (("black.png", np.zeros((200, 200), np.uint8)), ("noise.png", None)):
        if pixels is None:
            pixels = np.random.default_rng(1).integers(0, 256, (200, 200), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / name)
        rows.append((folder / name, 1))
    index = pd.DataFrame(
        {
            "path": [str(p) for p, _ in rows],
            "split": "test",
            "body_part": "WRIST",
            "patient_id": [f"p{i}" for i in range(len(rows))],
            "study_id": [f"s{i}" for i in range(len(rows))],
            "label": [label for _, label in rows],
            "view": 0,
        }
    )
    index_csv = write_index(index, tmp_path / "index.csv")
    build_cache(index_csv, tmp_path / "cache", size=32, resize="stretch", progress=False)
    files = evaluate_checkpoints([tiny_checkpoint], tmp_path / "cache", tmp_path / "eval", n_bootstrap=10)
    refused = pd.read_csv(files["not_assessed"])
    assert sorted(Path(p).name for p in refused["path"]) == ["black.png", "noise.png"]
    assert set(refused["layer"]) == {"pixels"}
    scored = pd.read_csv(files["predictions"])
    assert len(scored) == 8 and not scored["path"].str.contains("black|noise").any()
    metrics = json.loads(files["metrics"].read_text())
    meta = metrics["meta"]
    assert meta["n_images"] == 8 and meta["not_assessed"]["images"] == 2 and meta["not_assessed"]["of"] == 10
    assert meta["not_assessed"]["by_layer"] == {"pixels": 2}
    why = "2 of 10 images not assessed, left out of every figure and listed in not_assessed.csv: pixels 2 ("
    summary = files["markdown"].read_text().split("## ")[1]  # the report's first section
    assert f"Out of scope: {why}" in summary
    assert "a near-uniform image 1" in summary and "a noise-like image 1" in summary
    assert metrics["headline"].endswith("; 2 of 10 not assessed (pixels 2)")
    # A rerun into the same folder is allowed and prints it in its headline; the list is the report's own
    argv = ["--checkpoint", str(tiny_checkpoint), "--cache", str(tmp_path / "cache"), "--bootstrap", "0"]
    code, out, _ = run(capsys, "evaluate", *argv, "--out", str(tmp_path / "eval"))
    headline, listed = out.splitlines()[:2]
    assert code == 0 and headline.endswith("; 2 of 10 not assessed (pixels 2)")
    assert listed == f"not assessed: {tmp_path / 'eval' / 'not_assessed.csv'}"
    remove_report(tmp_path / "eval")
    assert not (tmp_path / "eval").exists()

"""`mura predict / explain / export` end to end on folders of PNG, JPEG and DICOM files."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import mura
from mura.cli import main
from mura.constants import BODY_PARTS
from mura.prediction import Prediction, StudyPrediction, csv_fields
from tests.factories.dicom import dicom_dataset, twelve_bit, write_dicom


@pytest.fixture(scope="module")
def studies(tmp_path_factory, smooth_images) -> Path:
    """root/patient1/study1: 2 PNG + 1 DICOM (WRIST); root/patient1/study2: 1 JPEG + 1 broken file."""
    root = tmp_path_factory.mktemp("studies")
    first, second = root / "patient1" / "study1", root / "patient1" / "study2"
    first.mkdir(parents=True)
    second.mkdir(parents=True)
    imgs = smooth_images(4, seed=5)
    Image.fromarray(imgs[0]).save(first / "view1.png")
    Image.fromarray(imgs[1]).save(first / "view2.png")
    write_dicom(dicom_dataset(twelve_bit(imgs[2]), body_part="WRIST"), first / "view3.dcm")
    Image.fromarray(imgs[3]).convert("RGB").save(second / "view1.jpg", quality=90)
    (second / "view2.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
    (second / "notes.txt").write_text("ignored: not an image suffix")
    return root


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_predict_folder_jsonl_with_study_mode(make_checkpoint, studies, capsys) -> None:
    ckpt = make_checkpoint("cli.pt", "custom_cnn", 32, seed=21, threshold={"default": 0.5, "youden": 0.4})
    code, out, err = run(
        capsys, "predict", str(studies), "--checkpoint", str(ckpt), "--study", "--runtime", "torch"
    )
    assert code == 0
    records = [json.loads(line) for line in out.splitlines()]
    images = [r for r in records if r["kind"] == "image"]
    assert len(images) == 4  # the broken PNG is skipped, notes.txt is not an image
    assert err.count("\n") == 1 and "view2.png" in err and "skipped" in err  # one line naming the file
    for record in images:
        assert 0.0 <= record["fracture_probability"] <= 1.0 and record["threshold"] == 0.4
        assert record["decision"] == ("abnormal" if record["fracture_probability"] >= 0.4 else "normal")
        assert set(record["body_part_probabilities"]) == set(BODY_PARTS)
        assert abs(sum(record["body_part_probabilities"].values()) - 1) < 1e-6
    dicom = next(r for r in images if r["path"].endswith("view3.dcm"))
    assert dicom["body_part"] == "WRIST" and dicom["body_part_origin"] == "dicom"
    assert {r["body_part_origin"] for r in images if not r["path"].endswith(".dcm")} == {"predicted"}
    for record in records:  # every line is the one typed record
        (StudyPrediction if record["kind"] == "study" else Prediction).model_validate(record)
    study_rows = {Path(r["path"]).name: r for r in records if r["kind"] == "study"}
    assert set(study_rows) == {"study1", "study2"}
    views = [r["fracture_probability"] for r in images if "/study1/" in r["path"]]
    assert study_rows["study1"]["views"] == 3
    assert study_rows["study1"]["fracture_probability"] == pytest.approx(np.mean(views))
    assert study_rows["study2"]["views"] == 1 and study_rows["study2"]["views_failed"] == 1


def test_predict_csv_with_body_part_tta_and_cam(make_checkpoint, studies, tmp_path, capsys) -> None:
    ckpt = make_checkpoint("cli.pt", "custom_cnn", 32, seed=21, threshold={"default": 0.5, "youden": 0.4})
    out_csv, cam_dir = tmp_path / "out.csv", tmp_path / "cams"
    study1 = str(studies / "patient1" / "study1")
    argv = [
        "predict",
        study1,
        "-c",
        str(ckpt),
        "--format",
        "csv",
        "--out",
        str(out_csv),
        "--body-part",
        "hand",
    ]
    code, _, _ = run(capsys, *argv, "--tta", "--cam", str(cam_dir))
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out_csv.read_text())))
    assert len(rows) == 3 and {r["body_part"] for r in rows} == {"HAND"}  # the argument beats DICOM tags
    assert {r["body_part_origin"] for r in rows} == {"given"} and "prob_WRIST" in rows[0]
    assert list(rows[0]) == csv_fields() and rows[0]["model_members"] == "1"
    pngs = sorted(cam_dir.glob("*.png"))
    assert len(pngs) == 3
    with Image.open(pngs[0]) as overlay:
        assert overlay.mode == "RGB"


def test_nothing_predictable_exits_2(make_checkpoint, studies, capsys) -> None:
    ckpt = make_checkpoint("cli.pt", "custom_cnn", 32, seed=21, threshold={"default": 0.5, "youden": 0.4})
    bad = studies / "patient1" / "study2" / "view2.png"
    code, out, err = run(capsys, "predict", str(bad), "-c", str(ckpt))
    assert code == 2 and out == "" and "view2.png" in err and "Traceback" not in err


def test_missing_checkpoint_is_one_line(studies, tmp_path, capsys) -> None:
    code, _, err = run(capsys, "predict", str(studies), "-c", str(tmp_path / "missing.pt"))
    assert code == 2 and err.strip().count("\n") == 0 and "checkpoint not found" in err


def test_explain_draws_the_findings_of_a_map_head_on_its_figure(
    make_checkpoint, smooth_images, tmp_path, capsys
) -> None:
    ckpt = make_checkpoint(
        "central.pt", "custom_cnn", 32, threshold={"suspicious": 0.01, "definite": 0.02}, central_map=True
    )
    film = tmp_path / "films" / "view1.png"
    film.parent.mkdir()
    Image.fromarray(smooth_images(1, seed=5)[0]).resize((480, 600), Image.BILINEAR).save(film)
    code, out, _ = run(capsys, "explain", str(film.parent), "-c", str(ckpt), "--out", str(tmp_path / "cam"))
    assert code == 0 and len(out.splitlines()) == 1
    written = np.asarray(Image.open(tmp_path / "cam" / "films_view1_cam.png"))
    pixels = np.asarray(Image.open(film))
    explanation = mura.load(ckpt, device="cpu").explain(film)
    (finding,) = explanation.prediction.findings  # the film's centre, one cell inside each edge
    assert np.array_equal(written, explanation.figure(pixels))  # the API's figure: heatmap + boxes
    x0, y0, x1, _ = (int(c) for c in finding.box)
    assert written[y0, x0:x1].tolist() == [[255, 255, 255]] * (x1 - x0)  # solid: definite


def test_explain_and_export(make_checkpoint, studies, tmp_path, capsys) -> None:
    ckpt = make_checkpoint("cli.pt", "custom_cnn", 32, seed=21, threshold={"default": 0.5, "youden": 0.4})
    code, out, _ = run(
        capsys, "explain", str(studies / "patient1" / "study1"), "-c", str(ckpt), "--out", str(tmp_path)
    )
    assert code == 0 and len(out.splitlines()) == 3
    with Image.open(tmp_path / "study1_view1_cam.png") as overlay:
        assert overlay.size == Image.open(studies / "patient1" / "study1" / "view1.png").size
    onnx_path = tmp_path / "model.onnx"
    code, out, _ = run(capsys, "export", str(ckpt), "--format", "onnx", "--out", str(onnx_path))
    assert code == 0 and onnx_path.is_file() and "max |p_onnx - p_torch|" in out
    code, out, _ = run(capsys, "predict", str(studies / "patient1" / "study1"), "-c", str(onnx_path))
    assert code == 0 and len(out.splitlines()) == 3

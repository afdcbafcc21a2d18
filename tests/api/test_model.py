"""The public Python API is the deployed path: `mura.load(ckpt).predict(file)` is `mura predict`'s answer,
for a path, an array or a batch, as one typed `Prediction`; it explains, writes DICOM results and says what
it is. Runs on images it makes itself (no ../shared needed)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import mura
from mura.api.model import explanation_figure
from mura.cli import main
from mura.inference.gradcam import overlay
from mura.pacs.results import StudyIdentity
from mura.prediction import Prediction, StudyPrediction


@pytest.fixture(scope="module")
def films(tmp_path_factory, smooth_images):
    """Two radiograph-like PNGs and a copy of the second cut in half (decoded with grey filler)."""
    folder = tmp_path_factory.mktemp("films")
    paths = []
    for i, pixels in enumerate(smooth_images(2, seed=7)):
        big = np.asarray(Image.fromarray(pixels).resize((96, 120), Image.BILINEAR))
        path = folder / f"film{i}.png"
        Image.fromarray(big).save(path)
        paths.append(path)
    half = folder / "half.png"
    data = paths[1].read_bytes()
    half.write_bytes(data[: len(data) // 2])
    return paths[0], paths[1], half


def test_import_mura_is_light_and_names_load_on_first_use() -> None:
    code = "import sys, mura; assert 'torch' not in sys.modules; mura.load; assert 'torch' in sys.modules"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
    with pytest.raises(AttributeError):
        mura.no_such_name  # noqa: B018


def test_predict_is_the_cli_answer_for_a_path_an_array_and_a_batch(make_checkpoint, films, capsys) -> None:
    first, second, half = films
    checkpoint = make_checkpoint("api32.pt", "custom_cnn", 32, seed=2)
    model = mura.load(checkpoint, device="cpu")
    whole, cut = model.predict(first), model.predict(half)
    assert isinstance(whole, Prediction) and whole.path == str(first)
    assert whole.warnings == [] and cut.warnings and "truncated" in cut.warnings[0]
    assert main(["predict", str(first), str(half), "--checkpoint", str(checkpoint), "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    records = {r["path"]: Prediction.model_validate(r) for r in map(json.loads, captured.out.splitlines())}
    assert records[str(first)].fracture_probability == pytest.approx(whole.fracture_probability, abs=1e-5)
    assert records[str(half)].warnings == cut.warnings
    assert records[str(first)].model == whole.model == model.identity
    warned = [line for line in captured.err.splitlines() if "warning" in line]
    assert len(warned) == 1 and str(half) in warned[0] and "truncated" in warned[0]

    pixels = np.asarray(Image.open(second).convert("L"))
    batch = model.predict_batch([first, pixels, second])
    assert [type(p) for p in batch] == [Prediction] * 3
    assert batch[1].path is None and batch[1].body_part_origin == "predicted"
    assert batch[1].fracture_probability == pytest.approx(batch[2].fracture_probability, abs=1e-6)
    assert model.predict(pixels, body_part="hand").body_part_origin == "given"
    with pytest.raises(mura.MuraError, match="missing.png"):
        model.predict(half.parent / "missing.png")
    with pytest.raises(mura.MuraError, match="uint8"):
        model.predict(pixels.astype(np.float32))


def test_a_study_is_the_mean_of_its_views_and_files_stream_with_errors(make_checkpoint, films) -> None:
    first, second, half = films
    model = mura.load(make_checkpoint("api32.pt", "custom_cnn", 32, seed=2), device="cpu")
    study = model.predict_study([first, second])
    assert isinstance(study, StudyPrediction) and study.views == 2
    expected = np.mean([model.predict(p).fracture_probability for p in (first, second)])
    assert study.fracture_probability == pytest.approx(expected, abs=1e-6)
    assert study.operating_point == model.operating_point
    broken = half.parent / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    results = list(model.predict_files([first, broken]))
    assert results[0].ok and not results[1].ok and "broken.png" in str(results[1].error)


def test_the_model_says_what_it_is_and_hands_back_its_module(make_checkpoint) -> None:
    one = make_checkpoint("api32.pt", "custom_cnn", 32, seed=2)
    other = make_checkpoint(
        "api32b.pt", "custom_cnn", 32, seed=3, threshold={"default": 0.5, "suspicious": 0.2}
    )
    model = mura.load(one, device="cpu")
    assert model.identity.members == 1 and len(model.identity.sha256) == 64
    assert mura.load(one, device="cpu").identity == model.identity  # stable for one file
    assert isinstance(model.module, torch.nn.Module) and not model.module.training
    assert model.preprocessing[0].size == 32 and model.body_parts[0] == "ELBOW"
    assert model.operating_points == {"default": 0.5}
    assert model.provenance[0]["epoch"] == 1
    pair = mura.load([one, other], device="cpu")
    assert pair.identity.members == 2 and pair.identity.sha256 != model.identity.sha256
    with pytest.raises(mura.MuraError, match="ensemble of 2"):
        pair.module  # noqa: B018
    assert len(pair.modules) == 2


def test_explain_and_dicom_results_from_arrays(make_checkpoint, films, tmp_path) -> None:
    first, _, _ = films
    model = mura.load(make_checkpoint("api32.pt", "custom_cnn", 32, seed=2), device="cpu")
    pixels = np.asarray(Image.open(first).convert("L"))
    prediction, heatmap = model.explain(pixels)
    assert prediction.assessed and prediction == model.predict(pixels)
    assert heatmap.shape == pixels.shape and heatmap.min() >= 0.0 and heatmap.max() <= 1.0
    assert np.allclose(model.explain(first).heatmap, heatmap, atol=1e-5)
    with pytest.raises(mura.MuraError, match="identity"):
        model.dicom_results([pixels])
    results = model.dicom_results([pixels, first], identity=StudyIdentity("PAT-1", "Doe^Jane"))
    assert results.sr is not None and len(results.captures) == 2
    assert str(results.sr.PatientID) == "PAT-1"
    written = results.write(tmp_path / "out")
    assert len(written) == 3 and all(p.stat().st_size > 0 for p in written)


def test_explain_boxes_the_findings_over_the_heatmap(make_checkpoint, films) -> None:
    """A map head marking the film's central cells: one definite finding, drawn solid over the heatmap
    (white on a black edge); the same box at `suspicious` is drawn in dashes."""
    ckpt = make_checkpoint(
        "central.pt", "custom_cnn", 32, threshold={"suspicious": 0.01, "definite": 0.02}, central_map=True
    )
    model = mura.load(ckpt, device="cpu")
    pixels = np.asarray(Image.open(films[0]).convert("L").resize((480, 600), Image.BILINEAR))
    explanation = model.explain(pixels)
    (finding,) = explanation.prediction.findings
    assert finding.box == (120.0, 150.0, 360.0, 450.0) and finding.operating_point == "definite"
    heatmap_only = overlay(pixels, explanation.heatmap)
    figure = explanation.figure(pixels)
    drawn = np.any(figure != heatmap_only, axis=-1)
    x0, y0, x1, y1 = (int(c) for c in finding.box)
    for side in (drawn[y0, x0:x1], drawn[y1, x0:x1], drawn[y0:y1, x0], drawn[y0:y1, x1]):
        assert side.all()  # solid: the whole outline
    assert figure[y0, (x0 + x1) // 2].tolist() == [255, 255, 255]
    assert not drawn[y0 + 8 : y1 - 8, x0 + 8 : x1 - 8].any() and not drawn[: y0 - 8].any()
    suspicious = finding.model_copy(update={"operating_point": "suspicious"})
    dotted = np.any(explanation_figure(pixels, explanation.heatmap, [suspicious]) != heatmap_only, axis=-1)
    assert 0.3 < dotted[y0, x0:x1].mean() < 0.9  # dashes and gaps along the side
    refused = model.explain(np.full((600, 480), 128, np.uint8))
    assert refused.heatmap is None and refused.figure(pixels) is None

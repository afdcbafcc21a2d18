"""A figure in a report is a figure of the deployed path: for one file and one checkpoint, `mura
evaluate` (cache rows), `mura predict` (files) and `mura serve` (uploads) give the same probability.

On real FracAtlas JPEGs and a DICOM made from one. Before the one-preprocessing-path redesign, a 224 px
model scored from a 64 px cache differed from predict by up to 0.161 here: such a pairing is now refused.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from mura.cli import main
from mura.data.cache import build_cache
from mura.errors import MuraError
from mura.evaluation.runner import evaluate_checkpoints
from mura.service.loading import app_from_checkpoints
from tests.factories.dicom import dicom_dataset, twelve_bit, write_dicom


@pytest.fixture(scope="module")
def real_files(fracatlas_dir, tmp_path_factory):
    base = tmp_path_factory.mktemp("agreement")
    jpegs = sorted((fracatlas_dir / "images" / "Fractured").glob("*.jpg"))[:5]
    jpegs += sorted((fracatlas_dir / "images" / "Non_fractured").glob("*.jpg"))[:5]
    pixels = twelve_bit(np.asarray(Image.open(jpegs[0]).convert("L")))
    files = [
        *jpegs,
        write_dicom(
            dicom_dataset(pixels),
            base / "from_jpeg.dcm",
        ),
    ]
    index = pd.DataFrame(
        {
            "path": [str(p) for p in files],
            "split": "test",
            "body_part": "",
            "patient_id": [f"p{i}" for i in range(len(files))],
            "study_id": [f"s{i}" for i in range(len(files))],
            "label": [1] * 5 + [0] * 5 + [1],
            "view": 0,
        }
    )
    index_csv = base / "index.csv"
    index.to_csv(index_csv, index=False)
    for size in (64, 96):
        build_cache(index_csv, base / f"cache{size}", size=size, progress=False)
    return base, index_csv, files


def test_evaluate_predict_and_serve_agree_on_real_files(real_files, make_checkpoint, capsys):
    base, index_csv, files = real_files
    checkpoint = make_checkpoint("agree64.pt", "custom_cnn", 64, seed=3)
    evaluate_checkpoints(
        [checkpoint], base / "cache64", base / "eval", index_path=index_csv, n_bootstrap=0, device="cpu"
    )
    evaluated = pd.read_csv(base / "eval" / "predictions.csv").set_index("path")["fracture_prob"]

    assert main(["predict", *map(str, files), "--checkpoint", str(checkpoint), "--device", "cpu"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    predicted = {r["path"]: r["fracture_probability"] for r in lines}

    with TestClient(app_from_checkpoints([checkpoint], device="cpu")) as client:
        served = {}
        for path in files:
            response = client.post("/v1/predict", files={"file": (path.name, path.read_bytes())})
            assert response.status_code == 200, response.text
            served[str(path)] = response.json()["fracture_probability"]

    spread = np.ptp([evaluated[str(p)] for p in files])
    assert spread > 0.01  # the model really responds to the images, so agreement is not trivial
    for path in map(str, files):
        assert abs(evaluated[path] - predicted[path]) < 1e-4, path
        assert abs(served[path] - predicted[path]) < 1e-4, path


def test_a_cache_of_another_size_is_refused_not_resized(real_files, make_checkpoint):
    base, index_csv, _ = real_files
    checkpoint = make_checkpoint("agree96.pt", "custom_cnn", 96, seed=3)
    with pytest.raises(MuraError, match=r"takes 96 px stretch .*mura prepare INDEX --size 96"):
        evaluate_checkpoints([checkpoint], base / "cache64", base / "eval96", n_bootstrap=0, device="cpu")
    small = make_checkpoint("agree64.pt", "custom_cnn", 64, seed=3)
    evaluate_checkpoints(  # an ensemble of two sizes reads one cache per size
        [small, checkpoint], [base / "cache64", base / "cache96"], base / "ens", n_bootstrap=0, device="cpu"
    )
    assert len(pd.read_csv(base / "ens" / "predictions.csv")) == 11

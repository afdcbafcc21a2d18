"""The public Python API is the deployed path: `mura.load(ckpt).predict(file)` is `mura predict`'s answer;
a half-decoded file is flagged there and on the command line."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import mura
from mura.cli import main


@pytest.fixture(scope="module")
def half_jpeg(fracatlas_dir, tmp_path_factory):
    source = sorted((fracatlas_dir / "images" / "Non_fractured").glob("*.jpg"))[3]
    data = source.read_bytes()
    half = tmp_path_factory.mktemp("half") / "half.jpg"
    half.write_bytes(data[: len(data) // 2])
    return source, half


def test_import_mura_is_light_and_names_load_on_first_use() -> None:
    code = "import sys, mura; assert 'torch' not in sys.modules; mura.load; assert 'torch' in sys.modules"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
    with pytest.raises(AttributeError):
        mura.no_such_name  # noqa: B018


def test_load_predict_equals_the_cli_and_flags_a_half_file(make_checkpoint, half_jpeg, capsys) -> None:
    source, half = half_jpeg
    checkpoint = make_checkpoint("api32.pt", "custom_cnn", 32, seed=2)
    model = mura.load(checkpoint, device="cpu")
    whole, cut = model.predict(source), model.predict(half)
    assert whole["warnings"] == [] and cut["warnings"] and "truncated" in cut["warnings"][0]
    assert main(["predict", str(source), str(half), "--checkpoint", str(checkpoint), "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    records = {r["path"]: r for r in map(json.loads, captured.out.splitlines())}
    same = pytest.approx(whole["fracture_probability"], abs=1e-5)  # batch of 1 vs 2: float noise only
    assert records[str(source)]["fracture_probability"] == same
    assert records[str(half)]["warnings"] == cut["warnings"]
    warned = [line for line in captured.err.splitlines() if "warning" in line]
    assert len(warned) == 1 and str(half) in warned[0] and "truncated" in warned[0]
    study = model.predict_study([source, half])
    assert study["views"] == 2 and study["operating_point"] == model.predictor.threshold_name
    with pytest.raises(mura.MuraError, match="missing.png"):
        model.predict(half.parent / "missing.png")

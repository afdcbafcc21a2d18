"""`mura predict --trace` / `trace=`: one JSON per run naming the inputs (with hashes), the checkpoints
(with hashes), preprocessing, thresholds and where they were fitted, the scope, versions and outputs;
never replacing a file mura did not write."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

import mura
from mura.checkpoint import file_sha256
from mura.cli import main
from mura.errors import MuraError


@pytest.fixture(scope="module")
def films(tmp_path_factory, make_radiograph) -> Path:
    """One study of two radiographs and an unreadable file beside them."""
    study = tmp_path_factory.mktemp("films") / "study1"
    study.mkdir()
    for view in (0, 1):
        Image.fromarray(make_radiograph("WRIST", abnormal=bool(view), seed=7, view=view)).save(
            study / f"{view}.png"
        )
    (study / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not a png")
    return study


def test_predict_trace_names_inputs_model_decision_origin_scope_versions_and_outputs(
    tiny_checkpoint, films, tmp_path, capsys
) -> None:
    trace_file = tmp_path / "run.json"
    args = ["predict", str(films), "--checkpoint", str(tiny_checkpoint), "--study", "--runtime", "torch"]
    assert main([*args, "--trace", str(trace_file), "--out", str(tmp_path / "out.jsonl")]) == 0
    trace = json.loads(trace_file.read_text())
    assert trace["mura_trace"] == 1
    assert {"mura", "python", "torch", "timm", "onnxruntime", "pydicom"} <= set(trace["versions"])
    assert trace["versions"]["mura"] == mura.__version__
    by_path = {Path(i["path"]).name: i for i in trace["inputs"]}
    assert set(by_path) == {"0.png", "1.png", "broken.png"}
    assert by_path["0.png"]["sha256"] == file_sha256(films / "0.png") and "decision" in by_path["0.png"]
    assert "error" in by_path["broken.png"] and trace["summary"]["failed"] == 1
    (member,) = trace["checkpoints"]
    assert member["sha256"] == file_sha256(tiny_checkpoint) and member["preprocessing"]["size"] == 32
    assert member["decision"]["thresholds"]["youden"] == 0.47 and "fitted_on" in member["decision"]
    assert trace["model"]["decision_origin"] == member["decision"]["fitted_on"]
    assert trace["operating_point"] == {"name": "youden", "threshold": 0.47}
    assert trace["scope"]["score_all"] is False and "WRIST" in trace["scope"]["parts"]
    assert sum(trace["summary"]["decisions"].values()) == 2 and len(trace["studies"]) == 1
    assert trace["settings"]["study"] is True and trace["settings"]["trace"] == str(trace_file)
    assert main([*args, "--trace", str(trace_file)]) == 0  # its own earlier trace is replaced
    capsys.readouterr()


def test_a_file_mura_did_not_write_is_never_replaced(tiny_checkpoint, films, tmp_path, capsys) -> None:
    mine = tmp_path / "notes.json"
    mine.write_text('{"my": "notes"}')
    code = main(["predict", str(films), "--checkpoint", str(tiny_checkpoint), "--trace", str(mine)])
    assert code == 2 and mine.read_text() == '{"my": "notes"}'
    err = capsys.readouterr().err
    assert "not a trace mura wrote" in err and "--trace" in err and "trace=" not in err


def test_the_api_traces_arrays_and_files(tiny_checkpoint, films, make_radiograph, tmp_path) -> None:
    model = mura.load(tiny_checkpoint, device="cpu", runtime="torch")
    array = make_radiograph("WRIST", abnormal=False, seed=9)
    model.predict_batch([array, films / "0.png"], trace=tmp_path / "api.json")
    inputs = json.loads((tmp_path / "api.json").read_text())["inputs"]
    assert inputs[0]["array"] == list(array.shape) and len(inputs[0]["sha256"]) == 64
    assert inputs[1]["sha256"] == file_sha256(films / "0.png")
    study = model.predict_study([films / "0.png", films / "1.png"], trace=tmp_path / "study.json")
    assert json.loads((tmp_path / "study.json").read_text())["studies"][0]["decision"] == study.decision
    with pytest.raises(MuraError, match="not a trace"):
        model.predict(array, trace=films / "0.png")

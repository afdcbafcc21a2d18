"""ONNX export: checked graph, dynamic batch, self-describing metadata, PyTorch parity, runtime choice."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import onnx
import pytest

from mura.errors import MuraError
from mura.inference.onnx_export import export_onnx
from mura.inference.predictor import Predictor

THRESHOLDS = {"default": 0.5, "youden": 0.35}


@pytest.fixture(scope="module")
def exported(make_checkpoint, tmp_path_factory):
    """custom_cnn (32 px) and efficientnet_b0 (64 px), random weights, each exported beside a copy."""
    directory = tmp_path_factory.mktemp("onnx")
    out = {}
    for name, size in (("custom_cnn", 32), ("efficientnet_b0", 64)):
        source = make_checkpoint(
            f"{name}_onnx.pt", name, size, seed=11, threshold=THRESHOLDS, temperature=1.7
        )
        checkpoint = shutil.copy(source, directory / f"{name}.pt")
        out[name] = (checkpoint, export_onnx(checkpoint))
    return out


@pytest.mark.parametrize("name", ["custom_cnn", "efficientnet_b0"])
def test_export_is_checked_and_self_describing(exported, name) -> None:
    checkpoint, report = exported[name]
    assert report.path == checkpoint.with_suffix(".onnx") and report.max_prob_diff < 1e-4
    proto = onnx.load(str(report.path))
    onnx.checker.check_model(proto)
    inputs = {i.name: i for i in proto.graph.input}
    assert set(inputs) == {"image", "body_part"}
    assert inputs["image"].type.tensor_type.shape.dim[0].dim_param  # symbolic (dynamic) batch
    assert [o.name for o in proto.graph.output] == ["fracture_logits", "body_part_logits"]
    meta = {p.key: json.loads(p.value) for p in proto.metadata_props}
    stored = meta["mura.checkpoint_meta"]
    assert stored["decision"]["thresholds"] == THRESHOLDS
    assert stored["decision"]["calibration"]["slope"] == pytest.approx(1 / 1.7)
    assert stored["preprocessing"]["size"] == (32 if name == "custom_cnn" else 64)
    assert stored["config"]["model"]["name"] == name and len(stored["body_parts"]) == 7


@pytest.mark.parametrize("name", ["custom_cnn", "efficientnet_b0"])
def test_onnx_runtime_matches_pytorch_on_images(exported, smooth_images, name) -> None:
    checkpoint, report = exported[name]
    imgs, parts = smooth_images(9), [-1, 0, 1, 2, 3, 4, 5, 6, -1]
    torch_batch = Predictor.from_checkpoints([checkpoint], runtime="torch", batch_size=4).predict_images(
        imgs, parts
    )
    onnx_batch = Predictor.from_checkpoints([checkpoint], runtime="onnx", batch_size=4).predict_images(
        imgs, parts
    )
    alone = Predictor.from_checkpoints([report.path]).predict_images(imgs, parts)  # the .onnx file on its own
    assert torch_batch.runtime == "torch" and onnx_batch.runtime == "onnx" and alone.runtime == "onnx"
    assert np.ptp(torch_batch.fracture_prob) > 1e-3
    for batch in (onnx_batch, alone):
        assert np.abs(batch.fracture_prob - torch_batch.fracture_prob).max() < 1e-4
        assert np.abs(batch.body_part_probs - torch_batch.body_part_probs).max() < 1e-4
        assert batch.threshold == 0.35 and list(batch.body_part) == list(torch_batch.body_part)


def test_auto_runtime_prefers_a_fresh_export_on_cpu(exported) -> None:
    checkpoint, report = exported["custom_cnn"]
    assert Predictor.from_checkpoints([checkpoint], device="cpu").runtime == "onnx"
    stat = report.path.stat()
    try:
        os.utime(report.path, (stat.st_atime, checkpoint.stat().st_mtime - 60))  # stale: older than the .pt
        assert Predictor.from_checkpoints([checkpoint], device="cpu").runtime == "torch"
    finally:
        os.utime(report.path, (stat.st_atime, stat.st_mtime))


def test_onnx_runtime_without_export_is_a_clear_error(make_checkpoint) -> None:
    from mura.errors import MuraError

    lonely = make_checkpoint("lonely.pt", "custom_cnn", 32, seed=2)
    with pytest.raises(MuraError, match="mura export"):
        Predictor.from_checkpoints([lonely], runtime="onnx")


def test_export_replaces_its_own_file_but_never_a_foreign_one(exported, tmp_path) -> None:
    checkpoint, report = exported["custom_cnn"]
    again = export_onnx(checkpoint, report.path)  # re-exporting over a mura export is fine
    assert again.path == report.path and onnx.load(str(report.path)).producer_name == "mura"
    foreign = tmp_path / "model.onnx"
    foreign.write_bytes(b"somebody else's model")
    with pytest.raises(MuraError, match="not an ONNX file exported by mura.*overwrite=True"):
        export_onnx(checkpoint, foreign)
    assert foreign.read_bytes() == b"somebody else's model"
    assert export_onnx(checkpoint, foreign, overwrite=True).path == foreign
    assert onnx.load(str(foreign)).producer_name == "mura"

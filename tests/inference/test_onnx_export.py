"""ONNX export: checked graph, dynamic batch, self-describing metadata, PyTorch parity, runtime choice."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import onnx
import pytest
import torch

from mura.checkpoint import load_model, update_checkpoint
from mura.constants import BODY_PARTS
from mura.errors import MuraError
from mura.inference.onnx_export import export_onnx
from mura.inference.predictor import Predictor
from mura.outputs import ModelOutput

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
    assert stored["config"]["model"]["name"] == name and stored["body_parts"] == list(BODY_PARTS)
    assert stored["body_part_floor"] == 0.0


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


def test_the_body_part_floor_is_applied_inside_the_graph(make_checkpoint, smooth_images, tmp_path) -> None:
    """A floor between the films' top body-part probabilities: the unsure ones are UNKNOWN and get the
    unknown-part embedding, in the ONNX graph exactly as in PyTorch; old 7-part models export too."""
    imgs, parts = smooth_images(12), [-1] * 12
    source = make_checkpoint(
        "custom_cnn_onnx.pt", "custom_cnn", 32, seed=11, threshold=THRESHOLDS, temperature=1.7
    )
    tops = (
        Predictor.from_checkpoints([source], runtime="torch")
        .predict_images(imgs, parts)
        .body_part_probs.max(1)
    )
    floored = update_checkpoint(source, tmp_path / "floored.pt", body_part_floor=float(np.median(tops)))
    legacy = shutil.copy(make_checkpoint("legacy.pt", legacy_body_parts=True), tmp_path / "legacy.pt")
    for path, unsure_films in ((floored, len(imgs) // 2), (legacy, 0)):
        export_onnx(path)
        torch_batch = Predictor.from_checkpoints([path], runtime="torch").predict_images(imgs, parts)
        onnx_batch = Predictor.from_checkpoints([path.with_suffix(".onnx")]).predict_images(imgs, parts)
        assert np.abs(onnx_batch.fracture_prob - torch_batch.fracture_prob).max() < 1e-4
        assert list(onnx_batch.body_part) == list(torch_batch.body_part)
        assert (torch_batch.body_part == -1).sum() == unsure_films


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


class WithMapHead(torch.nn.Module):
    """A loaded model plus a map head (a 3x3 conv and stride-4 pooling of its input): the graph must
    carry the map as its third output, as the map head models will."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model, self.head = model, torch.nn.Conv2d(1, 1, 3, padding=1)
        torch.nn.init.normal_(self.head.weight, std=0.5)

    def forward(self, image: torch.Tensor, body_part: torch.Tensor) -> ModelOutput:
        fracture_map = torch.nn.functional.avg_pool2d(self.head(image), 4)
        return self.model(image, body_part)._replace(fracture_map=fracture_map)


def test_the_fracture_map_is_exported_and_agrees_with_pytorch(make_checkpoint, monkeypatch, tmp_path) -> None:
    checkpoint = shutil.copy(make_checkpoint("map_onnx.pt", "custom_cnn", 32, seed=5), tmp_path / "map.pt")
    torch.manual_seed(0)
    heads: list[WithMapHead] = []

    def load_with_map(path, device):
        model, payload = load_model(path, device)
        heads.append(WithMapHead(model).eval())
        return heads[-1], payload

    monkeypatch.setattr("mura.inference.onnx_export.load_model", load_with_map)
    report = export_onnx(checkpoint)
    assert report.max_prob_diff < 1e-4  # the map's cells are in the parity check
    graph = onnx.load(str(report.path)).graph
    assert [o.name for o in graph.output] == ["fracture_logits", "body_part_logits", "fracture_map"]
    member = Predictor.from_checkpoints([report.path]).members[0]
    image = np.random.default_rng(0).normal(size=(3, 1, 32, 32)).astype(np.float32)
    got = member.run(image, np.array([-1, 0, 2])).fracture_map
    with torch.inference_mode():
        expected = heads[-1](torch.from_numpy(image), torch.tensor([-1, 0, 2])).fracture_map.numpy()
    assert got.shape == (3, 1, 8, 8) and np.ptp(expected) > 0.1
    np.testing.assert_allclose(got, expected, atol=1e-4)

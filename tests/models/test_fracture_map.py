"""The fracture-map head: the `ModelOutput.fracture_map` contract, checkpoints and export."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mura import checkpoint as ckpt
from mura.config_loading import load_config
from mura.errors import MuraError
from mura.models import create_model, model_from_config
from mura.models.fracture_map import lse_pool
from mura.preprocessing import Preprocessing


class LogitsAndMap(torch.nn.Module):
    """The two outputs an ONNX export of a map-head model carries, as a plain tuple."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor, body_part: torch.Tensor) -> tuple[torch.Tensor, ...]:
        output = self.model(image, body_part)
        return output.fracture_logits, output.fracture_map


@pytest.mark.parametrize(
    ("name", "size", "subcells", "side"),
    [
        ("custom_cnn", 64, 1, 8),  # stride 8
        ("tf_efficientnet_lite0", 128, 1, 4),  # stride 32
        ("tf_efficientnet_lite2", 128, 4, 16),  # stride 32 / 4 sub-cells = 8
        ("resnet50", 64, 2, 4),
        ("densenet169", 64, 1, 2),
    ],
)
def test_map_is_one_logit_per_cell_of_the_square_input_and_survives_forward_head(name, size, subcells, side):
    torch.manual_seed(0)
    model = create_model(name, img_size=size, map_head=True, map_subcells=subcells).eval()
    image, body_part = torch.randn(2, 1, size, size), torch.tensor([0, -1])
    with torch.no_grad():
        output = model(image, body_part)
        via_head = model.forward_head(model.forward_features(image), body_part)
        pooled = model.forward_head(model.pool(model.forward_features(image)), body_part)
    assert output.fracture_map.shape == (2, 1, side, side)  # cell side s = size / side input pixels
    assert torch.allclose(via_head.fracture_map, output.fracture_map)
    assert pooled.fracture_map is None  # a feature cache's pooled vectors hold no map
    assert torch.allclose(pooled.fracture_logits, output.fracture_logits, atol=1e-6)


def test_a_model_without_map_head_has_no_map_and_its_checkpoint_keys_are_unchanged():
    torch.manual_seed(0)
    plain = create_model("custom_cnn", img_size=32)
    assert not plain.has_map_head
    assert plain(torch.randn(2, 1, 32, 32), torch.tensor([0, 1])).fracture_map is None
    mapped = create_model("custom_cnn", img_size=32, map_head=True)
    extra = set(mapped.state_dict()) - set(plain.state_dict())
    assert extra and all(key.startswith("map_head.") for key in extra)


def test_map_evidence_starts_at_zero_weight_then_raises_the_fracture_logit():
    torch.manual_seed(0)
    model = create_model("custom_cnn", img_size=32, map_head=True, map_to_logit=True).eval()
    image, body_part = torch.randn(3, 1, 32, 32), torch.tensor([0, 1, -1])
    with torch.no_grad():
        before = model(image, body_part)
        plain = model.heads(model.pool(model.forward_features(image)), body_part).fracture_logits
        assert torch.allclose(before.fracture_logits, plain)
        model.map_head.evidence_weight.fill_(2.0)
        after = model(image, body_part).fracture_logits
    expected = plain[:, 1] + 2.0 * lse_pool(before.fracture_map)
    assert torch.allclose(after[:, 1], expected, atol=1e-5)
    assert torch.allclose(after[:, 0], plain[:, 0])


def test_map_options_without_a_map_head_are_refused():
    with pytest.raises(MuraError, match="map_head=True"):
        create_model("custom_cnn", img_size=32, map_subcells=2)
    with pytest.raises(MuraError, match="map_head=True"):
        create_model("custom_cnn", img_size=32, map_to_logit=True)


def test_config_keys_are_validated_and_rebuild_the_head_from_a_checkpoint(tmp_path):
    with pytest.raises(MuraError, match="model.map_subcells"):
        load_config(overrides={"model.map_subcells": 0})
    with pytest.raises(MuraError, match="train.map_loss_weight"):
        load_config(overrides={"train.map_loss_weight": -1})
    cfg = load_config(
        overrides={
            "model.name": "custom_cnn",
            "model.size": 32,
            "model.map_head": True,
            "model.map_subcells": 2,
            "model.map_to_logit": True,
        }
    )
    torch.manual_seed(0)
    model = model_from_config(cfg.model).eval()
    path = ckpt.save_model(
        tmp_path / "map.pt", model, cfg, Preprocessing(32, "stretch", **model.default_preprocessing)
    )
    loaded, _ = ckpt.load_model(path)
    image, body_part = torch.randn(2, 1, 32, 32), torch.tensor([0, -1])
    with torch.no_grad():
        expected, got = model(image, body_part), loaded(image, body_part)
    assert got.fracture_map.shape == (2, 1, 8, 8)
    assert torch.allclose(got.fracture_map, expected.fracture_map)
    assert torch.allclose(got.fracture_logits, expected.fracture_logits)


def test_a_checkpoint_from_before_the_map_keys_loads_unchanged_without_a_map(tmp_path):
    cfg = load_config(overrides={"model.name": "custom_cnn", "model.size": 32})
    torch.manual_seed(0)
    model = model_from_config(cfg.model).eval()
    path = ckpt.save_model(
        tmp_path / "old.pt", model, cfg, Preprocessing(32, "stretch", **model.default_preprocessing)
    )
    raw = torch.load(path, weights_only=True)
    for key in ("map_head", "map_subcells", "map_to_logit"):
        del raw["meta"]["config"]["model"][key]
    del raw["meta"]["config"]["train"]["map_loss_weight"]
    torch.save(raw, path)  # as a mura from before the map head wrote it
    loaded, _ = ckpt.load_model(path)
    image = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        got, expected = loaded(image, torch.tensor([0, 1])), model(image, torch.tensor([0, 1]))
    assert not loaded.has_map_head and got.fracture_map is None
    assert torch.equal(got.fracture_logits, expected.fracture_logits)


@pytest.mark.filterwarnings("ignore:.*axis name.*:UserWarning")
def test_the_map_exports_to_onnx_with_the_same_values(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    model = create_model("custom_cnn", img_size=32, map_head=True, map_subcells=2, map_to_logit=True)
    model.map_head.evidence_weight.data.fill_(0.5)
    model.eval()

    batch = torch.export.Dim("batch", min=1, max=1024)
    path = tmp_path / "map.onnx"
    torch.onnx.export(
        LogitsAndMap(model).eval(),
        (torch.randn(2, 1, 32, 32), torch.tensor([0, -1])),
        str(path),
        input_names=["image", "body_part"],
        output_names=["fracture_logits", "fracture_map"],
        dynamic_shapes={"image": {0: batch}, "body_part": {0: batch}},
        dynamo=True,
    )
    image, body_part = torch.randn(3, 1, 32, 32), torch.tensor([0, -1, 2])
    logits, fracture_map = ort.InferenceSession(str(path)).run(
        None, {"image": image.numpy(), "body_part": body_part.numpy()}
    )
    with torch.no_grad():
        expected = model(image, body_part)
    np.testing.assert_allclose(fracture_map, expected.fracture_map.numpy(), atol=1e-5)
    np.testing.assert_allclose(logits, expected.fracture_logits.numpy(), atol=1e-5)


@pytest.mark.parametrize(("name", "size", "side"), [("tf_efficientnet_lite0", 128, 16), ("resnet50", 64, 8)])
def test_a_stride_16_map_reads_the_earlier_stage_from_the_same_pass(name, size, side):
    torch.manual_seed(0)
    model = create_model(name, img_size=size, map_head=True, map_subcells=2, map_stride=16).eval()
    plain = create_model(name, img_size=size).eval()
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("map_head.")})
    image, body_part = torch.randn(2, 1, size, size), torch.tensor([0, -1])
    with torch.no_grad():
        output = model(image, body_part)
        expected = plain(image, body_part)
    assert output.fracture_map.shape == (2, 1, side, side)  # stride 16 / 2 sub-cells = 8 input pixels
    # The backbone runs once for both stages and its image logits are those of the model without a map.
    assert torch.allclose(output.fracture_logits, expected.fracture_logits, atol=1e-5)
    with pytest.raises(ValueError, match="stride-16"):
        model.forward_head(model.forward_features(image), body_part)


def test_a_map_stride_the_backbone_lacks_is_refused_naming_the_fix():
    with pytest.raises(MuraError, match="map_stride=16 needs a timm backbone.*use map_stride=32"):
        create_model("custom_cnn", img_size=64, map_head=True, map_stride=16)
    with pytest.raises(MuraError, match="map_stride=16"):
        create_model("tf_efficientnet_lite0", img_size=64, map_stride=16)


@pytest.mark.filterwarnings("ignore:.*axis name.*:UserWarning")
def test_a_stride_16_map_exports_to_onnx_with_the_same_values(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    model = create_model("tf_efficientnet_lite0", img_size=64, map_head=True, map_stride=16).eval()

    path = tmp_path / "fine_map.onnx"
    torch.onnx.export(
        LogitsAndMap(model).eval(),
        (torch.randn(2, 1, 64, 64), torch.tensor([0, -1])),
        str(path),
        input_names=["image", "body_part"],
        output_names=["fracture_logits", "fracture_map"],
        dynamo=True,
    )
    image, body_part = torch.randn(2, 1, 64, 64), torch.tensor([3, -1])
    logits, fracture_map = ort.InferenceSession(str(path)).run(
        None, {"image": image.numpy(), "body_part": body_part.numpy()}
    )
    with torch.no_grad():
        expected = model(image, body_part)
    assert fracture_map.shape == (2, 1, 4, 4)
    np.testing.assert_allclose(fracture_map, expected.fracture_map.numpy(), atol=1e-4)
    np.testing.assert_allclose(logits, expected.fracture_logits.numpy(), atol=1e-4)

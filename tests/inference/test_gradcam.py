"""Grad-CAM: maps at the original image size, not constant, and following the fracture when it moves."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mura.inference.gradcam import CamModel, GradCamExplainer, cam_to_original, fracture_cam
from mura.models import create_model
from mura.preprocessing import Preprocessing

SIZE = 64


def line_detector() -> torch.nn.Module:
    """custom_cnn whose fracture log-odds is the summed response of one bright-pixel channel.

    conv blocks pass channel 0 through (centre tap 1, everything else 0; their BatchNorm layers are
    identities in eval mode at initialisation), so after block 3 (the CAM
    layer) channel 0 is bright exactly where the image is bright; the fracture head adds that channel
    up. A bright line raises the fracture score, and Grad-CAM must point at the line.
    """
    model = create_model("custom_cnn", img_size=SIZE, freeze="full", dropout=0.0).eval()
    with torch.no_grad():
        for block in model.backbone.blocks:
            conv = block[0]
            conv.weight.zero_()
            conv.weight[0, 0, 1, 1] = 1.0
        first, last = [m for m in model.heads.fracture_head.modules() if isinstance(m, torch.nn.Linear)]
        side = SIZE // 8
        first.weight.zero_()
        first.bias.zero_()
        first.weight[0, : side * side] = 1.0  # channel 0 of the flattened [128, side, side] maps
        last.weight.zero_()
        last.bias.zero_()
        last.weight[1, 0] = 1.0
    return model


def radiograph_with_line(column: int, shape: tuple[int, int] = (90, 120)) -> np.ndarray:
    image = np.full(shape, 40, dtype=np.uint8)
    image[10:-10, column : column + 3] = 250
    return image


@pytest.fixture(scope="module")
def explainer() -> GradCamExplainer:
    pre = Preprocessing(size=SIZE, resize_mode="stretch", mean=0.5, std=0.25)
    return GradCamExplainer([CamModel(line_detector(), pre, torch.device("cpu"))])


def test_map_has_the_original_size_and_is_not_constant(explainer: GradCamExplainer) -> None:
    heat = explainer.heatmap(radiograph_with_line(30), body_part=3)
    assert heat.shape == (90, 120) and heat.dtype == np.float32
    assert heat.max() > 0.9 and heat.min() < 0.1


@pytest.mark.parametrize("body_part", [3, -1])
def test_cam_peak_follows_the_line(explainer: GradCamExplainer, body_part: int) -> None:
    peaks = []
    for column in (15, 60, 100):
        heat = explainer.heatmap(radiograph_with_line(column), body_part)
        profile = heat.mean(axis=0)
        peaks.append(int(profile.argmax()))
        assert abs(peaks[-1] - (column + 1)) <= 10, (column, peaks[-1])
    assert peaks[0] < peaks[1] < peaks[2]


def test_letterbox_maps_are_cropped_back_to_the_image() -> None:
    square = np.zeros((64, 64), dtype=np.float32)
    square[16:48, 40:44] = 1.0  # content of a 2:1 image occupies rows 16..48 after letterboxing
    back = cam_to_original(square, (50, 100), "letterbox")
    assert back.shape == (50, 100)
    column = int(back.mean(axis=0).argmax())
    assert 40 / 64 * 100 - 3 <= column <= 44 / 64 * 100 + 3
    assert back[:, column].min() > 0.5  # the band spans the image's full height: padding was removed


def test_hooks_are_released_and_model_state_is_unchanged() -> None:
    model = create_model("custom_cnn", img_size=32, freeze="full").eval()
    before = {n: p.requires_grad for n, p in model.named_parameters()}
    with fracture_cam(model) as cam:
        maps = cam(torch.randn(2, 1, 32, 32), torch.tensor([-1, 2]))
        assert len(model.cam_layer._forward_hooks) > 0
    assert maps.shape == (2, 32, 32)
    assert len(model.cam_layer._forward_hooks) == 0 and len(model.cam_layer._backward_hooks) == 0
    assert {n: p.requires_grad for n, p in model.named_parameters()} == before
    assert all(p.grad is None for p in model.parameters())


def test_efficientnet_and_ensemble_from_checkpoints(make_checkpoint) -> None:
    effnet = make_checkpoint("effnet64.pt", "efficientnet_b0", 64, seed=7)
    cnn = make_checkpoint("cnn32.pt", "custom_cnn", 32, seed=1, threshold={"default": 0.5, "youden": 0.3})
    image = np.random.default_rng(0).integers(0, 256, (70, 50), dtype=np.uint8)
    single = GradCamExplainer.from_checkpoints([effnet], "cpu")
    heat = single.heatmap(image)
    assert heat.shape == (70, 50) and np.ptp(heat) > 0.1
    both = GradCamExplainer.from_checkpoints([effnet, cnn], "cpu")
    mean = both.heatmap(image, 2)
    assert mean.shape == (70, 50) and 0.0 <= mean.min() <= mean.max() <= 1.0 and np.ptp(mean) > 0.1

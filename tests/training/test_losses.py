"""Multi-task loss: focal values by hand, class weights (MURA-style), the -1 body-part rules."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from mura.constants import NUM_BODY_PARTS
from mura.errors import MuraError
from mura.outputs import ModelOutput
from mura.training.losses import MultiTaskLoss, class_weights_from_index, focal_loss


def test_focal_loss_matches_hand_computed_values():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, -1.0]])
    target = torch.tensor([0, 0, 1])
    p_t = [math.exp(2) / (math.exp(2) + 1), 1 / (1 + math.e), math.exp(-1) / (math.exp(3) + math.exp(-1))]
    expected = [-((1 - p) ** 2) * math.log(p) for p in p_t]
    got = focal_loss(logits, target, gamma=2.0)
    assert got.tolist() == pytest.approx(expected, rel=1e-5)
    assert expected[0] == pytest.approx(0.0018047, rel=1e-3)  # an easy example is almost ignored
    assert torch.allclose(
        focal_loss(logits, target, gamma=0.0), F.cross_entropy(logits, target, reduction="none")
    )


def test_unweighted_ce_loss_is_fracture_ce_plus_weighted_body_part_ce_ignoring_unknown():
    torch.manual_seed(0)
    fracture, body = torch.randn(4, 2), torch.randn(4, 7)
    label, part = torch.tensor([0, 1, 1, 0]), torch.tensor([2, -1, 6, 0])
    out = MultiTaskLoss(body_part_weight=0.5)(ModelOutput(fracture, body), label, part)
    known = part >= 0
    assert out.fracture.item() == pytest.approx(F.cross_entropy(fracture, label).item(), rel=1e-6)
    assert out.body_part.item() == pytest.approx(F.cross_entropy(body[known], part[known]).item(), rel=1e-6)
    assert out.total.item() == pytest.approx(out.fracture.item() + 0.5 * out.body_part.item(), rel=1e-6)


def test_a_batch_of_unknown_body_parts_gives_zero_body_part_loss_not_nan():
    output = ModelOutput(torch.randn(3, 2), torch.randn(3, 7))
    out = MultiTaskLoss()(output, torch.tensor([0, 1, 0]), torch.full((3,), -1))
    assert out.body_part.item() == 0.0 and torch.isfinite(out.total)


def test_per_body_part_weights_apply_per_image_and_unknown_parts_use_the_global_row():
    table = torch.ones(NUM_BODY_PARTS + 1, 2)
    table[2] = torch.tensor([0.5, 3.0])  # FOREARM
    table[NUM_BODY_PARTS] = torch.tensor([1.0, 2.0])  # global, for unknown parts
    fracture = torch.zeros(3, 2)  # every image: -log(0.5)
    loss = MultiTaskLoss(class_weights=table)(
        ModelOutput(fracture, torch.zeros(3, 7)), torch.tensor([1, 0, 1]), torch.tensor([2, 2, -1])
    )
    assert loss.fracture.item() == pytest.approx(math.log(2) * (3.0 + 0.5 + 2.0) / 3, rel=1e-6)
    per_part = MultiTaskLoss(class_weights=table[:NUM_BODY_PARTS])  # [parts, 2]: unknown gets the row mean
    assert per_part.class_weights[NUM_BODY_PARTS].tolist() == pytest.approx(
        table[:NUM_BODY_PARTS].mean(0).tolist()
    )
    with pytest.raises(MuraError, match="shape"):
        MultiTaskLoss(class_weights=torch.ones(3))


def test_class_weights_weigh_the_rare_class_up_per_body_part():
    rows = (
        [("train", "XR_WRIST", 1)] * 3
        + [("train", "WRIST", 0)]
        + [("train", "HAND", 0)] * 4  # only normals: falls back to global weights
        + [("train", "", 1)] * 2  # unknown body part still counts globally
        + [("val", "WRIST", 0)] * 50  # other splits do not count
    )
    df = pd.DataFrame(rows, columns=["split", "body_part", "label"])
    table = class_weights_from_index(df, "per_body_part")
    assert table.shape == (NUM_BODY_PARTS + 1, 2)
    wrist = table[6]
    assert wrist.tolist() == pytest.approx([4 / 2, 4 / 6])  # normal, abnormal
    assert (wrist[1] / wrist[0]).item() == pytest.approx(1 / 3)  # MURA: w_abnormal/w_normal = |N|/|A|
    assert (3 * wrist[1] + 1 * wrist[0]).item() / 4 == pytest.approx(1.0)  # mean weight 1
    overall = [10 / (2 * 5), 10 / (2 * 5)]  # 5 normal, 5 abnormal in train
    assert table[3].tolist() == pytest.approx(overall) and table[NUM_BODY_PARTS].tolist() == pytest.approx(
        overall
    )
    assert class_weights_from_index(df, "global").tolist() == pytest.approx(overall)
    assert class_weights_from_index(df, "none") is None
    with pytest.raises(MuraError, match="class_weights 'sometimes'"):
        class_weights_from_index(df, "sometimes")
    with pytest.raises(MuraError, match="one class is missing"):
        class_weights_from_index(df[df.label == 0], "global")


def test_weighted_focal_loss_is_differentiable_and_finite_under_bf16_logits():
    logits = torch.randn(6, 2, requires_grad=True)
    weights = class_weights_from_index(
        pd.DataFrame({"body_part": ["ELBOW"] * 6, "label": [1, 0, 0, 0, 0, 1]}), "per_body_part"
    )
    loss = MultiTaskLoss("focal", focal_gamma=2.0, class_weights=weights)(
        ModelOutput(logits.bfloat16(), torch.randn(6, 7).bfloat16()),
        torch.tensor([1, 0, 0, 0, 0, 1]),
        torch.zeros(6, dtype=torch.long),
    )
    loss.total.backward()
    assert loss.total.dtype == torch.float32 and torch.isfinite(logits.grad).all()


def test_label_smoothing_pulls_the_optimum_off_certainty() -> None:
    """With smoothing e the loss of a correct prediction is lowest at p = 1 - e/2, not at p = 1."""
    smoothing = 0.2
    margins = torch.linspace(-1.0, 8.0, 901)
    logits = torch.stack([torch.zeros_like(margins), margins], dim=1)
    label = torch.ones(len(margins), dtype=torch.long)
    loss = focal_loss(logits, label, gamma=0.0, smoothing=smoothing)
    best = torch.sigmoid(margins[loss.argmin()]).item()
    assert best == pytest.approx(1 - smoothing / 2, abs=2e-3)
    hard = focal_loss(logits, label, gamma=0.0)
    assert torch.allclose(hard, torch.nn.functional.cross_entropy(logits, label, reduction="none"))
    assert int(hard.argmin()) == len(margins) - 1
    output = ModelOutput(logits, torch.randn(len(margins), 7))
    smoothed = MultiTaskLoss(label_smoothing=smoothing)(output, label, -label)
    assert smoothed.fracture.item() == pytest.approx(loss.mean().item(), rel=1e-6)
    with pytest.raises(MuraError, match="label smoothing"):
        MultiTaskLoss(label_smoothing=0.5)

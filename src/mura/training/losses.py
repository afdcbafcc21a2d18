"""Multi-task loss: fracture (cross-entropy or focal, optionally class-weighted and label-smoothed) +
weighted body-part CE + weighted fracture-map loss (box targets) for a model with a map head.

Class weights follow the MURA paper: for body part T with |A| abnormal and |N| normal training
images, abnormal images weigh |N|/(|A|+|N|) and normal ones |A|/(|A|+|N|). We rescale that pair so
the mean weight over T's training images is 1 (which makes them scikit-learn's "balanced" weights,
|A+N|/(2|A|) and |A+N|/(2|N|)): the fracture loss then keeps its scale next to the body-part loss.

Weights are indexed `[body_part, label]`. A `[8, 2]` table carries the global weights in its last
row, which is exactly where index -1 (unknown body part) lands, so unknown parts fall back to global
weights. A `[7, 2]` table gets the mean of its rows appended for that purpose; a `[2]` tensor applies
to every body part.

The fracture-map term (`fracture_map_loss`) uses the strongest supervision each film has: a film with
boxes gets a dense target (cells a box overlaps 1, the rest 0) scored by class-balanced BCE (box cells
and background cells weigh half each: a fracture covers ~1% of a FracAtlas film, and a plain mean
let the map learn "nothing anywhere") + soft Dice; a normal film without boxes an all-zero target
(BCE); an abnormal film without boxes only a weak term, its LSE-pooled map against "fracture
somewhere" (where on the film is unknown, so no cell is pushed down).
"""

from __future__ import annotations

from typing import NamedTuple

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from mura.constants import NUM_BODY_PARTS, body_part_index
from mura.errors import MuraError
from mura.models.fracture_map import lse_pool
from mura.outputs import ModelOutput
from mura.training.map_targets import MapTarget, cell_targets

CLASS_WEIGHT_MODES = ("none", "global", "per_body_part")


class LossParts(NamedTuple):
    total: torch.Tensor
    fracture: torch.Tensor
    body_part: torch.Tensor
    fracture_map: torch.Tensor  # 0 when the output has no map or no target came with the batch


def soft_dice_loss(probabilities: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-film 1 - soft Dice of [N, cells] probabilities against binary targets."""
    overlap = (probabilities * target).sum(dim=1)
    return 1.0 - (2.0 * overlap + 1.0) / (probabilities.sum(dim=1) + target.sum(dim=1) + 1.0)


def fracture_map_loss(fracture_map: torch.Tensor, target: MapTarget, label: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of each film's map loss (see the module docstring): dense targets on films
    with boxes or labelled normal, the weak LSE term on abnormal films without boxes."""
    logits = fracture_map.float()
    cells = cell_targets(target.mask.to(logits.device), tuple(logits.shape[-2:])).flatten(1)
    logits = logits.flatten(1)
    boxed = target.boxed.to(logits.device)
    dense = boxed | (label == 0)
    cell_loss = F.binary_cross_entropy_with_logits(logits, cells, reduction="none")
    inside, outside = cells.sum(dim=1), (1.0 - cells).sum(dim=1)
    balanced = 0.5 * (cell_loss * cells).sum(dim=1) / inside.clamp(min=1.0) + 0.5 * (
        cell_loss * (1.0 - cells)
    ).sum(dim=1) / outside.clamp(min=1.0)
    boxed_loss = balanced + soft_dice_loss(torch.sigmoid(logits), cells)
    per_film = torch.where(inside > 0, boxed_loss, cell_loss.mean(dim=1))  # no box cell: all-zero target
    weak = F.binary_cross_entropy_with_logits(
        lse_pool(fracture_map), torch.ones_like(per_film), reduction="none"
    )
    return torch.where(dense, per_film, weak).mean()


def focal_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    gamma: float,
    weight: torch.Tensor | None = None,
    smoothing: float = 0.0,
) -> torch.Tensor:
    """Per-sample (1 - p_t)^gamma * CE(smoothed target) * weight: gamma=0 is cross-entropy, smoothing=0
    the hard target; smoothing moves that share of the target evenly onto all classes."""
    log_probs = F.log_softmax(logits.float(), dim=1)
    log_p = log_probs.gather(1, target[:, None]).squeeze(1)
    cross_entropy = -(1.0 - smoothing) * log_p - smoothing * log_probs.mean(dim=1)
    loss = (1.0 - log_p.exp()) ** gamma * cross_entropy
    return loss if weight is None else loss * weight


def _weight_table(class_weights: torch.Tensor | None) -> torch.Tensor | None:
    if class_weights is None:
        return None
    weights = torch.as_tensor(class_weights, dtype=torch.float32)
    if weights.shape == (2,):
        return weights.expand(NUM_BODY_PARTS + 1, 2).clone()
    if weights.shape == (NUM_BODY_PARTS, 2):
        return torch.cat([weights, weights.mean(dim=0, keepdim=True)])
    if weights.shape == (NUM_BODY_PARTS + 1, 2):
        return weights.clone()
    raise MuraError(
        f"class weights must have shape [2], [{NUM_BODY_PARTS}, 2] or [{NUM_BODY_PARTS + 1}, 2], "
        f"got {list(weights.shape)}"
    )


class MultiTaskLoss(nn.Module):
    """`loss(output, label, body_part, map_target=None) -> LossParts(total, fracture, body_part, map)`.

    `output` is the model's `ModelOutput`, read by field name (logits may be bf16 from autocast: both
    terms are computed in float32).

    total = fracture + body_part_weight * body_part. The fracture term is the mean over the batch of
    per-image (weighted) CE or focal loss; the body-part term is CE over images whose body part is
    known (-1 is ignored; a batch with none contributes 0, not NaN). With a `fracture_map` in the output
    and a `map_target` (training batches), total += map_weight * `fracture_map_loss`; validation has no
    target, so its loss stays the image-level one.
    """

    def __init__(
        self,
        fracture_loss: str = "ce",
        focal_gamma: float = 2.0,
        body_part_weight: float = 1.0,
        class_weights: torch.Tensor | None = None,
        label_smoothing: float = 0.0,
        map_weight: float = 1.0,
    ) -> None:
        super().__init__()
        if fracture_loss not in ("ce", "focal"):
            raise MuraError(f"loss {fracture_loss!r} is not one of ce, focal")
        if not 0.0 <= label_smoothing < 0.5:
            raise MuraError(f"label smoothing {label_smoothing} is not in [0, 0.5)")
        self.label_smoothing = float(label_smoothing)
        self.fracture_loss = fracture_loss
        self.focal_gamma = float(focal_gamma) if fracture_loss == "focal" else 0.0
        self.body_part_weight = float(body_part_weight)
        self.map_weight = float(map_weight)
        table = _weight_table(class_weights)
        self.register_buffer("class_weights", table, persistent=False)

    def forward(
        self,
        output: ModelOutput,
        label: torch.Tensor,
        body_part: torch.Tensor,
        map_target: MapTarget | None = None,
    ) -> LossParts:
        label = label.long()
        body_part = body_part.long()
        weight = None if self.class_weights is None else self.class_weights[body_part, label]
        fracture = focal_loss(
            output.fracture_logits, label, self.focal_gamma, weight, self.label_smoothing
        ).mean()
        known = (body_part >= 0).sum().clamp(min=1)
        body_logits = output.body_part_logits.float()
        body = F.cross_entropy(body_logits, body_part, ignore_index=-1, reduction="sum") / known
        total = fracture + self.body_part_weight * body
        fracture_map = torch.zeros((), device=total.device)
        if output.fracture_map is not None and map_target is not None:
            fracture_map = fracture_map_loss(output.fracture_map, map_target, label)
            total = total + self.map_weight * fracture_map
        return LossParts(total, fracture, body, fracture_map)


def _balanced(labels: pd.Series) -> tuple[float, float] | None:
    """(normal, abnormal) weights with mean 1 over these labels, or None if a class is absent."""
    total = len(labels)
    abnormal = int((labels == 1).sum())
    normal = total - abnormal
    if abnormal == 0 or normal == 0:
        return None
    return total / (2.0 * normal), total / (2.0 * abnormal)


def class_weights_from_index(
    df: pd.DataFrame, mode: str = "per_body_part", split: str | None = "train"
) -> torch.Tensor | None:
    """Class weights from an index's `label` (and `body_part`) columns, for `MultiTaskLoss`.

    `none` -> None; `global` -> tensor[2] (normal, abnormal); `per_body_part` -> tensor[8, 2]: rows
    0..6 per body part, row 7 the global weights (used for unknown parts, and for any body part whose
    training images lack one of the classes). Only rows of `split` count, when the index has a
    `split` column and `split` is given.
    """
    if mode not in CLASS_WEIGHT_MODES:
        raise MuraError(f"class_weights {mode!r} is not one of {', '.join(CLASS_WEIGHT_MODES)}")
    if mode == "none":
        return None
    if split is not None and "split" in df.columns:
        df = df[df["split"] == split]
    if "label" not in df.columns or df.empty:
        raise MuraError(f"class weights need labelled {split or ''} rows in the index; found none")
    labels = df["label"].astype(int)
    overall = _balanced(labels)
    if overall is None:
        raise MuraError("class weights need both normal and abnormal training images; one class is missing")
    if mode == "global":
        return torch.tensor(overall, dtype=torch.float32)
    parts = df["body_part"].map(body_part_index) if "body_part" in df.columns else pd.Series(-1, df.index)
    table = torch.tensor([overall] * (NUM_BODY_PARTS + 1), dtype=torch.float32)
    for part in range(NUM_BODY_PARTS):
        pair = _balanced(labels[parts == part])
        if pair is not None:
            table[part] = torch.tensor(pair)
    return table

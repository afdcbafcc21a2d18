"""One epoch of training and one pass of evaluation, shared by the image path and the feature-cache path.

Both paths feed `module(inputs, body_part) -> ModelOutput`, read by field name; what differs is how a
batch becomes `inputs` (`BatchInput` -> `ModelInput`): uint8 pixels -> resize/augment/normalise on the
device, or cached (pooled) backbone features as they are. A model with a map head trains from pixels,
and its training batches carry the films' boxes as masks moved by the same augmentation (`MapTarget`).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import torch
from tqdm import tqdm

from mura.data.transforms import augment_with_masks
from mura.decision import auc_or_nan, kappa_or_nan
from mura.outputs import ModelOutput
from mura.preprocessing import Preprocessing
from mura.training.distributed import DistInfo, all_reduce_sum, gather_columns_by_row
from mura.training.map_targets import MapTarget, rasterise_boxes
from mura.training.part_floor import drop_body_parts
from mura.training.schedule import LrSchedule


class ModelInput(NamedTuple):
    """What one batch gives the model (`x`) and, for a map head in training, its box targets."""

    x: torch.Tensor
    map_target: MapTarget | None = None


BatchInput = Callable[[Any, bool], ModelInput]
BoxesFor = Callable[[torch.Tensor], list[np.ndarray]]
# The model outputs `predict` keeps for the validation metrics, by `ModelOutput` field name.
PREDICTED = ("fracture_logits", "body_part_logits")


class ImageInput:
    """uint8 batch -> model input on the device; augmentation (training only) from `generator`.

    With `boxes_for` (the training set's `boxes_for`, for a model with a map head), training batches
    also carry their boxes as masks that the augmentation moves with the pixels.
    """

    def __init__(
        self,
        pre: Preprocessing,
        augment: str,
        degrees: float,
        device: torch.device,
        channels_last: bool,
        generator: torch.Generator,
        boxes_for: BoxesFor | None = None,
    ) -> None:
        self.pre, self.augment, self.degrees = pre, augment, degrees
        self.device, self.channels_last, self.generator = device, channels_last, generator
        self.boxes_for = boxes_for

    def pixels(self, images: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        return self.with_target(images, None, generator).x

    def with_target(
        self, images: torch.Tensor, target: MapTarget | None, generator: torch.Generator | None
    ) -> ModelInput:
        """Pixels (and box masks, when given) -> the model input, both augmented alike by `generator`."""
        self.pre.check_pixels(tuple(images.shape), "training batch")
        unit = images.to(self.device, non_blocking=True).float().div_(255.0)
        mask = None if target is None else target.mask.to(self.device)
        if generator is not None:
            unit, mask = augment_with_masks(unit, mask, self.augment, self.degrees, generator)
        x = self.pre.normalize_unit(unit)
        x = x.contiguous(memory_format=torch.channels_last) if self.channels_last else x
        return ModelInput(x, None if target is None else MapTarget(mask, target.boxed))

    def __call__(self, batch: Any, train: bool) -> ModelInput:
        target = None
        if train and self.boxes_for is not None:
            target = rasterise_boxes(self.boxes_for(batch.row), int(batch.image.shape[-1]))
        return self.with_target(batch.image, target, self.generator if train else None)


class FeatureInput:
    def __init__(self, device: torch.device) -> None:
        self.device = device

    def __call__(self, batch: Any, train: bool) -> ModelInput:
        return ModelInput(batch.image.to(self.device, non_blocking=True))


def autocast_for(device: torch.device, enabled: bool, cpu_bf16: bool = False) -> Callable[[], Any]:
    """bf16 autocast on CUDA (no loss scaling needed), and on CPU with `cpu_bf16` where the CPU computes
    bf16 natively: there a 64 px ResNet50 / DenseNet169 / custom CNN step costs 1.5-2x less, while
    emulated bf16 would be slower than float32. Not for every model: EfficientNet-Lite's depthwise
    convolutions train ~1.7x SLOWER in CPU bf16 (their backward has no fast bf16 kernel;
    benchmarks/bench_train_step.py), which is why it is a per-recipe switch. A no-op elsewhere."""
    if enabled and device.type == "cuda":
        return lambda: torch.autocast("cuda", dtype=torch.bfloat16)
    if cpu_bf16 and device.type == "cpu" and torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return lambda: torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext


def train_one_epoch(
    module: torch.nn.Module,
    loader: Any,
    batch_input: BatchInput,
    loss_fn: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    schedule: LrSchedule,
    info: DistInfo,
    grad_clip: float,
    autocast: Callable[[], Any],
    desc: str,
    part_generator: torch.Generator | None = None,
) -> dict[str, float]:
    """Returns mean losses, images/s and the fraction of wall time spent waiting for batches. With
    `part_generator` a share of films hide their part from the fracture head (`part_floor`); the
    body-part loss still sees every given part."""
    module.train()
    params = [p for p in module.parameters() if p.requires_grad]
    sums = torch.zeros(5, dtype=torch.float64)  # total, fracture, body part, fracture map, images
    wait = 0.0
    start = mark = time.perf_counter()
    for batch in tqdm(loader, desc=desc, leave=False, disable=not info.is_main):
        wait += time.perf_counter() - mark
        body_part = batch.body_part.to(info.device, non_blocking=True)
        label = batch.label.to(info.device, non_blocking=True)
        inputs = batch_input(batch, True)
        fed = body_part if part_generator is None else drop_body_parts(body_part, part_generator)
        with autocast():
            output = module(inputs.x, fed)
        parts = loss_fn(output, label, body_part, inputs.map_target)
        total = parts.total
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        if grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, grad_clip)
        optimizer.step()
        schedule.batch_end()
        n = len(batch)
        sums += torch.tensor(
            [float(t.detach()) * n for t in (total, parts.fracture, parts.body_part, parts.fracture_map)]
            + [n],
            dtype=torch.float64,
        )
        mark = time.perf_counter()
    elapsed = max(time.perf_counter() - start, 1e-9)
    totals = all_reduce_sum(sums, info)
    count = max(float(totals[4]), 1.0)
    return {
        "train_loss": float(totals[0]) / count,
        "train_fracture_loss": float(totals[1]) / count,
        "train_body_part_loss": float(totals[2]) / count,
        "train_map_loss": float(totals[3]) / count,
        "train_images_per_s": float(totals[4]) / elapsed,
        "data_wait_fraction": wait / elapsed,
    }


@torch.no_grad()
def predict(
    module: torch.nn.Module,
    loader: Any,
    batch_input: BatchInput,
    info: DistInfo,
    autocast: Callable[[], Any],
    desc: str = "val",
) -> dict[str, np.ndarray]:
    """Named arrays for every image of the (sharded) loader, gathered from all ranks, each row once:
    `rows`, the `PREDICTED` logits (float64) and `labels`, `body_parts` (int64)."""
    module.eval()
    rows: list[torch.Tensor] = []
    logits: dict[str, list[torch.Tensor]] = {name: [] for name in PREDICTED}
    labels: list[torch.Tensor] = []
    body_parts: list[torch.Tensor] = []
    for batch in tqdm(loader, desc=desc, leave=False, disable=not info.is_main):
        body_part = batch.body_part.to(info.device, non_blocking=True)
        with autocast():
            output = module(batch_input(batch, False).x, body_part)
        for name, chunks in logits.items():
            chunks.append(getattr(output, name).float().cpu())
        labels.append(batch.label.long())
        body_parts.append(batch.body_part.long())
        rows.append(batch.row)
    no_ids = torch.empty(0, dtype=torch.int64)
    columns = {name: _joined(chunks, torch.empty(0, 0)) for name, chunks in logits.items()}
    columns["labels"] = _joined(labels, no_ids)
    columns["body_parts"] = _joined(body_parts, no_ids)
    all_rows, gathered = gather_columns_by_row(_joined(rows, no_ids), columns, info)
    return {"rows": all_rows.numpy(), **{name: values.numpy() for name, values in gathered.items()}}


def _joined(chunks: list[torch.Tensor], empty: torch.Tensor) -> torch.Tensor:
    """The batches' chunks concatenated; `empty` for a rank whose shard had no batch."""
    return torch.cat(chunks) if chunks else empty


def validation_metrics(arrays: dict[str, np.ndarray], loss_fn: torch.nn.Module) -> dict[str, float]:
    """Validation loss (same definition as training), fracture AUC and kappa at 0.5, body-part accuracy."""
    labels, parts = arrays["labels"], arrays["body_parts"]
    fracture = torch.from_numpy(arrays["fracture_logits"]).float()
    body = torch.from_numpy(arrays["body_part_logits"]).float()
    device = next((b.device for b in loss_fn.buffers()), torch.device("cpu"))
    output = ModelOutput(fracture_logits=fracture.to(device), body_part_logits=body.to(device))
    total = loss_fn(output, torch.from_numpy(labels).to(device), torch.from_numpy(parts).to(device)).total
    probs = torch.softmax(fracture, dim=1)[:, 1].numpy()
    auc = auc_or_nan(labels, probs)
    kappa = kappa_or_nan(labels, (probs >= 0.5).astype(int))
    known = parts >= 0
    body_acc = float((body[known].argmax(1).numpy() == parts[known]).mean()) if known.any() else math.nan
    return {
        "val_loss": float(total),
        "val_auc": auc,
        "val_kappa": kappa,
        "val_body_part_acc": body_acc,
        "val_images": int(len(labels)),
    }

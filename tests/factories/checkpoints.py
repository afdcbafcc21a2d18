"""Real checkpoints for tests, written through the package's own `save_model`.

Randomly initialised backbones output almost the same logits for every image (timm zero-initialises the
last BatchNorm of each residual block), which would make parity and ensemble tests pass trivially. So
BatchNorm statistics are measured on random smooth images and the last layer of each head is scaled so
logits spread over a few units across images: outputs really depend on the input.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from mura.checkpoint import save_model
from mura.config_loading import load_config
from mura.constants import MURA_BODY_PARTS
from mura.decision import Calibration, Decision
from mura.models.registry import model_from_config
from mura.preprocessing import Preprocessing


def blobs(n: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """Smooth random images (noise would average away in global pooling and give constant features)."""
    coarse = torch.randn(n, 1, 6, 6, generator=generator) * 1.5
    smooth = torch.nn.functional.interpolate(coarse, size=size, mode="bilinear", align_corners=False)
    return smooth + 0.3 * torch.randn(n, 1, size, size, generator=generator)


def smooth_images(n: int, seed: int = 1) -> list[np.ndarray]:
    """uint8 radiograph-like images of varied heights (40..48 x 48), like those the test models saw."""
    generator = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        unit = blobs(1, 48, generator)[0, 0].numpy() * 0.25 + 0.5
        out.append(np.clip(unit * 255, 0, 255).astype(np.uint8)[: 40 + i % 9])
    return out


def calibrate_batchnorm(model: torch.nn.Module, size: int, seed: int) -> None:
    """Random BatchNorm scales, then running statistics measured on random images (unit-variance layers)."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # cumulative average over the calibration batches
            module.weight.data = torch.rand(module.num_features, generator=generator) + 0.5
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(blobs(16, size, generator), torch.randint(0, 7, (16,), generator=generator))
    model.eval()


def spread_logits(model: torch.nn.Module, size: int, seed: int, target_std: float = 2.0) -> None:
    """Rescale each head's last Linear so its logits vary by `target_std` across random images, centred."""
    generator = torch.Generator().manual_seed(seed)
    image = blobs(16, size, generator)
    parts = torch.randint(0, 7, (16,), generator=generator)
    model.eval()
    with torch.no_grad():
        output = model(image, parts)
        heads = {"fracture_logits": model.heads.fracture_head, "body_part_logits": model.heads.body_part_head}
        for name, head in heads.items():
            if head is None:
                continue
            out = getattr(output, name)
            last = [m for m in head.modules() if isinstance(m, torch.nn.Linear)][-1]
            gain = target_std / float((out - out.mean(0)).std().clamp_min(1e-8))
            last.weight.mul_(gain)
            last.bias.copy_(-gain * (out.mean(0) - last.bias))


def mark_central_cells(model: torch.nn.Module) -> None:
    """Set the map head so its map is the film's central cells: every cell at least one cell from the
    border is sure (sigmoid ~1), the border ones are not (~0), whatever the film. Its reduced maps are a
    constant 1 and the 3x3 conv sums them over its window, which the zero padding cuts short at the
    border; the bias sits between the 9-cell and 6-cell sums. So one finding, a box one cell inside the
    film, for every film: a fixed place to look for in what a surface draws."""
    head = model.map_head
    convolution, norm = head.reduce[0], head.reduce[1]
    with torch.no_grad():
        convolution.weight.zero_()
        norm.running_mean.zero_(), norm.running_var.fill_(1.0), norm.weight.zero_(), norm.bias.fill_(1.0)
        head.predict.weight.fill_(1.0)
        head.predict.bias.fill_(-7.5 * norm.num_features)  # between 9 x and 6 x the channels


def write_checkpoint(
    path: Path,
    name: str = "custom_cnn",
    size: int = 32,
    *,
    seed: int = 0,
    resize_mode: str = "stretch",
    threshold: dict[str, float] | None = None,
    temperature: float = 1.0,
    body_part_head: bool = True,
    epoch: int = 1,
    val_metrics: dict[str, Any] | None = None,
    test_metrics: dict[str, Any] | None = None,
    legacy_body_parts: bool = False,
    central_map: bool = False,
) -> Path:
    """A `name` model at `size` px saved as training saves its best epoch; `test_metrics` as `mura
    evaluate --record` stores them. `legacy_body_parts` builds one as mura did before the body-part
    vocabulary grew: MURA's seven parts and no unknown-part embedding. `central_map` gives it a map head
    that boxes the film's central cells (`mark_central_cells`)."""
    cfg = load_config(
        overrides={
            "model.name": name,
            "model.size": size,
            "model.freeze": "full",
            "model.body_part_head": body_part_head,
            "model.map_head": central_map,
        }
    )
    torch.manual_seed(seed)
    legacy = {"num_body_parts": len(MURA_BODY_PARTS), "unknown_part": False} if legacy_body_parts else {}
    model = model_from_config(cfg.model, **legacy)
    calibrate_batchnorm(model, size, seed)
    spread_logits(model, size, seed)
    if central_map:
        mark_central_cells(model)
    preprocessing = Preprocessing(size, resize_mode, **model.default_preprocessing)
    calibration = Calibration("temperature", 1.0 / temperature, 0.0) if temperature != 1.0 else Calibration()
    decision = Decision(calibration, dict(threshold or {"default": 0.5}))
    return save_model(
        path,
        model,
        cfg,
        preprocessing,
        decision,
        epoch=epoch,
        val_metrics=val_metrics or {"auc": 0.5},
        test_metrics=test_metrics or {},
    )

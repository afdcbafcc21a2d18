"""How batches reach the model: pixels through the backbone, or cached features straight to the heads."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from mura.config import Config
from mura.data.dataset import CachedImageDataset
from mura.outputs import ModelOutput
from mura.preprocessing import Preprocessing
from mura.training.distributed import DistInfo
from mura.training.feature_cache import FeatureDataset, cache_key, extract_features, load_or_extract
from mura.training.steps import BatchInput, FeatureInput, ImageInput


class HeadsOnly(torch.nn.Module):
    """`forward(features, body_part)` = the model's heads on cached pooled features, so DDP can wrap the
    feature-cache path too."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, features: torch.Tensor, body_part: torch.Tensor) -> ModelOutput:
        return self.model.forward_head(features, body_part)


def prepare_inputs(
    cfg: Config,
    info: DistInfo,
    model: torch.nn.Module,
    pre: Preprocessing,
    train_set: CachedImageDataset,
    val_set: CachedImageDataset,
    augment_gen: torch.Generator,
    autocast: Callable[[], Any],
    channels_last: bool,
    use_features: bool,
    cache_settings: dict[str, Any],
) -> tuple[Any, Any, BatchInput]:
    """(train data, val data, batch -> input): the image datasets (with the training boxes for a map
    head), or their cached backbone features."""
    image_input = ImageInput(
        pre,
        cfg.data.augment,
        cfg.data.rotation_degrees,
        info.device,
        channels_last,
        augment_gen,
        boxes_for=train_set.boxes_for if cfg.model.map_head else None,
    )
    if not use_features:
        return train_set, val_set, image_input
    directory = Path(cfg.out) / "feature_cache"
    settings = cfg.to_dict()
    views = 1 if cfg.data.augment == "none" else max(1, cfg.train.feature_cache_views)
    view_gen = torch.Generator().manual_seed(cfg.train.seed * 1_000_003 + 104_729 + info.rank)

    def extract(dataset: CachedImageDataset, n_views: int, generator: torch.Generator | None, desc: str):
        return lambda: extract_features(
            model,
            dataset,
            image_input.pixels,
            n_views,
            generator,
            info,
            cfg.train.batch_size,
            cfg.data.workers,
            autocast,
            desc,
        )

    train_features = load_or_extract(
        directory,
        "train",
        cache_key(settings, cache_settings, train_set.rows),
        info,
        extract(train_set, views, view_gen, "features train"),
    )
    val_features = load_or_extract(
        directory,
        "val",
        cache_key(settings, cache_settings, val_set.rows),
        info,
        extract(val_set, 1, None, "features val"),
    )
    return (
        FeatureDataset(train_features, train_set),
        FeatureDataset(val_features, val_set),
        FeatureInput(info.device),
    )

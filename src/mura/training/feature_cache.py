"""Frozen-backbone fast path: backbone features computed once, epochs train only the heads.

With a frozen backbone (frozen BatchNorm statistics included) the backbone is a fixed function, so
running it every epoch recomputes the same numbers. We run it and its pooling K times over the
training split (K augmented views per image, the same augmentation the slow path applies) and once
over the clean validation split, keep the pooled vectors (`RUN_DIR/feature_cache/*.npy`, reused by
`--resume`), and each epoch picks one of the K views per image at random. An epoch then costs a few
small matrix products instead of a full CNN forward pass per image.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from mura.data.dataset import CachedImageDataset, make_loader
from mura.training.distributed import DistInfo, ShardSampler, barrier, gather_by_row

log = logging.getLogger(__name__)


class FeatureBatch:
    """A batch of cached features with the same fields a training step reads from an image batch."""

    def __init__(
        self, features: torch.Tensor, label: torch.Tensor, body_part: torch.Tensor, row: torch.Tensor
    ):
        self.image, self.label, self.body_part, self.row = features, label, body_part, row

    def __len__(self) -> int:
        return int(self.label.shape[0])


class FeatureDataset(Dataset):
    """Cached features [views, N, F] of one split; `set_views` chooses the view of each image."""

    def __init__(self, features: np.ndarray, images: CachedImageDataset) -> None:
        self.features = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
        self.labels = torch.tensor(images.labels)
        self.body_parts = torch.tensor(images.body_parts)
        self.rows = torch.tensor(images.rows)
        self.views = torch.zeros(len(images), dtype=torch.int64)

    @property
    def num_views(self) -> int:
        return int(self.features.shape[0])

    def set_views(self, generator: torch.Generator) -> None:
        self.views = torch.randint(self.num_views, (len(self),), generator=generator)

    def __len__(self) -> int:
        return int(self.features.shape[1])

    def __getitem__(self, i: int) -> FeatureBatch:
        return self.__getitems__([i])

    def __getitems__(self, indices: list[int]) -> FeatureBatch:
        idx = torch.as_tensor(indices, dtype=torch.int64)
        return FeatureBatch(
            self.features[self.views[idx], idx], self.labels[idx], self.body_parts[idx], self.rows[idx]
        )


def cache_key(cfg_dict: dict[str, Any], cache_settings: dict[str, Any], split_rows: np.ndarray) -> str:
    """What the features depend on: model/augmentation settings, the image cache and the rows used."""
    relevant = {
        "model": cfg_dict["model"],
        "augment": [cfg_dict["data"]["augment"], cfg_dict["data"]["rotation_degrees"]],
        "views": cfg_dict["train"]["feature_cache_views"],
        "seed": cfg_dict["train"]["seed"],
        "cache": {k: v for k, v in cache_settings.items() if k != "created"},
        "rows": hashlib.sha256(np.ascontiguousarray(split_rows).tobytes()).hexdigest(),
    }
    return hashlib.sha256(json.dumps(relevant, sort_keys=True, default=str).encode()).hexdigest()[:16]


@torch.no_grad()
def extract_features(
    model: torch.nn.Module,
    dataset: CachedImageDataset,
    to_input: Callable[[torch.Tensor, torch.Generator | None], torch.Tensor],
    views: int,
    generator: torch.Generator | None,
    info: DistInfo,
    batch_size: int,
    workers: int,
    autocast: Callable[[], Any],
    desc: str,
) -> np.ndarray:
    """Pooled features [views, N, F] in dataset order (the compact vectors `forward_head` reads, not the
    backbone's maps); each rank computes its shard, all ranks get all rows."""
    model.eval()
    sampler = ShardSampler(len(dataset), info.rank, info.world_size)
    loader = make_loader(
        dataset,
        batch_size,
        sampler,
        torch.Generator().manual_seed(0),
        workers=workers,
        pin_memory=info.device.type == "cuda",
        persistent_workers=False,
    )
    out: list[np.ndarray] = []
    for view in range(views):
        rows, chunks = [], []
        for batch in tqdm(
            loader, desc=f"{desc} view {view + 1}/{views}", leave=False, disable=not info.is_main
        ):
            x = to_input(batch.image.to(info.device, non_blocking=True), generator)
            with autocast():
                chunks.append(model.pool(model.forward_features(x)).float().cpu())
            rows.append(batch.row)
        local_rows = torch.cat(rows) if rows else torch.empty(0, dtype=torch.int64)
        local = torch.cat(chunks) if chunks else torch.empty(0, model.feature_dim)
        all_rows, values = gather_by_row(local_rows, local, info)
        position = {int(r): i for i, r in enumerate(all_rows.tolist())}
        order = [position[int(r)] for r in dataset.rows]
        out.append(values[order].to(torch.float32).numpy())
    return np.stack(out)


def load_or_extract(
    directory: Path, name: str, key: str, info: DistInfo, compute: Callable[[], np.ndarray]
) -> np.ndarray:
    """Reuse `directory/name.npy` when its key matches (e.g. on --resume), else compute and save it."""
    path, meta = directory / f"{name}.npy", directory / f"{name}.json"
    if path.is_file() and meta.is_file() and json.loads(meta.read_text()).get("key") == key:
        log.info("feature cache: reusing %s", path)
        return np.load(path)
    features = compute()
    if info.is_main:
        directory.mkdir(parents=True, exist_ok=True)
        tmp = directory / f".{name}.tmp.npy"
        np.save(tmp, features)
        os.replace(tmp, path)
        meta.write_text(json.dumps({"key": key, "shape": list(features.shape)}))
    barrier(info)
    return features

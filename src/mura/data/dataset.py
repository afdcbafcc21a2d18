"""Tensors from the image cache: uint8 pixels, labels, body part and cache row per image.

Workers do the least possible work (one fancy-indexed read of the memory-mapped `images.npy` per
batch through `__getitems__`); conversion to float, normalisation and augmentation happen on the
whole batch afterwards (`mura.data.transforms`), on the training device. A cache that carries boxes
(`mura prepare` on an index with `index.boxes.csv`) gives each row's boxes in input pixels through
`boxes_for`, looked up by the batch's `row`, so localisation targets follow any sampler or split.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from mura.constants import body_part_index
from mura.data.cache import ImageCache
from mura.errors import MuraError


@dataclass
class Batch:
    """One collated batch; `row` is the cache row of each image (aligns predictions with the index)."""

    image: torch.Tensor  # uint8 [B, 1, S, S]
    label: torch.Tensor  # long [B] (1 = abnormal)
    body_part: torch.Tensor  # long [B], -1 = unknown
    row: torch.Tensor  # long [B]

    def pin_memory(self) -> Batch:
        return Batch(*(t.pin_memory() for t in (self.image, self.label, self.body_part, self.row)))

    def __len__(self) -> int:
        return int(self.label.shape[0])


def split_rows(index: pd.DataFrame, split: str, limit: int = 0) -> pd.DataFrame:
    """The index rows of one split (in cache order), at most `limit` of them when limit > 0."""
    if "split" not in index.columns or "cache_row" not in index.columns:
        raise MuraError("cache index has no 'split'/'cache_row' column; rebuild it with `mura prepare`")
    rows = index[index["split"].astype(str) == split]
    if limit > 0:
        rows = rows.iloc[:limit]
    return rows


class CachedImageDataset(Dataset):
    """The images of one split of an image cache (`mura.data.cache.open_cache`)."""

    def __init__(self, cache: ImageCache, split: str, limit: int = 0) -> None:
        rows = split_rows(cache.index, split, limit)
        if len(rows) == 0:
            raise MuraError(f"cache has no images in split {split!r}")
        self.split = split
        self.rows = rows["cache_row"].to_numpy(dtype=np.int64)
        self.labels = rows["label"].to_numpy(dtype=np.int64)
        parts = rows["body_part"] if "body_part" in rows.columns else pd.Series([""] * len(rows))
        self.body_parts = np.array(
            [body_part_index(p if isinstance(p, str) else None) for p in parts], dtype=np.int64
        )
        self._images = cache.images
        self._images_file = getattr(cache.images, "filename", None)
        self.boxes = {int(row): cache.boxes[row] for row in self.rows if row in cache.boxes}

    def __getstate__(self) -> dict[str, Any]:
        # Spawned workers reopen the memory map instead of receiving a pickled copy of the pixels.
        state = self.__dict__.copy()
        if self._images_file:
            state["_images"] = None
        return state

    @property
    def images(self) -> np.ndarray:
        if self._images is None:
            self._images = np.load(self._images_file, mmap_mode="r")
        return self._images

    def __len__(self) -> int:
        return len(self.rows)

    def boxes_for(self, rows: torch.Tensor) -> list[np.ndarray]:
        """Boxes of each cache row of a batch (`Batch.row`): float [K, 4] in input pixels, K may be 0."""
        return [self.boxes.get(int(row), np.empty((0, 4))) for row in rows.tolist()]

    def __getitem__(self, i: int) -> Batch:
        return self.__getitems__([i])

    def __getitems__(self, indices: list[int]) -> Batch:
        idx = np.asarray(indices, dtype=np.int64)
        rows = self.rows[idx]
        order = np.argsort(rows, kind="stable")  # sorted reads are sequential on disk
        pixels = np.empty((len(rows),) + self.images.shape[1:], dtype=np.uint8)
        pixels[order] = self.images[rows[order]]
        return Batch(
            image=torch.from_numpy(pixels).unsqueeze(1),
            label=torch.from_numpy(self.labels[idx]),
            body_part=torch.from_numpy(self.body_parts[idx]),
            row=torch.from_numpy(rows),
        )


def collate_batches(parts: Batch | list[Batch]) -> Batch:
    """The dataset already returns whole batches; single items (a list of 1-image Batches) concatenate."""
    if not isinstance(parts, list):  # a whole batch from __getitems__ (images or cached features)
        return parts
    return Batch(
        image=torch.cat([p.image for p in parts]),
        label=torch.cat([p.label for p in parts]),
        body_part=torch.cat([p.body_part for p in parts]),
        row=torch.cat([p.row for p in parts]),
    )


def make_loader(
    dataset: CachedImageDataset,
    batch_size: int,
    sampler: Sampler,
    generator: torch.Generator,
    workers: int = 0,
    pin_memory: bool = False,
    persistent_workers: bool = True,
    drop_last: bool = False,
) -> DataLoader:
    """A DataLoader whose randomness comes only from `generator` (so a seed fixes the order)."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate_batches,
        pin_memory=pin_memory,
        persistent_workers=persistent_workers and workers > 0,
        prefetch_factor=4 if workers > 0 else None,
        drop_last=drop_last,
        generator=generator,
    )

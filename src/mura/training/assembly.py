"""Everything a training run is made of, assembled from its config before the first epoch.

Two steps, cheap first: `open_inputs` opens the cache and checks it against the index and the model's
input size (no decoding, nothing written, so a bad input is refused before an old run is removed);
`build_run` then builds the model, the datasets (or cached backbone features), loaders, loss,
optimizer, schedule and early stopping into one `Run`, the state the epoch loop carries.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, DistributedSampler

from mura import checkpoint as ckpt
from mura.config import Config
from mura.data.cache import ImageCache, open_cache
from mura.data.dataset import CachedImageDataset, make_loader
from mura.data.index import read_index
from mura.data.splits import fold_split
from mura.errors import MuraError
from mura.preprocessing import Preprocessing
from mura.training.distributed import DistInfo, ShardSampler, wrap_ddp
from mura.training.inputs import HeadsOnly, prepare_inputs
from mura.training.losses import MultiTaskLoss, class_weights_from_index
from mura.training.run_dir import BEST_CHECKPOINT, LAST_CHECKPOINT
from mura.training.schedule import EarlyStopping, LrSchedule
from mura.training.steps import autocast_for


@dataclass
class Run:
    """Everything one training run holds between epochs."""

    cfg: Config
    info: DistInfo
    run_dir: Path
    cache: ImageCache
    model: torch.nn.Module
    module: torch.nn.Module  # what the loop calls: the model, its heads, or either wrapped in DDP
    preprocessing: Preprocessing
    use_features: bool
    train_data: Any
    train_loader: DataLoader
    val_loader: DataLoader
    sampler: DistributedSampler
    batch_input: Any
    loss_fn: MultiTaskLoss
    optimizer: torch.optim.Optimizer
    schedule: LrSchedule
    early: EarlyStopping
    augment_gen: torch.Generator
    autocast: Any
    history: list[dict[str, Any]] = field(default_factory=list)
    start_epoch: int = 0

    @property
    def best_path(self) -> Path:
        return self.run_dir / BEST_CHECKPOINT

    @property
    def last_path(self) -> Path:
        return self.run_dir / LAST_CHECKPOINT


def check_index_matches_cache(index_path: str, cache: ImageCache) -> None:
    """The index the config names must be the one the cache was built from (same images, splits, labels)."""
    index = read_index(index_path)
    key = ["path", "split", "label"]
    given = set(map(tuple, index[key].astype(str).to_numpy()))
    cached = set(map(tuple, cache.index[key].astype(str).to_numpy()))
    if not cached <= given:
        missing = len(cached - given)
        raise MuraError(
            f"{index_path}: the cache {cache.directory} was built from another index ({missing} of its "
            "images are not in it with the same split and label); rebuild it with "
            f"`mura prepare {index_path}`"
        )


def open_inputs(cfg: Config) -> ImageCache:
    """The cache the run reads, checked against the index and the model's input size (cheap, no decoding);
    under cross-validation its splits are the fold's (held-out fold validates, the others train)."""
    cache = open_cache(cfg.data.cache)
    if cfg.data.index:
        check_index_matches_cache(cfg.data.index, cache)
    size, resize_mode = cache.settings.input_spec
    Preprocessing(size=cfg.model.size, resize_mode=resize_mode).check_cache(
        size=size, resize_mode=resize_mode, what=cfg.data.cache
    )
    if cfg.data.folds:
        pooled = [s.strip() for s in cfg.data.fold_splits.split(",") if s.strip()]
        names = (cfg.data.train_split, cfg.data.val_split)
        block = cfg.data.fold_block_size
        split = fold_split(cache.index, cfg.data.folds, cfg.data.fold, pooled, names, block)
        cache = dataclasses.replace(cache, index=cache.index.assign(split=split))
    return cache


def build_run(cfg: Config, *, info: DistInfo, cache: ImageCache) -> Run:
    """Build the model, datasets, loaders, loss, optimizer and schedule."""
    train_set = CachedImageDataset(cache, cfg.data.train_split, cfg.data.max_train_images)
    val_set = CachedImageDataset(cache, cfg.data.val_split, cfg.data.max_val_images)
    model = ckpt.build_model(cfg).to(info.device)
    preprocessing = Preprocessing(
        size=cfg.model.size,
        resize_mode=cache.settings.resize,
        mean=float(model.default_preprocessing["mean"]),
        std=float(model.default_preprocessing["std"]),
    )
    use_features = bool(cfg.train.feature_cache and model.backbone_is_frozen)
    if use_features and model.has_map_head:
        raise MuraError(
            f"model {cfg.model.name!r}: feature_cache=True trains the heads on pooled backbone features, "
            "which hold no map to train the fracture map head (map_head=True) on; set feature_cache=False "
            "or map_head=False"
        )
    channels_last = cfg.train.channels_last and not use_features
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    augment_gen = torch.Generator()
    autocast = autocast_for(info.device, cfg.train.amp, cfg.train.cpu_bf16)
    train_data, val_data, batch_input = prepare_inputs(
        cfg=cfg,
        info=info,
        model=model,
        pre=preprocessing,
        train_set=train_set,
        val_set=val_set,
        augment_gen=augment_gen,
        autocast=autocast,
        channels_last=channels_last,
        use_features=use_features,
        cache_settings=cache.settings.to_dict(),
    )
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise MuraError(
            f"model {cfg.model.name!r} with freeze={cfg.model.freeze!r} has no trainable parameters"
        )
    # One fused kernel per step instead of a loop over tensors: half the optimizer time of ResNet50 on
    # one CPU thread (46 -> 22 ms a step, benchmarks/bench_train_step.py); CPU and CUDA both have it.
    optimizer = torch.optim.Adam(
        params,
        lr=cfg.train.lr,
        weight_decay=cfg.train.weight_decay,
        fused=info.device.type in ("cpu", "cuda"),
    )
    train_rows = cache.index[cache.index["cache_row"].isin(train_set.rows)]
    loss_fn = MultiTaskLoss(
        fracture_loss=cfg.train.loss,
        focal_gamma=cfg.train.focal_gamma,
        label_smoothing=cfg.train.label_smoothing,
        body_part_weight=cfg.train.body_part_loss_weight,
        map_weight=cfg.train.map_loss_weight,
        class_weights=class_weights_from_index(train_rows, cfg.train.class_weights, split=None),
    ).to(info.device)
    sampler = DistributedSampler(
        train_data, num_replicas=info.world_size, rank=info.rank, shuffle=True, seed=cfg.train.seed
    )
    per_rank = len(sampler)
    drop_last = per_rank > cfg.train.batch_size  # never a 1-image BatchNorm batch, never an empty epoch
    workers = 0 if use_features else cfg.data.workers
    pin = info.device.type == "cuda"
    train_loader = make_loader(
        train_data,
        batch_size=cfg.train.batch_size,
        sampler=sampler,
        generator=torch.Generator().manual_seed(cfg.train.seed),
        workers=workers,
        pin_memory=pin,
        persistent_workers=cfg.data.persistent_workers,
        drop_last=drop_last,
    )
    val_loader = make_loader(
        val_data,
        batch_size=cfg.train.batch_size,
        sampler=ShardSampler(len(val_data), info.rank, info.world_size),
        generator=torch.Generator().manual_seed(0),
        workers=workers,
        pin_memory=pin,
        persistent_workers=cfg.data.persistent_workers,
    )
    steps = per_rank // cfg.train.batch_size if drop_last else -(-per_rank // cfg.train.batch_size)
    return Run(
        cfg=cfg,
        info=info,
        run_dir=Path(cfg.out),
        cache=cache,
        model=model,
        module=wrap_ddp(HeadsOnly(model) if use_features else model, info),
        preprocessing=preprocessing,
        use_features=use_features,
        train_data=train_data,
        train_loader=train_loader,
        val_loader=val_loader,
        sampler=sampler,
        batch_input=batch_input,
        loss_fn=loss_fn,
        optimizer=optimizer,
        schedule=LrSchedule(optimizer, cfg.train, max(1, steps)),
        early=EarlyStopping(
            cfg.train.monitor, cfg.train.early_stopping_patience, cfg.train.early_stopping_min_delta
        ),
        augment_gen=augment_gen,
        autocast=autocast,
    )

"""`train(cfg)`: the training run behind `mura train` (main / train_one_epoch / evaluate, after
torchvision's references/classification).

A run is five steps: `check_run_dir` (refuse to clobber, before anything is read or written),
`open_inputs` (the cache, checked against --index and the model's input size), `build_run` (model,
loaders, optimizer), `restore` (`--resume`), then per epoch `run_epoch` (train, validate, schedule,
early stopping) and `save_epoch`: `last.pt` with everything `--resume` needs and, when the monitored
value improved, `best.pt` with a decision (calibration + operating points) fitted on that epoch's
validation predictions. Both are written atomically after the epoch, so Ctrl-C or kill -9 loses at
most the epoch in progress.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler

from mura import checkpoint as ckpt
from mura.config import Config
from mura.data.cache import ImageCache, open_cache
from mura.data.dataset import CachedImageDataset, make_loader
from mura.data.index import read_index
from mura.data.splits import fold_split
from mura.decision import fit_decision, margins_from_logits
from mura.errors import MuraError
from mura.preprocessing import Preprocessing
from mura.training.distributed import (
    DistInfo,
    ShardSampler,
    cleanup_distributed,
    init_distributed,
    unwrap,
    wrap_ddp,
)
from mura.training.fastpath import configure_threads, tcmalloc_loaded
from mura.training.inputs import HeadsOnly, prepare_inputs
from mura.training.losses import MultiTaskLoss, class_weights_from_index
from mura.training.resume import rng_state, set_rng_state
from mura.training.run_log import RunLog
from mura.training.schedule import EarlyStopping, LrSchedule
from mura.training.steps import autocast_for, predict, train_one_epoch, validation_metrics

log = logging.getLogger(__name__)

# Files a run writes into its folder; `--overwrite` removes exactly these and nothing else.
RUN_FILES = ("best.pt", "last.pt", "config.yaml", "metrics.csv", "metrics.jsonl")
RUN_FOLDERS = ("tensorboard", "feature_cache")


@dataclass
class RunResult:
    run_dir: Path
    best_checkpoint: Path
    last_checkpoint: Path
    monitor: str
    best_epoch: int
    epochs_completed: int
    stopped_early: bool
    feature_cache: bool
    best_metrics: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    model: torch.nn.Module | None = None  # the model after the last epoch run (best weights are in best.pt)


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
        return self.run_dir / "best.pt"

    @property
    def last_path(self) -> Path:
        return self.run_dir / "last.pt"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def check_run_dir(cfg: Config, resume: bool, overwrite: bool) -> list[Path]:
    """Check the run folder before any heavy work (nothing is written); return what --overwrite removes."""
    run_dir = Path(cfg.out)
    if resume and overwrite:
        raise MuraError("--resume and --overwrite contradict each other: choose one")
    if resume:
        if not (run_dir / "last.pt").is_file():
            raise MuraError(f"{run_dir}: nothing to resume (no last.pt); every file there is left as it was")
        return []
    ours = [run_dir / name for name in RUN_FILES + RUN_FOLDERS if (run_dir / name).exists()]
    if ours and not overwrite:
        raise MuraError(
            f"{run_dir}: already holds a run ({', '.join(p.name for p in ours)}); pass --resume to continue "
            "it, --overwrite to start it again, or choose another --out"
        )
    return ours


def check_index_matches_cache(index_path: str, cache: ImageCache) -> None:
    """The index given with --index must be the one the cache was built from (same images, splits, labels)."""
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
    """The cache the run reads, checked against --index and the model's input size (cheap, no decoding)."""
    cache = open_cache(cfg.data.cache)
    if cfg.data.index:
        check_index_matches_cache(cfg.data.index, cache)
    resize_mode = str(cache.settings.get("resize", "stretch"))
    Preprocessing(size=cfg.model.size, resize_mode=resize_mode).check_cache(cache.settings, cfg.data.cache)
    if cfg.data.folds:  # cross-validation: the held-out fold is validated on, the other folds train
        pooled = [s.strip() for s in cfg.data.fold_splits.split(",") if s.strip()]
        names = (cfg.data.train_split, cfg.data.val_split)
        block = cfg.data.fold_block_size
        split = fold_split(cache.index, cfg.data.folds, cfg.data.fold, pooled, names, block)
        cache = dataclasses.replace(cache, index=cache.index.assign(split=split))
    return cache


def build_run(cfg: Config, info: DistInfo, cache: ImageCache) -> Run:
    """Build the model, datasets, loaders, loss, optimizer and schedule."""
    resize_mode = str(cache.settings.get("resize", "stretch"))
    train_set = CachedImageDataset(cache, cfg.data.train_split, cfg.data.max_train_images)
    val_set = CachedImageDataset(cache, cfg.data.val_split, cfg.data.max_val_images)
    model = ckpt.build_model(cfg).to(info.device)
    preprocessing = Preprocessing(
        size=cfg.model.size,
        resize_mode=resize_mode,
        mean=float(model.default_preprocessing["mean"]),
        std=float(model.default_preprocessing["std"]),
    )
    use_features = bool(cfg.train.feature_cache and model.backbone_is_frozen)
    channels_last = cfg.train.channels_last and not use_features
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    augment_gen = torch.Generator()
    autocast = autocast_for(info.device, cfg.train.amp)
    train_data, val_data, batch_input = prepare_inputs(
        cfg,
        info,
        model,
        preprocessing,
        train_set,
        val_set,
        augment_gen,
        autocast,
        channels_last,
        use_features,
        cache.settings,
    )
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise MuraError(
            f"model {cfg.model.name!r} with freeze={cfg.model.freeze!r} has no trainable parameters"
        )
    optimizer = torch.optim.Adam(params, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    train_rows = cache.index[cache.index["cache_row"].isin(train_set.rows)]
    loss_fn = MultiTaskLoss(
        fracture_loss=cfg.train.loss,
        focal_gamma=cfg.train.focal_gamma,
        label_smoothing=cfg.train.label_smoothing,
        body_part_weight=cfg.train.body_part_loss_weight,
        class_weights=class_weights_from_index(train_rows, cfg.train.class_weights, split=None),
    ).to(info.device)
    sampler = DistributedSampler(
        train_data, num_replicas=info.world_size, rank=info.rank, shuffle=True, seed=cfg.train.seed
    )
    per_rank = len(sampler)
    drop_last = per_rank > cfg.train.batch_size  # never a 1-image BatchNorm batch, never an empty epoch
    workers = 0 if use_features else cfg.data.workers
    pin = info.device.type == "cuda"
    loader_seed = torch.Generator().manual_seed(cfg.train.seed)
    train_loader = make_loader(
        train_data,
        cfg.train.batch_size,
        sampler,
        loader_seed,
        workers,
        pin,
        cfg.data.persistent_workers,
        drop_last,
    )
    val_sampler = ShardSampler(len(val_data), info.rank, info.world_size)
    val_loader = make_loader(
        val_data,
        cfg.train.batch_size,
        val_sampler,
        torch.Generator().manual_seed(0),
        workers,
        pin,
        cfg.data.persistent_workers,
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


def restore(run: Run) -> None:
    """Continue from `last.pt`: weights, optimizer, schedule, early stopping, history, RNG streams."""
    state = ckpt.load_checkpoint(run.last_path)
    if state.meta.config["model"] != run.cfg.to_dict()["model"]:
        raise MuraError(
            f"{run.last_path}: was trained with a different model config; cannot resume with this one"
        )
    if state.training_state is None:
        raise MuraError(f"{run.last_path}: holds no training state to resume from")
    training = state.training_state
    unwrap(run.model).load_state_dict(state.model_state)
    run.optimizer.load_state_dict(training["optimizer"])
    run.schedule.load_state_dict(training["scheduler"])
    run.early.load_state_dict(training["early_stopping"])
    run.history = list(training["history"])
    set_rng_state(training["rng"], {"augment": run.augment_gen})
    run.start_epoch = int(state.meta.epoch) + 1
    log.info("resuming %s after epoch %d", run.run_dir, run.start_epoch - 1)


def run_epoch(run: Run, epoch: int) -> tuple[dict[str, Any], dict[str, np.ndarray], bool]:
    """Train one epoch and validate: (history row, validation arrays, improved)."""
    cfg, info = run.cfg, run.info
    run.sampler.set_epoch(epoch)
    run.augment_gen.manual_seed(cfg.train.seed * 1_000_003 + epoch * 7_919 + info.rank)
    if run.use_features:
        run.train_data.set_views(run.augment_gen)
    started = time.perf_counter()
    row: dict[str, Any] = {"epoch": epoch, "lr": run.optimizer.param_groups[0]["lr"]}
    row.update(
        train_one_epoch(
            run.module,
            run.train_loader,
            run.batch_input,
            run.loss_fn,
            run.optimizer,
            run.schedule,
            info,
            cfg.train.grad_clip,
            run.autocast,
            f"epoch {epoch + 1}/{cfg.train.epochs}",
        )
    )
    arrays = predict(run.module, run.val_loader, run.batch_input, info, run.autocast)
    row.update(validation_metrics(arrays, run.loss_fn))
    value = float(row[cfg.train.monitor])
    improved = run.early.update(value, epoch)
    run.schedule.epoch_end(value)
    row.update(
        monitor=cfg.train.monitor,
        monitor_value=value,
        best=improved,
        feature_cache=run.use_features,
        epoch_seconds=time.perf_counter() - started,
    )
    run.history.append(row)
    return row, arrays, improved


def checkpoint_meta(run: Run, epoch: int, metrics: dict[str, Any], arrays: dict[str, np.ndarray] | None):
    """Metadata for best.pt / last.pt; a decision is fitted on the validation predictions when given."""
    decision = ckpt.CheckpointMeta(run.cfg.to_dict(), run.preprocessing).decision
    if arrays is not None:
        val_images = len(arrays["labels"])
        decision = fit_decision(
            margins_from_logits(arrays["fracture_logits"]),
            arrays["labels"],
            method=run.cfg.train.calibration,
            target_sensitivity=run.cfg.train.target_sensitivity,
            target_specificity=run.cfg.train.target_specificity,
            fitted_on=f"{run.cfg.data.val_split} split, epoch {epoch} ({val_images} images)",
        )
    provenance = ckpt.new_provenance(
        data={"index": run.cfg.data.index, "cache": run.cfg.data.cache, "cache_settings": run.cache.settings},
    )
    return ckpt.CheckpointMeta(
        config=run.cfg.to_dict(),
        preprocessing=run.preprocessing,
        decision=decision,
        epoch=epoch,
        val_metrics=metrics,
        provenance=provenance,
    )


def save_epoch(
    run: Run, epoch: int, row: dict[str, Any], arrays: dict[str, np.ndarray], improved: bool
) -> None:
    """best.pt when improved, then last.pt with the training state (rank 0 only)."""
    state = unwrap(run.model).state_dict()
    if improved:
        ckpt.save_checkpoint(run.best_path, state, checkpoint_meta(run, epoch, row, arrays))
    training_state = {
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.schedule.state_dict(),
        "rng": rng_state({"augment": run.augment_gen}),
        "early_stopping": run.early.state_dict(),
        "history": run.history,
    }
    ckpt.save_checkpoint(run.last_path, state, checkpoint_meta(run, epoch, row, None), training_state)


def train(
    cfg: Config, resume: bool = False, overwrite: bool = False, stop_after_epoch: int | None = None
) -> RunResult:
    """Train per `cfg` (under torchrun: every rank calls this). `stop_after_epoch` ends the call after
    that epoch as an interruption would (time-boxed sessions, resume tests); `--resume` continues it."""
    if not cfg.data.cache:
        raise MuraError("config: data.cache is empty; build one with `mura prepare` and pass --cache DIR")
    owns_group = not (dist.is_available() and dist.is_initialized())
    info = init_distributed(cfg.train.device)
    try:
        previous = check_run_dir(cfg, resume, overwrite)
        cache = open_inputs(cfg)
        if info.is_main:
            for path in previous:
                shutil.rmtree(path) if path.is_dir() else path.unlink()
        return _run(cfg, info, cache, resume, stop_after_epoch)
    finally:
        if owns_group:
            cleanup_distributed()


def _run(
    cfg: Config, info: DistInfo, cache: ImageCache, resume: bool, stop_after_epoch: int | None
) -> RunResult:
    configure_threads(cfg.train.threads)
    seed_everything(cfg.train.seed)
    if info.device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    run = build_run(cfg, info, cache)
    if resume:
        restore(run)
    if info.is_main:
        run.run_dir.mkdir(parents=True, exist_ok=True)
        cfg.save(run.run_dir / "config.yaml")
    run_log = RunLog(run.run_dir) if info.is_main else None
    log.info(
        "training %s on %s: %d train / %d val images, monitor=%s, feature_cache=%s, device=%s x%d, "
        "allocator=%s, threads=%d",
        cfg.model.name,
        cfg.data.cache,
        len(run.train_data),
        len(run.val_loader.dataset),
        cfg.train.monitor,
        run.use_features,
        info.device,
        info.world_size,
        "tcmalloc" if tcmalloc_loaded() else "default",
        torch.get_num_threads(),
    )
    stopped_early = run.early.should_stop
    epoch = run.start_epoch - 1
    for epoch in range(run.start_epoch, cfg.train.epochs if not stopped_early else run.start_epoch):
        row, arrays, improved = run_epoch(run, epoch)
        if info.is_main:
            save_epoch(run, epoch, row, arrays, improved)
            run_log.write(run.history)
        log.info(
            "epoch %d: train_loss %.4f val_loss %.4f val_auc %.4f val_kappa %.4f body_part_acc %.3f "
            "(%s%s) %.1f img/s",
            epoch,
            row["train_loss"],
            row["val_loss"],
            row["val_auc"],
            row["val_kappa"],
            row["val_body_part_acc"],
            cfg.train.monitor,
            " best" if improved else "",
            row["train_images_per_s"],
        )
        if run.early.should_stop:
            stopped_early = True
            log.info(
                "early stopping: %s did not improve for %d epochs", cfg.train.monitor, run.early.patience
            )
            break
        if stop_after_epoch is not None and epoch >= stop_after_epoch:
            break
    if run_log is not None:
        run_log.close()
    return RunResult(
        run_dir=run.run_dir,
        best_checkpoint=run.best_path,
        last_checkpoint=run.last_path,
        monitor=cfg.train.monitor,
        best_epoch=run.early.best_epoch,
        epochs_completed=epoch + 1,
        stopped_early=stopped_early,
        feature_cache=run.use_features,
        best_metrics=next((r for r in run.history if r["epoch"] == run.early.best_epoch), {}),
        history=run.history,
        model=unwrap(run.model),
    )

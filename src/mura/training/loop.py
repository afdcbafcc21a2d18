"""`train(cfg)`: the training run behind `mura train` (main / train_one_epoch / evaluate, after
torchvision's references/classification).

Per epoch: train, validate, step the LR schedule, update early stopping on `cfg.train.monitor`, then
write `last.pt` (everything `--resume` needs) and, when the monitored value improved, `best.pt` with
decision thresholds and a temperature fitted on that epoch's validation predictions. Both are written
atomically after the epoch ends, so Ctrl-C or kill -9 loses at most the epoch in progress.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler

from mura.config import Config
from mura.data.cache import open_cache
from mura.data.dataset import CachedImageDataset, make_loader
from mura.data.transforms import AUGMENT_MODES, Preprocessing
from mura.errors import MuraError
from mura.evaluation.calibration import fit_temperature
from mura.evaluation.thresholds import choose_thresholds
from mura.training import checkpoint as ckpt
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
from mura.training.run_log import RunLog
from mura.training.schedule import EarlyStopping, LrSchedule
from mura.training.steps import autocast_for, predict, train_one_epoch, validation_metrics

log = logging.getLogger(__name__)


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


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _check_config(cfg: Config) -> None:
    if cfg.data.augment not in AUGMENT_MODES:
        raise MuraError(f"config: data.augment={cfg.data.augment!r} (choose from {', '.join(AUGMENT_MODES)})")
    if not cfg.data.cache:
        raise MuraError("config: data.cache is empty; build one with `mura prepare` and pass --cache DIR")
    if cfg.train.epochs < 1 or cfg.train.batch_size < 1:
        raise MuraError("config: train.epochs and train.batch_size must be at least 1")


def _best_payload(
    model: torch.nn.Module,
    cfg: Config,
    pre: Preprocessing,
    epoch: int,
    metrics: dict[str, Any],
    arrays: dict[str, np.ndarray],
) -> dict[str, Any]:
    """best.pt: weights plus thresholds and temperature chosen on this epoch's validation predictions."""
    logits, labels = arrays["fracture_logits"], arrays["labels"]
    probs = torch.softmax(torch.from_numpy(logits), dim=1)[:, 1].numpy()
    thresholds = choose_thresholds(labels, probs, target_sensitivity=cfg.train.target_sensitivity)
    temperature = fit_temperature(logits, labels)
    return ckpt.base_payload(
        unwrap(model).state_dict(),
        cfg,
        pre.to_dict(),
        epoch,
        metrics,
        threshold=thresholds,
        temperature=temperature,
    )


def train(cfg: Config, resume: bool = False, stop_after_epoch: int | None = None) -> RunResult:
    """Train per `cfg` (under torchrun: every rank calls this). `stop_after_epoch` ends the call after
    that epoch as an interruption would (time-boxed sessions, resume tests); `--resume` continues it."""
    _check_config(cfg)
    owns_group = not (dist.is_available() and dist.is_initialized())
    info = init_distributed(cfg.train.device)
    try:
        return _train(cfg, info, resume, stop_after_epoch)
    finally:
        if owns_group:
            cleanup_distributed()


def _train(cfg: Config, info: DistInfo, resume: bool, stop_after_epoch: int | None) -> RunResult:
    configure_threads(cfg.train.threads)
    run_dir = Path(cfg.out)
    last_path, best_path = run_dir / "last.pt", run_dir / "best.pt"
    if last_path.exists() and not resume:
        raise MuraError(
            f"{run_dir}: already holds a run (last.pt); pass --resume to continue it or choose another --out"
        )
    if info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        cfg.save(run_dir / "config.yaml")
    seed_everything(cfg.train.seed)
    if info.device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    cache = open_cache(cfg.data.cache)
    train_set = CachedImageDataset(cache, cfg.data.train_split, cfg.data.max_train_images)
    val_set = CachedImageDataset(cache, cfg.data.val_split, cfg.data.max_val_images)
    model = ckpt.build_model(cfg).to(info.device)
    pre = Preprocessing(
        size=cfg.model.size,
        resize_mode=str(cache.settings.get("resize", "stretch")),
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
        pre,
        train_set,
        val_set,
        augment_gen,
        autocast,
        channels_last,
        use_features,
        cache.settings,
    )

    module = wrap_ddp(HeadsOnly(model) if use_features else model, info)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise MuraError(
            f"model {cfg.model.name!r} with freeze={cfg.model.freeze!r} has no trainable parameters"
        )
    optimizer = torch.optim.Adam(params, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    train_rows = cache.index[cache.index["cache_row"].isin(train_set.rows)]
    weights = class_weights_from_index(train_rows, cfg.train.class_weights, split=None)
    loss_fn = MultiTaskLoss(
        fracture_loss=cfg.train.loss,
        focal_gamma=cfg.train.focal_gamma,
        body_part_weight=cfg.train.body_part_loss_weight,
        class_weights=weights,
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
        cfg.train.batch_size,
        sampler,
        torch.Generator().manual_seed(cfg.train.seed),
        workers,
        pin,
        cfg.data.persistent_workers,
        drop_last,
    )
    val_loader = make_loader(
        val_data,
        cfg.train.batch_size,
        ShardSampler(len(val_data), info.rank, info.world_size),
        torch.Generator().manual_seed(0),
        workers,
        pin,
        cfg.data.persistent_workers,
    )
    steps = per_rank // cfg.train.batch_size if drop_last else -(-per_rank // cfg.train.batch_size)
    schedule = LrSchedule(optimizer, cfg.train, max(1, steps))
    early = EarlyStopping(
        cfg.train.monitor, cfg.train.early_stopping_patience, cfg.train.early_stopping_min_delta
    )
    generators = {"augment": augment_gen}
    history: list[dict[str, Any]] = []
    start_epoch = 0
    if resume and last_path.is_file():
        state = ckpt.load_checkpoint(last_path)
        if state["config"]["model"] != cfg.to_dict()["model"]:
            raise MuraError(
                f"{last_path}: was trained with a different model config; cannot resume with this one"
            )
        unwrap(model).load_state_dict(state["model_state"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["scheduler"])
        early.load_state_dict(state["early_stopping"])
        history = list(state["history"])
        ckpt.set_rng_state(state["rng"], generators)
        start_epoch = int(state["epoch"]) + 1
        log.info("resuming %s after epoch %d", run_dir, start_epoch - 1)
    elif resume:
        log.warning("%s: nothing to resume (no last.pt); starting a new run", run_dir)

    run_log = RunLog(run_dir) if info.is_main else None
    log.info(
        "training %s on %s: %d train / %d val images, monitor=%s, feature_cache=%s, device=%s x%d, "
        "allocator=%s, threads=%d",
        cfg.model.name,
        cfg.data.cache,
        len(train_set),
        len(val_set),
        cfg.train.monitor,
        use_features,
        info.device,
        info.world_size,
        "tcmalloc" if tcmalloc_loaded() else "default",
        torch.get_num_threads(),
    )
    stopped_early = early.should_stop
    epoch = start_epoch - 1
    for epoch in range(start_epoch, cfg.train.epochs if not stopped_early else start_epoch):
        sampler.set_epoch(epoch)
        augment_gen.manual_seed(cfg.train.seed * 1_000_003 + epoch * 7_919 + info.rank)
        if use_features:
            train_data.set_views(augment_gen)
        lr = optimizer.param_groups[0]["lr"]
        started = time.perf_counter()
        row: dict[str, Any] = {"epoch": epoch, "lr": lr}
        row.update(
            train_one_epoch(
                module,
                train_loader,
                batch_input,
                loss_fn,
                optimizer,
                schedule,
                info,
                cfg.train.grad_clip,
                autocast,
                f"epoch {epoch + 1}/{cfg.train.epochs}",
            )
        )
        arrays = predict(module, val_loader, batch_input, info, autocast)
        row.update(validation_metrics(arrays, loss_fn))
        value = float(row[cfg.train.monitor])
        improved = early.update(value, epoch)
        schedule.epoch_end(value)
        row.update(
            monitor=cfg.train.monitor,
            monitor_value=value,
            best=improved,
            feature_cache=use_features,
            epoch_seconds=time.perf_counter() - started,
        )
        history.append(row)
        if info.is_main:
            if improved:
                ckpt.save_checkpoint(best_path, _best_payload(model, cfg, pre, epoch, row, arrays))
            last = ckpt.base_payload(unwrap(model).state_dict(), cfg, pre.to_dict(), epoch, row)
            last.update(
                optimizer=optimizer.state_dict(),
                scheduler=schedule.state_dict(),
                scaler={},
                rng=ckpt.rng_state(generators),
                early_stopping=early.state_dict(),
                history=history,
            )
            ckpt.save_checkpoint(last_path, last)
            run_log.write(history)
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
        if early.should_stop:
            stopped_early = True
            log.info("early stopping: %s did not improve for %d epochs", cfg.train.monitor, early.patience)
            break
        if stop_after_epoch is not None and epoch >= stop_after_epoch:
            break
    if run_log is not None:
        run_log.close()
    best_row = next((r for r in history if r["epoch"] == early.best_epoch), {})
    return RunResult(
        run_dir,
        best_path,
        last_path,
        cfg.train.monitor,
        early.best_epoch,
        epoch + 1,
        stopped_early,
        use_features,
        best_row,
        history,
        unwrap(model),
    )

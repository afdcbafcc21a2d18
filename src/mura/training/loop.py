"""`train(cfg)`: the training run behind `mura train` (main / train_one_epoch / evaluate, after
torchvision's references/classification).

A run is five steps: `check_run_dir` (refuse to clobber, before anything is read or written;
`run_dir`), `open_inputs` (the cache, checked against the index and the model's input size) and
`build_run` (model, loaders, optimizer; both `assembly`), `restore` when resuming (`resume`), then per
epoch `run_epoch` (train, validate, schedule, early stopping) and `save_epoch`: `last.pt` with
everything resuming needs and, when the monitored value improved, `best.pt` with a decision
(calibration + operating points) fitted on that epoch's validation predictions. Both are written
atomically after the epoch, so Ctrl-C or kill -9 loses at most the epoch in progress.
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

from mura import checkpoint as ckpt
from mura.checkpoint_meta import CheckpointMeta, new_provenance, positive_class_of
from mura.config import Config
from mura.constants import BODY_PARTS
from mura.data.cache import ImageCache
from mura.decision import fit_decision, margins_from_logits
from mura.errors import MuraError
from mura.training.assembly import Run, build_run, open_inputs
from mura.training.distributed import DistInfo, cleanup_distributed, init_distributed, unwrap
from mura.training.fastpath import configure_threads, tcmalloc_loaded
from mura.training.part_floor import floor_from_probabilities
from mura.training.resume import restore, training_state
from mura.training.run_dir import check_run_dir, remove_run_files
from mura.training.run_log import RunLog
from mura.training.scope import trained_parts
from mura.training.scope_fit import fit_checkpoint_detector
from mura.training.steps import predict, train_one_epoch, validation_metrics

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    """What `train` hands back: where the checkpoints are, the best epoch's figures and the history."""

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
            part_generator=_part_generator(run, epoch),
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


def _part_generator(run: Run, epoch: int) -> torch.Generator | None:
    """Draws which films hide their part this epoch; None for models that cannot be fed "unknown"."""
    heads = unwrap(run.model).heads
    if not (heads.has_unknown_part and heads.has_body_part_head):
        return None
    return torch.Generator().manual_seed(run.cfg.train.seed * 1_000_033 + epoch * 7_927 + run.info.rank)


def body_part_floor(run: Run, arrays: dict[str, np.ndarray]) -> float | None:
    """The body-part head's confidence floor fitted on validation predictions (`part_floor`); None for
    a model without an unknown-part embedding."""
    if not unwrap(run.model).heads.has_unknown_part:
        return None
    probs = torch.softmax(torch.from_numpy(arrays["body_part_logits"]).double(), dim=1).numpy()
    return floor_from_probabilities(probs, arrays["body_parts"])


def checkpoint_meta(
    run: Run,
    epoch: int,
    metrics: dict[str, Any],
    arrays: dict[str, np.ndarray] | None,
    floor: float | None = None,
) -> CheckpointMeta:
    """Metadata for best.pt / last.pt; a decision is fitted on the validation predictions when given,
    `floor` is the body-part confidence floor fitted on the same epoch's."""
    decision = CheckpointMeta(run.cfg.to_dict(), run.preprocessing).decision
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
    scope_parts, scope_source = trained_parts(
        run.cache.index, (run.cfg.data.train_split, run.cfg.data.val_split)
    )
    provenance = new_provenance(
        data={
            "index": run.cfg.data.index,
            "cache": run.cfg.data.cache,
            "cache_settings": run.cache.settings.to_dict(),
        },
        scope=scope_source,
    )
    return CheckpointMeta(
        config=run.cfg.to_dict(),
        preprocessing=run.preprocessing,
        decision=decision,
        body_parts=BODY_PARTS[: unwrap(run.model).heads.num_body_parts],
        body_part_floor=floor,
        scope_parts=scope_parts,
        epoch=epoch,
        positive_class=positive_class_of(run.cache.index["source"]),
        val_metrics=metrics,
        provenance=provenance,
    )


def save_epoch(
    run: Run, epoch: int, row: dict[str, Any], arrays: dict[str, np.ndarray], improved: bool
) -> None:
    """best.pt when improved, then last.pt with the training state (rank 0 only)."""
    state = unwrap(run.model).state_dict()
    floor = body_part_floor(run, arrays)
    if improved:
        ckpt.save_checkpoint(run.best_path, state, checkpoint_meta(run, epoch, row, arrays, floor))
    last = checkpoint_meta(run, epoch, row, None, floor)
    ckpt.save_checkpoint(run.last_path, state, last, training_state(run))


def train(
    cfg: Config,
    *,
    resume: bool = False,
    overwrite: bool = False,
    stop_after_epoch: int | None = None,
    scope_detector: bool = True,
) -> RunResult:
    """Train per `cfg` into the run folder `cfg.out` (under torchrun: every rank calls this).

    A folder that holds a run is refused unless `resume` (continue from its `last.pt`) or `overwrite`
    (remove that run's files, once the inputs were checked). `stop_after_epoch` ends the call after
    that epoch as an interruption would (time-boxed sessions, resume tests); `resume=True` continues it.
    `scope_detector`: fit the feature-space scope detector into `best.pt` at the end
    (`mura.training.scope_fit`); `mura cv` fits its own on each fold's last epoch instead.
    """
    if not cfg.data.cache:
        raise MuraError("config: data.cache is empty; build a cache with `mura prepare` and set data.cache")
    owns_group = not (dist.is_available() and dist.is_initialized())
    info = init_distributed(cfg.train.device)
    try:
        previous = check_run_dir(Path(cfg.out), resume=resume, overwrite=overwrite)
        cache = open_inputs(cfg)
        if info.is_main:
            remove_run_files(previous)
        result = _run(cfg, info=info, cache=cache, resume=resume, stop_after_epoch=stop_after_epoch)
        if scope_detector and info.is_main and result.best_checkpoint.is_file():
            fit_checkpoint_detector(
                result.best_checkpoint,
                cache,
                cfg.data.train_split,
                cfg.data.val_split,
                device=cfg.train.device,
                seed=cfg.train.seed,
            )
        return result
    finally:
        if owns_group:
            cleanup_distributed()


def _run(
    cfg: Config, *, info: DistInfo, cache: ImageCache, resume: bool, stop_after_epoch: int | None
) -> RunResult:
    configure_threads(cfg.train.threads)
    seed_everything(cfg.train.seed)
    if info.device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    run = build_run(cfg, info=info, cache=cache)
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

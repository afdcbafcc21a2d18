"""Learning-rate schedules and early stopping, both with state that survives `--resume`."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch

from mura.config import TrainConfig
from mura.errors import MuraError

MONITORS = {"val_loss": "min", "val_auc": "max", "val_kappa": "max"}


class WarmupCosine:
    """Linear warm-up for `warmup_steps`, then cosine decay to 0 at `total_steps` (stepped per batch).

    A plain object with `state_dict` (instead of LambdaLR with a closure) so its state is plain numbers.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int) -> None:
        self.optimizer = optimizer
        self.warmup_steps = max(0, warmup_steps)
        self.total_steps = max(1, total_steps)
        self.base_lrs = [group["lr"] for group in optimizer.param_groups]
        self.step_count = 0
        self._apply()

    def factor(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / (self.warmup_steps + 1)
        progress = (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    def _apply(self) -> None:
        for group, base in zip(self.optimizer.param_groups, self.base_lrs, strict=False):
            group["lr"] = base * self.factor(self.step_count)

    def step(self) -> None:
        self.step_count += 1
        self._apply()

    def state_dict(self) -> dict[str, Any]:
        return {
            "warmup_steps": self.warmup_steps,
            "total_steps": self.total_steps,
            "base_lrs": list(self.base_lrs),
            "step_count": self.step_count,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        # Warm-up and length come from the current config (a resumed run may be given more epochs).
        self.base_lrs, self.step_count = [float(x) for x in state["base_lrs"]], int(state["step_count"])
        self._apply()


class LrSchedule:
    """One interface for the three choices: `batch_end()` after each step, `epoch_end(metric)` after val."""

    def __init__(self, optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int) -> None:
        self.kind = cfg.scheduler
        self.inner: Any = None
        if self.kind == "cosine":
            self.inner = WarmupCosine(
                optimizer, cfg.warmup_epochs * steps_per_epoch, cfg.epochs * steps_per_epoch
            )
        elif self.kind == "plateau":
            self.inner = torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer,
                mode=MONITORS[cfg.monitor],
                factor=cfg.plateau_factor,
                patience=cfg.plateau_patience,
            )

    def batch_end(self) -> None:
        if self.kind == "cosine":
            self.inner.step()

    def epoch_end(self, metric: float) -> None:
        if self.kind == "plateau" and math.isfinite(metric):
            self.inner.step(metric)

    def state_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "state": self.inner.state_dict() if self.inner is not None else {}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("kind") != self.kind:
            raise MuraError(
                f"cannot resume: checkpoint used scheduler {state.get('kind')!r}, config {self.kind!r}"
            )
        if self.inner is not None:
            self.inner.load_state_dict(state["state"])


@dataclass
class EarlyStopping:
    """Stop after `patience` epochs without `monitor` improving by more than `min_delta`."""

    monitor: str = "val_loss"
    patience: int = 5
    min_delta: float = 0.0
    best: float | None = None
    best_epoch: int = -1
    bad_epochs: int = 0

    @property
    def mode(self) -> str:
        return MONITORS[self.monitor]

    def update(self, value: float, epoch: int) -> bool:
        """Record this epoch's value; True when it is the best so far (NaN never is)."""
        if not math.isfinite(value):
            self.bad_epochs += 1
            return False
        better = self.best is None or (
            value < self.best - self.min_delta if self.mode == "min" else value > self.best + self.min_delta
        )
        if better:
            self.best, self.best_epoch, self.bad_epochs = float(value), epoch, 0
        else:
            self.bad_epochs += 1
        return better

    @property
    def should_stop(self) -> bool:
        return self.patience > 0 and self.bad_epochs >= self.patience

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            setattr(self, key, value)

"""Per-epoch metrics: `metrics.csv` and `metrics.jsonl` in the run directory, plus TensorBoard scalars.

The CSV and JSONL are rewritten from the full history each epoch (`mura.atomic`), so a resumed run never
holds duplicate or half-written rows for epochs it repeats, and a crash leaves the previous epoch's files.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
from pathlib import Path
from typing import Any

from mura.atomic import write_text

log = logging.getLogger(__name__)

COLUMNS = (
    "epoch",
    "lr",
    "train_loss",
    "train_fracture_loss",
    "train_body_part_loss",
    "train_map_loss",
    "val_loss",
    "val_auc",
    "val_kappa",
    "val_body_part_acc",
    "monitor",
    "monitor_value",
    "best",
    "epoch_seconds",
    "train_images_per_s",
    "data_wait_fraction",
    "feature_cache",
)


def _cell(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return ""
    return value


class RunLog:
    """Writes the history; only constructed on rank 0 (other ranks write nothing)."""

    def __init__(self, run_dir: Path, tensorboard: bool = True) -> None:
        self.run_dir = run_dir
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))
            except ImportError:  # tensorboard is a dependency, but a missing one must not stop training
                log.warning("tensorboard is not installed; no TensorBoard logs")

    def write(self, history: list[dict[str, Any]]) -> None:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in history:
            writer.writerow({k: _cell(row.get(k, "")) for k in COLUMNS})
        write_text(self.run_dir / "metrics.csv", buffer.getvalue())
        lines = [
            json.dumps(
                {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()}
            )
            for row in history
        ]
        write_text(self.run_dir / "metrics.jsonl", "\n".join(lines) + "\n")
        if self.writer is not None and history:
            row = history[-1]
            for key, value in row.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool) and key != "epoch":
                    self.writer.add_scalar(key, value, row["epoch"])
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()

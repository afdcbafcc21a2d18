"""PNG figures of an evaluation. Built on `matplotlib.figure.Figure` (no pyplot state, no display).

Every function writes one PNG and returns its path, or None when there is nothing to draw (e.g. a
ROC curve with one class), so the report can say so instead of showing an empty axis.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn.metrics import precision_recall_curve, roc_curve

from mura.constants import BODY_PARTS

TITLE_CHARS_PER_INCH = 8  # characters of a 12 pt title that fit in an inch, with a margin
TRAINING_COLUMNS = ("train_loss", "val_loss", "val_auc", "val_kappa", "val_body_part_acc", "lr")


def _save(fig: Figure, path: Path) -> Path:
    """Titles wrapped to the figure's width and the saved area grown to what is drawn (legends below
    the axes included), so no title or label is cut at the edge of a narrow figure."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for ax in fig.axes:
        if ax.get_title():
            ax.set_title(
                textwrap.fill(ax.get_title(), max(20, int(fig.get_figwidth() * TITLE_CHARS_PER_INCH)))
            )
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path


def _two_classes(labels: np.ndarray) -> bool:
    labels = np.asarray(labels)
    return len(labels) > 0 and 0 < labels.sum() < len(labels)


def plot_distribution(index: pd.DataFrame, path: Path, title: str) -> Path | None:
    """The spec's Figure 1: normal and abnormal images per body part."""
    if len(index) == 0:
        return None
    parts = index["body_part"].fillna("").astype(str).replace("", "(unknown)")
    order = [p for p in BODY_PARTS if p in set(parts)] + sorted(set(parts) - set(BODY_PARTS))
    counts = pd.crosstab(parts, index["label"].astype(int)).reindex(index=order, columns=[0, 1], fill_value=0)
    fig = Figure(figsize=(8, 4))
    ax = fig.add_subplot()
    x = np.arange(len(order))
    ax.bar(x - 0.2, counts[0], 0.4, label="normal (0)", color="#4c72b0")
    ax.bar(x + 0.2, counts[1], 0.4, label="abnormal (1)", color="#dd8452")
    ax.set_xticks(x, [o.title() for o in order], rotation=30)
    ax.set_ylabel("images")
    ax.set_title(title)
    ax.legend()
    return _save(fig, path)


def plot_curves(curves: Mapping[str, tuple[np.ndarray, np.ndarray]], path: Path, kind: str) -> Path | None:
    """ROC (`kind="roc"`) or precision-recall (`kind="pr"`) curves, one line per named group."""
    fig = Figure(figsize=(5.5, 5))
    ax = fig.add_subplot()
    drawn = 0
    for name, (labels, probs) in curves.items():
        if not _two_classes(labels):
            continue
        if kind == "roc":
            x, y, _ = roc_curve(labels, probs)
        else:
            y, x, _ = precision_recall_curve(labels, probs)
        ax.plot(x, y, lw=2.2 if name == "overall" else 1.0, label=name.title())
        drawn += 1
    if not drawn:
        return None
    if kind == "roc":
        ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=0.8)
        ax.set(
            xlabel="false positive rate (1 - specificity)",
            ylabel="true positive rate (sensitivity)",
            title="ROC curves",
        )
    else:
        ax.set(xlabel="recall (sensitivity)", ylabel="precision", title="Precision-recall curves")
    ax.set(xlim=(0, 1), ylim=(0, 1.02))
    ax.legend(fontsize=7, loc="lower right" if kind == "roc" else "lower left")
    return _save(fig, path)


def plot_confusion(
    matrix: Sequence[Sequence[int]] | None,
    names: Sequence[str],
    path: Path,
    title: str,
    columns: Sequence[str] | None = None,
) -> Path | None:
    """A confusion matrix with counts in every cell (rows: truth `names`, columns: prediction, the same
    names unless `columns` adds answers no truth has, such as "unknown (unsure)")."""
    if matrix is None:
        return None
    cm = np.asarray(matrix)
    columns = list(names if columns is None else columns)
    size = 3.5 + 0.5 * len(columns)
    fig = Figure(figsize=(size, 3.5 + 0.45 * len(names)))
    ax = fig.add_subplot()
    ax.imshow(cm, cmap="Blues")
    top = cm.max() if cm.size else 0
    for (i, j), value in np.ndenumerate(cm):
        ax.text(j, i, str(value), ha="center", va="center", color="white" if value > top / 2 else "black")
    ax.set_xticks(np.arange(len(columns)), [n.title() for n in columns], rotation=30)
    ax.set_yticks(np.arange(len(names)), [n.title() for n in names])
    ax.set(xlabel="predicted", ylabel="true", title=title)
    return _save(fig, path)


def plot_reliability(calibration: Mapping[str, Any], path: Path) -> Path | None:
    """Reliability diagram before and after the stored calibration."""
    if not calibration.get("n"):
        return None
    fig = Figure(figsize=(5.5, 5))
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=0.8, label="perfect calibration")
    for key, label in (
        ("reliability_uncalibrated", "before calibration"),
        ("reliability", f"deployed ({calibration['method'] or 'calibrated'})"),
    ):
        data = calibration[key]
        pts = [
            (p, r)
            for p, r in zip(data["mean_predicted"], data["observed_rate"], strict=True)
            if p is not None
        ]
        if pts:
            xs, ys = zip(*pts, strict=True)
            ax.plot(xs, ys, marker="o", label=label)
    ax.set(
        xlim=(0, 1),
        ylim=(0, 1),
        xlabel="mean predicted probability of abnormal",
        ylabel="observed fraction abnormal",
        title="Reliability diagram",
    )
    ax.legend()
    return _save(fig, path)


def plot_group_bars(per_group: Mapping[str, Mapping[str, Any]], path: Path, title: str) -> Path | None:
    """Accuracy, AUC, sensitivity and specificity per group; undefined figures are left as gaps."""
    names = [n for n, m in per_group.items() if m.get("n")]
    if not names:
        return None
    keys = ("accuracy", "roc_auc", "sensitivity", "specificity")
    fig = Figure(figsize=(max(6, 1.1 * len(names)), 4))
    ax = fig.add_subplot()
    x = np.arange(len(names))
    width = 0.8 / len(keys)
    for k, key in enumerate(keys):
        values = [per_group[n].get(key) for n in names]
        ax.bar(x + (k - 1.5) * width, [np.nan if v is None else v for v in values], width, label=key)
    ax.set_xticks(x, [n.title() for n in names], rotation=30)
    ax.set(ylim=(0, 1.05), title=title)
    ax.legend(fontsize=7, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.25))
    return _save(fig, path)


def read_training_log(run_dir: Path) -> pd.DataFrame | None:
    """A run's per-epoch log (`metrics.csv` or `metrics.jsonl`), or None when there is none."""
    csv_path, jsonl_path = run_dir / "metrics.csv", run_dir / "metrics.jsonl"
    try:
        if csv_path.is_file():
            log = pd.read_csv(csv_path)
        elif jsonl_path.is_file():
            rows = [json.loads(line) for line in jsonl_path.read_text().splitlines() if line.strip()]
            log = pd.DataFrame(rows)
        else:
            return None
    except (ValueError, pd.errors.ParserError):
        return None
    return log if len(log) else None


def plot_training_curves(run_dir: Path, path: Path) -> Path | None:
    """Loss, validation AUC/kappa/body-part accuracy and learning rate per epoch; missing columns skipped."""
    log = read_training_log(run_dir)
    if log is None:
        return None
    x = log["epoch"] if "epoch" in log else pd.Series(np.arange(1, len(log) + 1))
    panels = [
        ("loss", [c for c in ("train_loss", "val_loss") if c in log]),
        ("validation", [c for c in ("val_auc", "val_kappa", "val_body_part_acc") if c in log]),
        ("learning rate", [c for c in ("lr",) if c in log]),
    ]
    panels = [(title, cols) for title, cols in panels if cols]
    if not panels:
        return None
    fig = Figure(figsize=(4.2 * len(panels), 3.6))
    for i, (title, cols) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        for col in cols:
            ax.plot(x, pd.to_numeric(log[col], errors="coerce"), marker=".", label=col)
        ax.set(xlabel="epoch", title=title)
        if title == "learning rate":
            ax.set_yscale("log")
        ax.legend(fontsize=7)
    return _save(fig, path)


def plot_film(
    pixels: np.ndarray,
    truth: np.ndarray,
    boxes: np.ndarray,
    solid: np.ndarray,
    path: Path,
    title: str,
) -> Path:
    """A film (uint8 grey, as the model saw it) with its true boxes [K, 4] in green and its predicted boxes
    [M, 4] dotted, or solid where `solid` [M] (a finding at the definite point: the page's convention)."""
    from matplotlib.patches import Rectangle

    fig = Figure(figsize=(4, 4 * pixels.shape[0] / pixels.shape[1]))
    ax = fig.add_subplot()
    height, width = pixels.shape
    # pixel i covers [i, i + 1): the frame boxes are given in, not imshow's centred default
    ax.imshow(pixels, cmap="gray", vmin=0, vmax=255, interpolation="nearest", extent=(0, width, height, 0))
    for x0, y0, x1, y1 in np.asarray(truth, float).reshape(-1, 4):
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor="#2ca02c", lw=4))
    for (x0, y0, x1, y1), strict in zip(np.asarray(boxes, float).reshape(-1, 4), solid, strict=True):
        style = "-" if strict else ":"  # drawn over the true boxes, thinner: both stay visible
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor="#ff7f0e", lw=1.5, ls=style))
    ax.set_axis_off()
    ax.set_title(title, fontsize=8)
    return _save(fig, path)

"""Training speed on CPU: the real loop vs the bare model step, data wait, and the feature cache.

    .venv/bin/python benchmarks/bench_train.py [--steps 4] [--models custom_cnn,resnet50,...] [--out FILE]

For each model (224 px, batch 32, its configs/<model>.yaml freeze policy, channels_last) it measures
side by side in one process: (a) the bare step (a fixed tensor batch: forward, loss, backward, Adam),
(b) `train_one_epoch` of the real loop over a CachedImageDataset with DataLoader workers and batch
augmentation, and the fraction of (b)'s wall time spent waiting for batches. Then the frozen
EfficientNet-B0 epoch time through the backbone vs on cached features. The script re-executes itself
once with tcmalloc preloaded (what `mura train` does), unless MURA_NO_TCMALLOC=1.
Figures go to docs/benchmarks/training.md. Timings are noisy on a shared machine: read the ratios.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import torch

from mura.checkpoint import build_model
from mura.config_loading import load_config
from mura.data.dataset import CachedImageDataset, make_loader
from mura.preprocessing import Preprocessing
from mura.training.distributed import DistInfo, ShardSampler
from mura.training.fastpath import MARKER_ENV, OPT_OUT_ENV, find_tcmalloc, tcmalloc_loaded
from mura.training.feature_cache import FeatureDataset, extract_features
from mura.training.losses import MultiTaskLoss
from mura.training.schedule import LrSchedule
from mura.training.steps import FeatureInput, ImageInput, autocast_for, train_one_epoch

ROOT = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")


def reexec_with_tcmalloc() -> None:
    library = find_tcmalloc()
    if tcmalloc_loaded() or library is None or os.environ.get(OPT_OUT_ENV) or os.environ.get(MARKER_ENV):
        return
    env = {**os.environ, "LD_PRELOAD": library, MARKER_ENV: "1"}
    os.execve(sys.executable, [sys.executable, *sys.argv], env)


def fake_cache(n: int, size: int) -> SimpleNamespace:
    """An in-memory image cache (the layout `mura prepare` writes) with radiograph-like noise."""
    rng = np.random.default_rng(0)
    images = (rng.random((n, size, size)) * 255).astype(np.uint8)
    parts = ["ELBOW", "FINGER", "FOREARM", "HAND", "HUMERUS", "SHOULDER", "WRIST"]
    index = pd.DataFrame(
        {
            "cache_row": np.arange(n),
            "split": "train",
            "label": rng.integers(0, 2, n),
            "body_part": [parts[i % 7] for i in range(n)],
        }
    )
    return SimpleNamespace(images=images, index=index, settings={"size": size, "resize": "stretch"})


def model_for(name: str, freeze: str | None = None):
    cfg = load_config(ROOT / "configs" / f"{name}.yaml", {"model.pretrained": False})
    if freeze:
        cfg.model.freeze = freeze
    return cfg, build_model(cfg).to(memory_format=torch.channels_last)


def bare_step_rate(model, batch: int, size: int, steps: int) -> float:
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer, loss_fn = torch.optim.Adam(params, 1e-4), MultiTaskLoss()
    x = torch.randn(batch, 1, size, size).contiguous(memory_format=torch.channels_last)
    label, part = torch.randint(0, 2, (batch,)), torch.randint(0, 7, (batch,))
    model.train()
    for i in range(steps + 1):
        if i == 1:
            start = time.perf_counter()
        loss = loss_fn(model(x, part), label, part).total
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return batch * steps / (time.perf_counter() - start)


def loop_rate(model, cfg, cache, batch: int, steps: int, workers: int) -> tuple[float, float]:
    dataset = CachedImageDataset(cache, "train", limit=batch * steps)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, 1e-4)
    pre = Preprocessing(224, "stretch", **model.default_preprocessing)
    batch_input = ImageInput(pre, "flip_rotate", 10.0, CPU, True, torch.Generator().manual_seed(0))
    loader = make_loader(
        dataset,
        batch,
        ShardSampler(len(dataset)),
        torch.Generator(),
        workers=workers,
        persistent_workers=True,
        drop_last=True,
    )
    cfg.train.scheduler = "none"
    schedule = LrSchedule(optimizer, cfg.train, 1)
    args = (
        batch_input,
        MultiTaskLoss(),
        optimizer,
        schedule,
        DistInfo(),
        0.0,
        autocast_for(CPU, False),
        "bench",
    )
    train_one_epoch(model, loader, *args)  # warm-up epoch: workers start, allocator and kernels warm up
    stats = train_one_epoch(model, loader, *args)
    return stats["train_images_per_s"], stats["data_wait_fraction"]


def feature_cache_ratio(cache, n: int, views: int) -> dict[str, float]:
    cfg, model = model_for("efficientnet_b0", "frozen")
    model = model.to(memory_format=torch.contiguous_format)
    dataset = CachedImageDataset(cache, "train", limit=n)
    pre = Preprocessing(224, "stretch", **model.default_preprocessing)
    image_input = ImageInput(pre, "flip_rotate", 10.0, CPU, False, torch.Generator().manual_seed(0))
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], 1e-3)
    cfg.train.scheduler = "none"
    schedule, autocast, info = LrSchedule(optimizer, cfg.train, 1), autocast_for(CPU, False), DistInfo()
    loader = make_loader(dataset, 32, ShardSampler(n), torch.Generator(), workers=1, persistent_workers=False)
    start = time.perf_counter()
    train_one_epoch(
        model, loader, image_input, MultiTaskLoss(), optimizer, schedule, info, 1.0, autocast, "slow"
    )
    slow = time.perf_counter() - start
    start = time.perf_counter()
    features = extract_features(
        model,
        dataset,
        image_input.pixels,
        views,
        torch.Generator().manual_seed(1),
        info,
        32,
        1,
        autocast,
        "extract",
    )
    extract = time.perf_counter() - start
    feature_data = FeatureDataset(features, dataset)
    feature_data.set_views(torch.Generator().manual_seed(2))
    from mura.training.inputs import HeadsOnly

    heads = HeadsOnly(model)
    floader = make_loader(feature_data, 32, ShardSampler(n), torch.Generator(), workers=0)
    start = time.perf_counter()
    train_one_epoch(
        heads, floader, FeatureInput(CPU), MultiTaskLoss(), optimizer, schedule, info, 1.0, autocast, "fast"
    )
    fast = time.perf_counter() - start
    return {"images": n, "views": views, "slow_epoch_s": slow, "cached_epoch_s": fast, "extract_s": extract}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--steps", type=int, default=4, help="timed batches per measurement (after 1 warm-up)"
    )
    parser.add_argument("--models", default="custom_cnn,resnet50,densenet169,efficientnet_b0")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--cache-images", type=int, default=128, help="images in the feature-cache comparison"
    )
    parser.add_argument("--out", default=str(ROOT / "docs" / "benchmarks" / "training.md"))
    args = parser.parse_args()
    reexec_with_tcmalloc()
    batch = 32
    cache = fake_cache(max(batch * (args.steps + 1), args.cache_images), 224)
    rows = []
    for name in args.models.split(","):
        for freeze in [None] + (["full"] if name == "efficientnet_b0" else []):
            cfg, model = model_for(name, freeze)
            bare = bare_step_rate(model, batch, 224, args.steps)
            real, wait = loop_rate(model, cfg, cache, batch, args.steps, args.workers)
            rows.append((name, freeze or cfg.model.freeze, bare, real, wait))
            print(
                f"{name:16s} freeze={rows[-1][1]:10s} bare {bare:6.1f} img/s  loop {real:6.1f} img/s "
                f"({real / bare:.2f}x)  data wait {100 * wait:.1f}%",
                flush=True,
            )
    fc = feature_cache_ratio(cache, args.cache_images, 4)
    per_epoch = fc["slow_epoch_s"] / fc["cached_epoch_s"]
    print(
        f"frozen efficientnet_b0, {fc['images']} images: epoch {fc['slow_epoch_s']:.1f}s "
        "through the backbone vs "
        f"{fc['cached_epoch_s']:.3f}s on cached features ({per_epoch:.0f}x); one-off extraction of "
        f"{fc['views']} views {fc['extract_s']:.1f}s",
        flush=True,
    )
    write_report(Path(args.out), args, rows, fc, per_epoch)


def write_report(path: Path, args, rows, fc, per_epoch: float) -> None:
    lines = [
        "## Training speed (CPU)",
        "",
        "Command: `.venv/bin/python benchmarks/bench_train.py "
        f"--steps {args.steps} --workers {args.workers}`",
        f"(224 px, batch 32, 1 channel, channels_last, tcmalloc {'on' if tcmalloc_loaded() else 'off'}, "
        f"{torch.get_num_threads()} threads, {os.cpu_count()} cores shared with other jobs: "
        "read the ratios).",
        "",
        "| model | freeze | bare step img/s | real loop img/s | loop / bare | data wait |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    lines += [f"| {n} | {f} | {b:.1f} | {r:.1f} | {r / b:.2f} | {100 * w:.1f}% |" for n, f, b, r, w in rows]
    lines += [
        "",
        f"Frozen EfficientNet-B0 on {fc['images']} images: an epoch through the backbone takes "
        f"{fc['slow_epoch_s']:.1f} s, an epoch on cached features {fc['cached_epoch_s']:.3f} s "
        f"(**{per_epoch:.0f}x** faster per epoch); computing the cache once ({fc['views']} augmented views) "
        f"took {fc['extract_s']:.1f} s, i.e. about {fc['views']} slow epochs, paid once per run.",
        "",
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

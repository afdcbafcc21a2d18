"""Bare training-step throughput per model: forward + loss + backward + Adam step on fixed tensors.

No data loading, so this is the ceiling a training loop can reach. The default (contiguous, NCHW)
and channels_last memory formats run side by side, alternating step by step, so a shared noisy
machine slows both alike and the ratio stays meaningful. The allocator is a process-level choice:
run once plainly and once with
`LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4` to compare glibc and tcmalloc.

    .venv/bin/python benchmarks/bench_models.py [--models efficientnet_b0 resnet50] [--markdown FILE]
"""

from __future__ import annotations

import argparse
import copy
import os
import time
from pathlib import Path

import torch

from mura.models import create_model
from mura.training.losses import MultiTaskLoss

SPEC_MODELS = ("custom_cnn", "efficientnet_b0", "resnet50", "densenet169")


def make_step(model, loss_fn, optimizer, image, label, body_part, device):
    """One training step; synchronises CUDA so wall time covers the whole step."""

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = loss_fn(model(image, body_part), label, body_part).total
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()

    return step


def bench_model(name: str, args: argparse.Namespace, device: torch.device) -> dict[str, float]:
    torch.manual_seed(0)
    base = create_model(name, freeze=args.freeze, img_size=args.size).to(device).train()
    image = torch.randn(args.batch, 1, args.size, args.size, device=device)
    label = torch.randint(0, 2, (args.batch,), device=device)
    body_part = torch.randint(0, 7, (args.batch,), device=device)
    loss_fn = MultiTaskLoss().to(device)
    steps = {}
    for fmt in ("contiguous", "channels_last"):
        model = copy.deepcopy(base)
        x = image
        if fmt == "channels_last":
            model = model.to(memory_format=torch.channels_last)
            x = image.contiguous(memory_format=torch.channels_last)
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.Adam(params, lr=1e-4)
        steps[fmt] = make_step(model, loss_fn, optimizer, x, label, body_part, device)
    seconds = {fmt: 0.0 for fmt in steps}
    for i in range(args.warmup + args.steps):
        for fmt, step in steps.items():
            start = time.perf_counter()
            step()
            if i >= args.warmup:
                seconds[fmt] += time.perf_counter() - start
    return {fmt: args.batch * args.steps / s for fmt, s in seconds.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(SPEC_MODELS))
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per format")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--freeze", default="full", help="freeze policy (full = whole network trains)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--markdown", type=Path, help="also write the table to this file")
    args = parser.parse_args()
    device = torch.device(args.device)
    allocator = "tcmalloc" if "tcmalloc" in os.environ.get("LD_PRELOAD", "") else "default (glibc)"
    threads = f"{torch.get_num_threads()} threads"
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else threads
    header = (
        f"device {args.device} ({where}), allocator {allocator}, torch {torch.__version__}, "
        f"batch {args.batch}, {args.size} px, 1 channel, freeze={args.freeze}, "
        f"{args.steps} timed steps after {args.warmup} warm-up"
        + (", bf16 autocast" if device.type == "cuda" else ", fp32")
    )
    lines = [
        header,
        "",
        "| model | contiguous img/s | channels_last img/s | channels_last / contiguous |",
        "|---|---:|---:|---:|",
    ]
    print(header)
    for name in args.models:
        rates = bench_model(name, args, device)
        ratio = rates["channels_last"] / rates["contiguous"]
        row = f"| {name} | {rates['contiguous']:.1f} | {rates['channels_last']:.1f} | {ratio:.2f}x |"
        lines.append(row)
        print(row, flush=True)
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

"""What one training step of each demo row costs on one CPU thread, and what bf16 and fused Adam save.

    .venv/bin/python benchmarks/bench_train_step.py [--steps 4] [--markdown docs/benchmarks/train_step.md]

`make demo` trains its four rows (64 px, batch 32, every layer) in two lanes of one thread each, so the
demo's length is the sum of these steps. For each row this measures, side by side in one process: the
float32 step with Adam's per-tensor loop (`foreach`, torch's default), the bf16 autocast step
(`train.cpu_bf16`, on CPUs with native bf16) with the same Adam, and the bf16 step with the fused Adam
kernel the training loop now uses; forward, backward and optimizer time apart. Timings are noisy on a
shared machine: read the ratios.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from mura.models.registry import create_model
from mura.training.losses import MultiTaskLoss

ROWS = ("custom_cnn", "resnet50", "densenet169", "tf_efficientnet_lite0")
VARIANTS = (
    ("float32, foreach Adam", False, False),
    ("bf16, foreach Adam", True, False),
    ("bf16, fused Adam", True, True),
)


def step_times(name: str, size: int, batch: int, steps: int, bf16: bool, fused: bool) -> dict[str, float]:
    """Best-of-`steps` seconds for forward, backward and optimizer of one training step (after a warm-up)."""
    torch.manual_seed(0)
    model = create_model(name, img_size=size, load_pretrained=False).train()
    model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), 1e-3, fused=fused)
    loss_fn = MultiTaskLoss()
    x = torch.randn(batch, 1, size, size).contiguous(memory_format=torch.channels_last)
    label, part = torch.randint(0, 2, (batch,)), torch.randint(0, 7, (batch,))
    best = {"forward": float("inf"), "backward": float("inf"), "optimizer": float("inf")}
    for i in range(steps + 1):
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = loss_fn(model(x, part), label, part).total
        t1 = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        t2 = time.perf_counter()
        optimizer.step()
        t3 = time.perf_counter()
        if i:  # the first step warms up the allocator and oneDNN's kernel choice
            for key, seconds in zip(best, (t1 - t0, t2 - t1, t3 - t2), strict=True):
                best[key] = min(best[key], seconds)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4, help="timed steps per measurement (after 1 warm-up)")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rows", default=",".join(ROWS), help="comma-separated model names")
    parser.add_argument("--markdown", type=Path, help="write the table here (docs/benchmarks/train_step.md)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    native_bf16 = torch.ops.mkldnn._is_mkldnn_bf16_supported()
    lines = [
        "## One training step per demo row (CPU, one thread)",
        "",
        f"Command: `.venv/bin/python benchmarks/bench_train_step.py --steps {args.steps}` ({args.size} px, "
        f"batch {args.batch}, channels_last, every layer training, random weights; native bf16: "
        f"{'yes' if native_bf16 else 'no'}). Milliseconds per step, best of {args.steps}; the ratio is "
        "against the float32 / foreach step of the same row, measured in the same run.",
        "",
        "| row | variant | forward | backward | optimizer | step | vs float32 |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for name in args.rows.split(","):
        base = None
        for label, bf16, fused in VARIANTS:
            parts = step_times(name, args.size, args.batch, args.steps, bf16, fused)
            total = sum(parts.values())
            base = base or total
            ms = {key: f"{1000 * seconds:.0f}" for key, seconds in parts.items()}
            cells = [name, label, ms["forward"], ms["backward"], ms["optimizer"], f"{1000 * total:.0f}"]
            row = "| " + " | ".join([*cells, f"{base / total:.2f}x"]) + " |"
            print(row, flush=True)
            lines.append(row)
    if args.markdown:
        args.markdown.write_text("\n".join(lines) + "\n")
        print(f"wrote {args.markdown}")


if __name__ == "__main__":
    main()

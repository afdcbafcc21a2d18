"""Inference speed on CPU: PyTorch vs ONNX Runtime per spec model, and `mura predict` end to end vs bare.

Weights are random (speed does not depend on them); every figure is measured side by side in one run,
so the ratios hold on a noisy shared machine even when the absolute numbers move.

    .venv/bin/python benchmarks/bench_inference.py --markdown docs/benchmarks/inference.md
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from mura.checkpoint import save_model
from mura.config_loading import load_config
from mura.inference.files import expand_paths, iter_file_predictions
from mura.inference.onnx_export import export_onnx
from mura.inference.predictor import Predictor
from mura.models.registry import model_from_config
from mura.preprocessing import Preprocessing

SPEC_MODELS = ("custom_cnn", "efficientnet_b0", "resnet50", "densenet169")
FRACATLAS = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "fracatlas" / "images"


def make_checkpoint(directory: Path, name: str, size: int) -> Path:
    cfg = load_config(overrides={"model.name": name, "model.size": size, "model.freeze": "full"})
    model = model_from_config(cfg.model, load_pretrained=False)
    pre = Preprocessing(size, "stretch", **model.default_preprocessing)
    return save_model(directory / f"{name}.pt", model, cfg, pre, epoch=0)


def timed(fn, repeats: int) -> float:
    """Median seconds of `repeats` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_runtimes(checkpoint: Path, size: int, batch: int, repeats: int) -> dict[str, float]:
    out = {}
    for runtime in ("torch", "onnx"):
        predictor = Predictor.from_checkpoints([checkpoint], device="cpu", runtime=runtime, batch_size=batch)
        one = {(size, "stretch"): np.random.randint(0, 256, (1, size, size), dtype=np.uint8)}
        many = {(size, "stretch"): np.random.randint(0, 256, (batch, size, size), dtype=np.uint8)}
        out[f"{runtime}_latency_ms"] = 1000 * timed(
            lambda p=predictor, x=one: p.predict_arrays(x, np.zeros(1)), repeats * 3
        )
        seconds = timed(lambda p=predictor, x=many: p.predict_arrays(x, np.zeros(batch)), repeats)
        out[f"{runtime}_img_s"] = batch / seconds
    return out


def image_folder(directory: Path, count: int) -> Path:
    """FracAtlas JPEGs when the shared data is present (real decode cost), else generated 454x373 JPEGs."""
    folder = directory / "images"
    folder.mkdir()
    real = sorted((FRACATLAS / "Non_fractured").glob("*.jpg"))[:count] if FRACATLAS.is_dir() else []
    for i in range(count):
        if i < len(real):
            (folder / real[i].name).symlink_to(real[i].resolve())
        else:
            pixels = np.random.default_rng(i).integers(0, 256, (454, 373), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"synthetic_{i:04d}.jpg", quality=90)
    return folder


def bench_end_to_end(checkpoint: Path, folder: Path, batch: int, runtime: str) -> dict[str, float]:
    predictor = Predictor.from_checkpoints([checkpoint], device="cpu", runtime=runtime, batch_size=batch)
    files = expand_paths([folder])
    size = predictor.members[0].preprocessing.size
    arrays = {(size, "stretch"): np.random.randint(0, 256, (len(files), size, size), dtype=np.uint8)}
    parts = np.full(len(files), -1)
    predictor.predict_arrays({k: v[:batch] for k, v in arrays.items()}, parts[:batch])  # warm-up
    start = time.perf_counter()
    predictor.predict_arrays(arrays, parts)
    bare = len(files) / (time.perf_counter() - start)
    results = {}
    for workers in (0, 2):
        start = time.perf_counter()
        if workers == 0:  # decode, then infer, in turn: what a loop without overlap does
            for i in range(0, len(files), batch):
                list(iter_file_predictions(predictor, files[i : i + batch], workers=1))
        else:
            done = sum(r.ok for r in iter_file_predictions(predictor, files, workers=workers))
            assert done == len(files)
        results[f"e2e_workers{workers}_img_s"] = len(files) / (time.perf_counter() - start)
    return {"bare_img_s": bare, **results, "files": len(files), "real_images": FRACATLAS.is_dir()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(SPEC_MODELS))
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--images", type=int, default=160, help="files in the end-to-end folder")
    parser.add_argument("--markdown", default=None, help="write the results section here")
    args = parser.parse_args()
    lines = [
        "## Inference (CPU)",
        "",
        f"`{' '.join(['.venv/bin/python', 'benchmarks/bench_inference.py', *sys.argv[1:]])}`  ",
        f"{torch.get_num_threads()} torch threads, input {args.size} px, batch {args.batch}, random weights.",
        "",
        "| model | torch ms (batch 1) | ONNX ms | torch img/s (batch) | ONNX img/s | ONNX / torch |",
        "|---|---|---|---|---|---|",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        checkpoints = {}
        for name in args.models:
            checkpoints[name] = make_checkpoint(directory, name, args.size)
            export_onnx(checkpoints[name])
            r = bench_runtimes(checkpoints[name], args.size, args.batch, args.repeats)
            ratio = r["onnx_img_s"] / r["torch_img_s"]
            row = (
                f"| {name} | {r['torch_latency_ms']:.1f} | {r['onnx_latency_ms']:.1f} "
                f"| {r['torch_img_s']:.1f} | {r['onnx_img_s']:.1f} | {ratio:.2f}x |"
            )
            print(row, flush=True)
            lines.append(row)
        e2e_model = "efficientnet_b0" if "efficientnet_b0" in checkpoints else next(iter(checkpoints))
        folder = image_folder(directory, args.images)
        lines += [
            "",
            f"End to end, {e2e_model}, {args.images} JPEG files (decode + resize + inference):",
            "",
            "| runtime | bare img/s | predict, no overlap | predict, 2 decode threads | overlap / bare |",
            "|---|---|---|---|---|",
        ]
        for runtime in ("onnx", "torch"):
            e = bench_end_to_end(checkpoints[e2e_model], folder, args.batch, runtime)
            row = (
                f"| {runtime} | {e['bare_img_s']:.1f} | {e['e2e_workers0_img_s']:.1f} "
                f"| {e['e2e_workers2_img_s']:.1f} | {e['e2e_workers2_img_s'] / e['bare_img_s']:.0%} |"
            )
            print(row, flush=True)
            lines.append(row)
        source = "FracAtlas (CC BY 4.0, Abedeen et al. 2023)" if FRACATLAS.is_dir() else "generated"
        lines += ["", f"End-to-end images: {source}."]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.markdown:
        Path(args.markdown).parent.mkdir(parents=True, exist_ok=True)
        Path(args.markdown).write_text(text)


if __name__ == "__main__":
    main()

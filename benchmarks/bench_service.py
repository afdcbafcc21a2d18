"""Load test of `mura serve` on loopback, next to the bare predictor's latency measured in the same run.

Run: .venv/bin/python benchmarks/bench_service.py [--model efficientnet_b0] [--size 224] [--clients 8]
     [--requests 25] [--workers 1] [--max-seconds 60]

A randomly initialised model (no weights needed: speed does not depend on them) is saved as a
checkpoint and served by a real `mura serve` subprocess. N client threads each send M synthetic
radiographs (PNG, multipart); every answer must be 200 and carry the probability the bare predictor
gives for that image (checked to 1e-5), or the run fails. Bounded: it stops after --max-seconds.
Printed side by side: bare decode+predict latency (one image per call, in this process) and the
service's p50/p95 latency and requests/s, with their ratios. Results go to docs/benchmarks/service.md.
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import torch
from PIL import Image

from mura.checkpoint import build_model, save_model
from mura.config_loading import load_config
from mura.data.images import load_grayscale
from mura.data.synth import render_image
from mura.inference.predictor import Predictor
from mura.preprocessing import Preprocessing

REPO = Path(__file__).resolve().parents[1]
PARTS = ("WRIST", "ELBOW", "HAND", "SHOULDER", "FINGER", "FOREARM", "HUMERUS")


def make_checkpoint(path: Path, model: str, size: int) -> Path:
    torch.manual_seed(0)
    freeze = "full"
    cfg = load_config(overrides={"model.name": model, "model.size": size, "model.freeze": freeze})
    net = build_model(cfg, load_pretrained=False)
    pre = Preprocessing(size, "stretch", **net.default_preprocessing)
    return save_model(path, net, cfg, pre, epoch=0)


def radiographs(count: int) -> list[bytes]:
    files = []
    for i in range(count):
        buffer = io.BytesIO()
        Image.fromarray(render_image(PARTS[i % len(PARTS)], i % 2 == 0, [11, i, 0], 0)).save(buffer, "PNG")
        files.append(buffer.getvalue())
    return files


def percentile_ms(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values) * 1000, q))


def bare_latency(
    predictor: Predictor, files: list[bytes], repeats: int
) -> tuple[list[float], dict[int, float]]:
    """Seconds per decode + predict of one image (the work one request asks for), and each file's answer.

    Run on one worker thread, as the server runs it (so both sides use torch's threads the same way).
    """

    def one(data: bytes) -> float:
        return float(predictor.predict_images([load_grayscale(data)], [-1]).fracture_prob[0])

    def timed(data: bytes) -> float:
        started = time.perf_counter()
        one(data)
        return time.perf_counter() - started

    with ThreadPoolExecutor(max_workers=1) as pool:
        expected = {i: pool.submit(one, data).result() for i, data in enumerate(files)}
        times = [pool.submit(timed, files[r % len(files)]).result() for r in range(repeats)]
    return times, expected


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(checkpoint: Path, workers: int, max_queue: int, log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "mura",
        "serve",
        "--checkpoint",
        str(checkpoint),
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--max-queue",
        str(max_queue),
        "--device",
        "cpu",
        "--log-level",
        "warning",
    ]
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"mura serve exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(base + "/healthz", timeout=2).status_code == 200:
                return process, base
        except httpx.TransportError:
            time.sleep(0.25)
    process.kill()
    raise SystemExit("mura serve did not start within 180 s")


def load_test(
    base: str,
    files: list[bytes],
    expected: dict[int, float],
    clients: int,
    requests: int,
    max_seconds: float,
    cam: bool,
) -> dict:
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + max_seconds
    url = base + "/v1/predict" + ("?cam=true" if cam else "")

    def client(cid: int) -> None:
        with httpx.Client(timeout=120) as http:
            for r in range(requests):
                if time.monotonic() > stop_at:
                    return
                index = (cid * requests + r) % len(files)
                started = time.perf_counter()
                response = http.post(url, files={"file": (f"{index}.png", files[index])})
                elapsed = time.perf_counter() - started
                problem = None
                if response.status_code != 200:
                    problem = f"HTTP {response.status_code}: {response.text[:200]}"
                elif abs(response.json()["fracture_probability"] - expected[index]) > 1e-5:
                    problem = f"file {index}: wrong probability {response.json()['fracture_probability']}"
                elif cam and not response.json().get("heatmap_png"):
                    problem = "no heatmap"
                with lock:
                    latencies.append(elapsed)
                    if problem:
                        errors.append(problem)

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    return {
        "answered": len(latencies),
        "planned": clients * requests,
        "errors": errors,
        "wall_s": wall,
        "rps": len(latencies) / wall,
        "p50_ms": percentile_ms(latencies, 50),
        "p95_ms": percentile_ms(latencies, 95),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="efficientnet_b0")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=25, help="per client")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--max-seconds", type=float, default=60.0)
    parser.add_argument(
        "--cam-requests", type=int, default=5, help="per client in the Grad-CAM round (0 = skip)"
    )
    parser.add_argument("--out", default=str(REPO / "docs" / "benchmarks" / "service.md"))
    args = parser.parse_args()

    load_before = os.getloadavg()[0]
    files = radiographs(16)
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = make_checkpoint(Path(tmp) / "best.pt", args.model, args.size)
        predictor = Predictor.from_checkpoints([checkpoint], device="cpu", runtime="torch")
        bare_times, expected = bare_latency(predictor, files, repeats=40)
        del predictor
        bare_p50 = percentile_ms(bare_times, 50)
        bare_rate = 1000 / bare_p50
        bare_p95 = percentile_ms(bare_times, 95)
        print(
            f"bare decode+predict, 1 image/call: p50 {bare_p50:.1f} ms, p95 {bare_p95:.1f} ms "
            f"({bare_rate:.1f} img/s)"
        )
        process, base = start_server(checkpoint, args.workers, args.clients, Path(tmp) / "serve.log")
        try:
            for data in files[:3]:  # warm-up: first-call allocations, not steady state
                httpx.post(base + "/v1/predict?cam=true", files={"file": ("w.png", data)}, timeout=120)
            rounds = [("predict", args.requests, False)]
            if args.cam_requests:
                rounds.append(("predict + Grad-CAM", args.cam_requests, True))
            results = []
            for name, requests, cam in rounds:
                result = load_test(base, files, expected, args.clients, requests, args.max_seconds, cam)
                results.append((name, result))
                print(summary_line(name, result, bare_rate))
                for problem in result["errors"][:5]:
                    print("  error:", problem)
        finally:
            process.terminate()
            process.wait(timeout=30)

    command = ".venv/bin/python benchmarks/bench_service.py " + " ".join(sys.argv[1:])
    loads = (load_before, os.getloadavg()[0])
    write_report(Path(args.out), args, command, bare_times, results, loads)
    failed = any(r["errors"] or r["answered"] < r["planned"] for _, r in results)
    return 1 if failed else 0


def summary_line(name: str, r: dict, bare_rate: float) -> str:
    return (
        f"{name}: {r['answered']}/{r['planned']} answered, {len(r['errors'])} errors, "
        f"p50 {r['p50_ms']:.1f} ms, p95 {r['p95_ms']:.1f} ms, {r['rps']:.1f} req/s "
        f"({r['rps'] / bare_rate:.2f} x bare img/s)"
    )


def write_report(
    path: Path, args: argparse.Namespace, command: str, bare_times: list[float], results, loads
) -> None:
    bare_p50 = percentile_ms(bare_times, 50)
    lines = [
        "## Service (`mura serve`) under load",
        "",
        f"Command: `{command.strip()}`  ",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores shared with other jobs (1-min load average "
        f"{loads[0]:.1f} at the start, {loads[1]:.1f} at the end), torch {torch.__version__}, "
        f"CPU only. Model: `{args.model}` at {args.size} px, random weights (speed does not depend on them), "
        f"PyTorch runtime, `--workers {args.workers} --max-queue {args.clients}`. Inputs: 16 synthetic "
        "radiographs (PNG, up to 512 px), uploaded as multipart over loopback HTTP/1.1.",
        "",
        "| what | requests | errors | p50 ms | p95 ms | req/s | vs bare |",
        "|---|---|---|---|---|---|---|",
        f"| bare decode + predict, 1 image per call, in-process worker thread | {len(bare_times)} | 0 | "
        f"{bare_p50:.1f} | "
        f"{percentile_ms(bare_times, 95):.1f} | {1000 / bare_p50:.1f} | 1.00 |",
    ]
    for name, r in results:
        lines.append(
            f"| `POST /v1/predict` {name}, {args.clients} concurrent clients | "
            f"{r['answered']}/{r['planned']} | "
            f"{len(r['errors'])} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} | {r['rps']:.1f} | "
            f"{r['rps'] * bare_p50 / 1000:.2f} |"
        )
    lines += [
        "",
        "Every answer was checked: HTTP 200 and the same fracture probability (to 1e-5) as the bare "
        "predictor gives for that file. `vs bare` is the service's requests/s over the bare images/s; "
        f"latency under load includes waiting in the queue behind up to {args.clients - 1} other requests.",
        "",
        "The bare figure is measured on one worker thread, as the server runs inference. Run it as "
        "`benchmarks/run_all.sh` does (OMP_WAIT_POLICY=PASSIVE, as `mura serve` sets): with spinning "
        "OpenMP threads on a loaded 2-core machine, inference slowed 5-100x.",
        "",
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))
    print(f"wrote {path}")


if __name__ == "__main__":
    raise SystemExit(main())

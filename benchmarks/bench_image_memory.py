"""Peak and retained memory of decoding and serving large images, each measured in a fresh process.

Run: .venv/bin/python benchmarks/bench_image_memory.py [--side 7990] [--views 4] [--repeat 3]

Files: an RGBA PNG of SIDE x SIDE (a few hundred KB, within the service's default 64 Mpx limit) and a
~1 KB RLE DICOM declaring 40,000 x 40,000 (a decompression bomb). Scenarios, one child process each:
`read_image` on both; the service (`fastapi.testclient`, a tiny random custom_cnn, default limits) on
one PNG and on a study of VIEWS copies, REPEAT requests in a row. Each child reports its RSS before the
work, its peak (VmHWM), its RSS afterwards and after `malloc_trim(0)` (what glibc kept but could give
back).
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import io
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import RLELossless, generate_uid

SCENARIOS = ("read-png", "read-rle-bomb", "serve-png", "serve-study")


def rgba_png(side: int) -> bytes:
    """An RGBA radiograph-like PNG: a grid on black, opaque; compresses to a few hundred KB."""
    rgba = np.zeros((side, side, 4), np.uint8)
    rgba[..., 3] = 255
    rgba[::64, :, :3] = 200
    rgba[:, ::64, 0] = 90
    buffer = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buffer, "PNG", compress_level=9)
    return buffer.getvalue()


def rle_bomb(rows: int, cols: int) -> bytes:
    """An 8-bit RLE Lossless DICOM declaring rows x cols, its one segment a few hundred bytes of runs."""
    segment_offsets = (1).to_bytes(4, "little") + (64).to_bytes(4, "little") + b"\0" * 56
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = (
        "1.2.840.10008.5.1.4.1.1.1.1",
        generate_uid(),
    )
    meta.TransferSyntaxUID = RLELossless
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.Modality = generate_uid(), generate_uid(), "DX"
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = rows, cols, 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = encapsulate([segment_offsets + bytes([0x81, 0]) * 100])
    ds["PixelData"].VR = "OB"
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _status(field: str) -> int:
    """A /proc/self/status field in MiB (VmRSS: now, VmHWM: the peak so far)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) // 1024
    raise KeyError(field)


def _client(folder: Path):
    import torch
    from fastapi.testclient import TestClient

    from mura.checkpoint import build_model, save_model
    from mura.config_loading import load_config
    from mura.preprocessing import Preprocessing
    from mura.service.loading import app_from_checkpoints

    torch.manual_seed(0)
    cfg = load_config(overrides={"model.name": "custom_cnn", "model.size": 32, "model.freeze": "full"})
    checkpoint = save_model(
        folder / "tiny.pt",
        build_model(cfg, load_pretrained=False),
        cfg,
        Preprocessing(32, "stretch", 0.5, 0.25),
    )
    return TestClient(app_from_checkpoints([checkpoint], device="cpu", runtime="torch"))


def child(scenario: str, folder: Path, views: int, repeat: int) -> dict[str, object]:
    """Run one scenario in this (fresh) process and report its memory in MiB."""
    from mura.data.images import read_image

    png, bomb = (folder / "rgba.png").read_bytes(), (folder / "bomb.dcm").read_bytes()
    client = _client(folder) if scenario.startswith("serve") else None
    gc.collect()
    before, outcome = _status("VmRSS"), "ok"
    if scenario == "read-png":
        read_image(png)
    elif scenario == "read-rle-bomb":
        try:
            read_image(bomb)
        except Exception as exc:  # the outcome is what is reported
            outcome = str(exc)[:90]
    else:
        assert client is not None
        count = 1 if scenario == "serve-png" else views
        files = [("files" if count > 1 else "file", (f"v{i}.png", png, "image/png")) for i in range(count)]
        for _ in range(repeat):
            answer = client.post("/v1/predict/study" if count > 1 else "/v1/predict", files=files)
        outcome = f"{answer.status_code} {answer.json().get('error', '')}".strip()
    gc.collect()
    after = _status("VmRSS")
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    return {
        "scenario": scenario,
        "outcome": outcome,
        "before": before,
        "peak": _status("VmHWM"),
        "after": after,
        "trimmed": _status("VmRSS"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=7990)
    parser.add_argument("--views", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=3, help="requests in a row (the service scenarios)")
    parser.add_argument("--child", choices=SCENARIOS, help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.folder, args.views, args.repeat)))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "rgba.png").write_bytes(rgba_png(args.side))
        (folder / "bomb.dcm").write_bytes(rle_bomb(40_000, 40_000))
        sizes = {name: (folder / name).stat().st_size for name in ("rgba.png", "bomb.dcm")}
        print(
            f"rgba.png {args.side}x{args.side}: {sizes['rgba.png']:,} bytes; bomb.dcm: {sizes['bomb.dcm']:,}"
        )
        print(f"{'MiB':<14} {'before':>7} {'peak':>7} {'after':>7} {'trimmed':>7}  outcome")
        for scenario in SCENARIOS:
            command = [sys.executable, __file__, "--child", scenario, "--folder", tmp]
            command += ["--views", str(args.views), "--repeat", str(args.repeat)]
            run = subprocess.run(command, capture_output=True, text=True, check=True)
            r = json.loads(run.stdout.strip().splitlines()[-1])
            figures = " ".join(f"{r[key]:>7}" for key in ("before", "peak", "after", "trimmed"))
            print(f"{scenario:<14} {figures}  {r['outcome']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

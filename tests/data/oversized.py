"""Files that declare far more pixels than they carry, and the peak memory of a process that reads them.

Shared by the data, CLI, service and DICOM node tests of the pixel budget (`mura.data.budget`).
"""

from __future__ import annotations

import functools
import io
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.uid import JPEGBaseline8Bit, RLELossless

from tests.factories.dicom import dicom_bytes, dicom_dataset

# A child's peak resident memory: the wrapper's only child is the command, so RUSAGE_CHILDREN is its peak.
_PEAK_WRAPPER = (
    "import resource, subprocess, sys; code = subprocess.run(sys.argv[1:]).returncode; "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024, file=sys.stderr); sys.exit(code)"
)


def _declaring(ds: Dataset, rows: int, cols: int, syntax: str, frame: bytes) -> bytes:
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = rows, cols, 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.file_meta.TransferSyntaxUID = syntax
    ds.PixelData = encapsulate([frame])
    ds["PixelData"].VR = "OB"
    return dicom_bytes(ds)


def rle_bomb(
    rows: int = 40_000, cols: int = 40_000, body_part: str | None = "WRIST", **fields: object
) -> bytes:
    """An 8-bit RLE Lossless DX of about 1 KB declaring rows x cols (1.6 GB by default): one segment of
    a few hundred bytes of runs, which a decoder finds short only after allocating the frame."""
    segment_offsets = (1).to_bytes(4, "little") + (64).to_bytes(4, "little") + b"\0" * 56
    frame = segment_offsets + bytes([0x81, 0]) * 100
    return _declaring(dicom_dataset(None, body_part=body_part, **fields), rows, cols, RLELossless, frame)


def jpeg_frame_bomb(side: int = 30_000) -> bytes:
    """A 64 x 64 JPEG Baseline DX whose JPEG frame header declares side x side (what libjpeg allocates)."""
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(buffer, "JPEG")
    jpeg = bytearray(buffer.getvalue())
    sof = jpeg.index(b"\xff\xc0")
    jpeg[sof + 5 : sof + 9] = side.to_bytes(2, "big") * 2
    return _declaring(dicom_dataset(None), 64, 64, JPEGBaseline8Bit, bytes(jpeg))


@functools.cache
def rgba_png(side: int = 7990) -> bytes:
    """An RGBA PNG of side x side (64 Mpx by default, ~300 KB): a grid, half of it half transparent."""
    image = Image.new("RGBA", (side, side), (0, 0, 0, 255))
    draw = ImageDraw.Draw(image)
    for x in range(0, side, 64):
        draw.line([(x, 0), (x, side)], fill=(200, 120, 90, 255))
        draw.line([(0, x), (side, x)], fill=(90, 200, 120, 128))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def run_with_peak(command: list[str], timeout: float = 300, **options: object) -> tuple[int, str, int]:
    """(exit code, stdout, peak RSS in MiB) of `command` run in a subprocess."""
    run = subprocess.run(
        [sys.executable, "-c", _PEAK_WRAPPER, *command],
        capture_output=True,
        text=True,
        timeout=timeout,
        **options,
    )
    *_, peak = run.stderr.strip().splitlines()
    return run.returncode, run.stdout + run.stderr, int(peak)


def process_peak_mib(pid: int) -> int:
    """The peak RSS so far (VmHWM) of a running process, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) // 1024
    raise AssertionError(f"no VmHWM for process {pid}")

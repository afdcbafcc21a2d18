"""The image cache: every indexed image decoded once, resized, stored in one uint8 array file.

Training then memory-maps `images.npy` and never touches JPEG/PNG decoding again (decoding costs more
than a small CNN's forward pass on CPU). Workers write straight into the shared memory-mapped file, so
nothing large crosses process pipes. The cache is reused when a fingerprint of the inputs (paths, file
sizes, mtimes, index contents) and settings matches; `settings.json` is written last and acts as the
commit marker, so an interrupted build is never mistaken for a finished one.

Default resize mode: `stretch`. The spec resized by stretching, and the design study measured 224 px
stretch at AUC 0.856 vs 224 px letterbox at 0.840 (padding shrinks the anatomy); letterbox only paid
off at 384 px. Radiographs in MURA are close to square-ish portrait crops, so stretching distorts little.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from mura.data.images import load_grayscale
from mura.data.index import read_index, write_index
from mura.errors import ImageDecodeError, MuraError
from mura.preprocessing import RESIZE_MODES, resize_image

CACHE_FORMAT = 1
DEFAULT_RESIZE = "stretch"
SETTINGS_FILE, IMAGES_FILE = "settings.json", "images.npy"
INDEX_FILE, FAILURES_FILE = "index.csv", "failures.csv"


@dataclass(frozen=True)
class CacheInfo:
    directory: Path
    images: int  # rows in the cache
    failed: int  # files reported in failures.csv and left out
    reused: bool  # True when an up-to-date cache was found and nothing was decoded
    seconds: float


@dataclass
class ImageCache:
    """An opened cache: `images[i]` is the row `index.iloc[i]` (uint8 [size, size], read-only memmap)."""

    directory: Path
    images: np.ndarray
    index: pd.DataFrame
    settings: dict

    @property
    def size(self) -> int:
        return int(self.settings["size"])

    def rows(self, split: str) -> np.ndarray:
        """Cache rows of one split (train / val / test)."""
        return self.index.index[self.index["split"] == split].to_numpy()


def fingerprint(frame: pd.DataFrame, size: int, resize: str) -> str:
    """Hash of what the cache depends on: the index rows, each file's size and mtime, and settings."""
    digest = hashlib.sha256(json.dumps({"format": CACHE_FORMAT, "size": size, "resize": resize}).encode())
    digest.update(pd.util.hash_pandas_object(frame.astype(str), index=False).to_numpy().tobytes())
    for path in frame["path"]:
        try:
            stat = os.stat(path)
            digest.update(f"{stat.st_size}:{stat.st_mtime_ns};".encode())
        except OSError:
            digest.update(b"missing;")
    return digest.hexdigest()


_worker_arrays: dict[str, np.ndarray] = {}


def _decode_chunk(
    array_path: str, start: int, paths: list[str], size: int, resize: str
) -> list[tuple[int, str]]:
    """Decode paths into rows start.. of the memmap at `array_path`; return (row, reason) of failures."""
    array = _worker_arrays.get(array_path)
    if array is None:
        _worker_arrays.clear()
        array = _worker_arrays[array_path] = np.load(array_path, mmap_mode="r+")
    failures = []
    for offset, path in enumerate(paths):
        try:
            array[start + offset] = resize_image(load_grayscale(path), size, resize)
        except ImageDecodeError as exc:
            failures.append((start + offset, exc.reason))
        except Exception as exc:  # noqa: BLE001 - one odd file must never abort a 40,000-image build
            failures.append((start + offset, f"{type(exc).__name__}: {exc}"))
    return failures  # no msync needed: the parent reads the same pages through the page cache


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def _load_settings(directory: Path) -> dict | None:
    try:
        return json.loads((directory / SETTINGS_FILE).read_text())
    except (OSError, ValueError):
        return None


def build_cache(
    index: str | Path | pd.DataFrame,
    out_dir: str | Path,
    size: int = 224,
    resize: str = DEFAULT_RESIZE,
    workers: int | None = None,
    progress: bool = True,
    force: bool = False,
) -> CacheInfo:
    """Decode, resize and store every image of the index; reuse an up-to-date cache (no decoding)."""
    started = time.perf_counter()
    if resize not in RESIZE_MODES:
        raise MuraError(f"resize mode must be one of {RESIZE_MODES}, got {resize!r}")
    if size < 8:
        raise MuraError(f"cache size must be at least 8 pixels, got {size}")
    frame = read_index(index) if not isinstance(index, pd.DataFrame) else index.reset_index(drop=True)
    if frame.empty:
        raise MuraError("the index has no rows: nothing to cache")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    print_key = fingerprint(frame, size, resize)
    old = _load_settings(out_dir)
    if not force and old and old.get("fingerprint") == print_key and (out_dir / IMAGES_FILE).exists():
        return CacheInfo(
            out_dir, old["counts"]["cached"], old["counts"]["failed"], True, time.perf_counter() - started
        )
    (out_dir / SETTINGS_FILE).unlink(missing_ok=True)  # from here on the directory is "not finished"

    n = len(frame)
    tmp_path = out_dir / f".{IMAGES_FILE}.tmp-{os.getpid()}.npy"
    np.lib.format.open_memmap(tmp_path, mode="w+", dtype=np.uint8, shape=(n, size, size)).flush()
    workers = max(1, min(workers or os.cpu_count() or 1, n))
    chunk = max(1, min(256, n // (workers * 8) or 1))
    paths = frame["path"].astype(str).tolist()
    failures: list[tuple[int, str]] = []
    bar = tqdm(total=n, unit="img", desc=f"cache {size}px", disable=not progress, smoothing=0.1)
    try:
        if workers == 1:
            for start in range(0, n, chunk):
                failures += _decode_chunk(str(tmp_path), start, paths[start : start + chunk], size, resize)
                bar.update(min(chunk, n - start))
        else:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                futures = {
                    pool.submit(_decode_chunk, str(tmp_path), s, paths[s : s + chunk], size, resize): min(
                        chunk, n - s
                    )
                    for s in range(0, n, chunk)
                }
                for future in as_completed(futures):
                    failures += future.result()
                    bar.update(futures[future])
        _worker_arrays.clear()
        bar.close()
        failed_rows = sorted(r for r, _ in failures)
        if failed_rows:
            keep = np.setdiff1d(np.arange(n), failed_rows)
            source = np.load(tmp_path, mmap_mode="r")
            compact_path = out_dir / f".{IMAGES_FILE}.compact-{os.getpid()}.npy"
            compact = np.lib.format.open_memmap(
                compact_path, mode="w+", dtype=np.uint8, shape=(len(keep), size, size)
            )
            for begin in range(0, len(keep), 4096):
                compact[begin : begin + 4096] = source[keep[begin : begin + 4096]]
            compact.flush()
            del source, compact
            os.replace(compact_path, tmp_path)
        else:
            keep = np.arange(n)
        cached = frame.iloc[keep].reset_index(drop=True)
        cached["cache_row"] = np.arange(len(cached))
        write_index(cached, out_dir / INDEX_FILE)
        failure_frame = pd.DataFrame(
            {
                "path": [paths[r] for r, _ in sorted(failures)],
                "reason": [reason for _, reason in sorted(failures)],
            }
        )
        _atomic_write_text(out_dir / FAILURES_FILE, failure_frame.to_csv(index=False))
        os.replace(tmp_path, out_dir / IMAGES_FILE)
    finally:
        bar.close()
        tmp_path.unlink(missing_ok=True)
    settings = {
        "format": CACHE_FORMAT,
        "size": size,
        "resize": resize,
        "fingerprint": print_key,
        "counts": {"indexed": n, "cached": int(len(keep)), "failed": len(failures)},
        "splits": {str(k): int(v) for k, v in cached["split"].value_counts().sort_index().items()},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    _atomic_write_text(out_dir / SETTINGS_FILE, json.dumps(settings, indent=1) + "\n")
    return CacheInfo(out_dir, int(len(keep)), len(failures), False, time.perf_counter() - started)


def open_cache(directory: str | Path) -> ImageCache:
    """Open a finished cache for reading; a clear error if it is missing, unfinished or inconsistent."""
    directory = Path(directory)
    if not directory.is_dir():
        raise MuraError(f"{directory}: cache directory not found (build it with `mura prepare`)")
    settings = _load_settings(directory)
    if settings is None:
        raise MuraError(
            f"{directory}: no valid {SETTINGS_FILE}; the cache is unfinished or corrupt "
            "(rerun `mura prepare`)"
        )
    try:
        images = np.load(directory / IMAGES_FILE, mmap_mode="r")
    except (OSError, ValueError) as exc:
        raise MuraError(f"{directory / IMAGES_FILE}: cannot open ({exc}); rerun `mura prepare`") from None
    index = read_index(directory / INDEX_FILE)
    size = int(settings.get("size", -1))
    if images.dtype != np.uint8 or images.shape != (len(index), size, size):
        raise MuraError(
            f"{directory}: images.npy is {images.dtype} {images.shape} but the index has "
            f"{len(index)} rows of {size}px; rerun `mura prepare`"
        )
    return ImageCache(directory, images, index, settings)

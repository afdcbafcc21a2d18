"""`CacheSettings`: what a cache's `settings.json` says, read once into one typed, frozen object.

Training, the Predictor and `mura prepare` used to read the raw JSON dict, each with its own fallback
for a missing key; now `from_dict` is the one place that knows the file's history:
- format 1 (before checksums): no `files` records and no `counts.warned`; read so that a cache of
  that format is reported as such (`find_damage`) and rebuilt, never trained on.
- format 2: `files` records each array/table's bytes, shape or rows, and SHA-256.
Every version so far stored the resize mode under `resize`; `resize_mode` (the name `Preprocessing`
uses in checkpoints) is read too, so a hand-written file with either name means the same thing.
`to_dict` gives back exactly the JSON that `mura prepare` writes (what feature-cache keys and
checkpoint provenance hash), so reading and writing a file changes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mura.preprocessing import RESIZE_MODES

DEFAULT_RESIZE = "stretch"  # see mura.data.cache for why


@dataclass(frozen=True)
class FileRecord:
    """What settings.json records of one cache file: enough to notice truncation, swaps and edits."""

    bytes: int
    sha256: str
    shape: tuple[int, ...] | None = None  # arrays (images.npy)
    dtype: str | None = None  # arrays
    rows: int | None = None  # tables (index.csv)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FileRecord:
        shape = data.get("shape")
        return cls(
            bytes=int(data["bytes"]),
            sha256=str(data["sha256"]),
            shape=None if shape is None else tuple(int(s) for s in shape),
            dtype=None if data.get("dtype") is None else str(data["dtype"]),
            rows=None if data.get("rows") is None else int(data["rows"]),
        )

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"bytes": self.bytes}
        if self.shape is not None:
            data["shape"] = list(self.shape)
        if self.dtype is not None:
            data["dtype"] = self.dtype
        if self.rows is not None:
            data["rows"] = self.rows
        return {**data, "sha256": self.sha256}


@dataclass(frozen=True)
class CacheCounts:
    """Images in the index, kept in the cache, left out (failures.csv) and kept but flagged (warnings.csv)."""

    indexed: int
    cached: int
    failed: int
    warned: int = 0  # format 1 did not count warnings

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CacheCounts:
        return cls(
            indexed=int(data["indexed"]),
            cached=int(data["cached"]),
            failed=int(data["failed"]),
            warned=int(data.get("warned", 0)),
        )

    def to_dict(self) -> dict[str, int]:
        return {"indexed": self.indexed, "cached": self.cached, "failed": self.failed, "warned": self.warned}


@dataclass(frozen=True)
class CacheSettings:
    """A finished cache's settings: side and resize mode of its images, the fingerprint of its inputs,
    and the records `open_cache` / `mura prepare` check the files against."""

    format: int
    size: int
    resize: str
    fingerprint: str
    counts: CacheCounts
    splits: Mapping[str, int] = field(default_factory=dict)
    files: Mapping[str, FileRecord] = field(default_factory=dict)  # empty in format 1
    created: str = ""

    def __post_init__(self) -> None:
        if self.resize not in RESIZE_MODES:
            raise ValueError(f"resize mode {self.resize!r} is not one of {RESIZE_MODES}")

    @property
    def input_spec(self) -> tuple[int, str]:
        """(size, resize mode): what a model's preprocessing must match to read this cache."""
        return self.size, self.resize

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CacheSettings:
        """Any settings.json `mura prepare` has written; KeyError, TypeError or ValueError if not one."""
        return cls(
            format=int(data["format"]),
            size=int(data["size"]),
            resize=str(data.get("resize", data.get("resize_mode", DEFAULT_RESIZE))),
            fingerprint=str(data["fingerprint"]),
            counts=CacheCounts.from_dict(data["counts"]),
            splits={str(k): int(v) for k, v in data.get("splits", {}).items()},
            files={str(k): FileRecord.from_dict(v) for k, v in data.get("files", {}).items()},
            created=str(data.get("created", "")),
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of settings.json (format-1 files gain only `counts.warned`: 0)."""
        data: dict[str, Any] = {
            "format": self.format,
            "size": self.size,
            "resize": self.resize,
            "fingerprint": self.fingerprint,
            "counts": self.counts.to_dict(),
            "splits": dict(self.splits),
        }
        if self.files:
            data["files"] = {name: record.to_dict() for name, record in self.files.items()}
        if self.created:
            data["created"] = self.created
        return data

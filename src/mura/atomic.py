"""Atomic file writes: a reader (or a crash) sees the old file or the new one, never half of one.

Every file the toolkit writes that someone may rely on (checkpoints, caches, indexes, reports,
exports) goes through `atomic_path`: the content is written to a temporary file in the same folder,
flushed to disk with fsync, then renamed over the target; on any failure, Ctrl-C included, the
temporary file is removed. Temporary names start with `.` and carry the writer's pid, so a file
left by a process killed with -9 can be recognised and cleaned (`remove_stale_temporaries`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

TEMP_MARK = ".tmp-"
_TEMP_PATTERN = re.compile(rf"^\..+{re.escape(TEMP_MARK)}(\d+)(\..*)?$")


def temporary_name(path: Path) -> Path:
    """The temporary sibling of `path` this process writes to (suffix kept: numpy and torch care)."""
    return path.with_name(f".{path.stem}{TEMP_MARK}{os.getpid()}{path.suffix}")


def fsync_dir(directory: Path) -> None:
    """Make a new name (a rename, a new file) in `directory` durable; no-op where folders cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write; on success it is fsynced and renamed to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    try:
        yield tmp
        fsync_file(tmp)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes(path: str | Path, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(directory: str | Path) -> list[Path]:
    """Delete temporary files in `directory` whose writer process no longer exists (killed with -9)."""
    removed = []
    directory = Path(directory)
    if not directory.is_dir():
        return removed
    for entry in directory.iterdir():
        match = _TEMP_PATTERN.match(entry.name)
        if (
            match
            and entry.is_file()
            and int(match.group(1)) != os.getpid()
            and not _pid_alive(int(match.group(1)))
        ):
            entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed

"""The DICOM node's spool: received instances on disk, one folder per study, safe across crashes.

Layout under the spool root (every move is a `rename` inside one file system, so a crash leaves each
study wholly in one place):

    incoming/<StudyInstanceUID>/<SOPInstanceUID>.dcm   instances as received, still arriving
    work/<StudyInstanceUID>.<stamp>/                   a quiet study, claimed for analysis
    failed/<StudyInstanceUID>.<stamp>/                 a study whose analysis raised an unexpected error

A C-STORE is answered "success" only after `store` returns: the bytes are written through
`mura.atomic` (temp file, fsync, rename, folder fsynced), so an acknowledged instance survives a power
cut.
A study is claimed once no instance has arrived for it for the quiet period; instances of the same
study arriving later start a new incoming folder (and a second analysis) instead of racing the first.
"""

from __future__ import annotations

import os
import re
import shutil
import threading
import time
from pathlib import Path

from mura.atomic import fsync_dir, write_bytes

UID_PATTERN = re.compile(r"^[0-9]+(\.[0-9]+)*$")


def short_uid(uid: str, keep: int = 6) -> str:
    """`1.2.826.0.1.3680043.8.498.1234567` -> `1.2.82…234567`: enough to tell studies apart in a log."""
    return uid if len(uid) <= 2 * keep + 1 else f"{uid[:keep]}…{uid[-keep:]}"


def study_of(folder: Path) -> str:
    """The StudyInstanceUID of a claimed folder (`<uid>.<stamp>`) or an incoming one (`<uid>`)."""
    return folder.name.rsplit(".", 1)[0] if folder.parent.name != "incoming" else folder.name


class Spool:
    """Received instances per study; thread-safe (C-STOREs arrive on the association threads)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.incoming = self.root / "incoming"
        self.work = self.root / "work"
        self.failed = self.root / "failed"
        for folder in (self.incoming, self.work, self.failed):
            folder.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._last_received: dict[str, float] = {}
        now = time.monotonic()
        for study in self.incoming.iterdir():  # left by an earlier run: quiet from now on
            if study.is_dir():
                for leftover in study.glob(".*"):  # temporaries of writes never acknowledged
                    leftover.unlink(missing_ok=True)
                self._last_received[study.name] = now

    def store(self, study_uid: str, sop_instance_uid: str, data: bytes) -> Path:
        """Put one received instance on disk durably; ValueError for a UID that is not a DICOM UID."""
        for uid in (study_uid, sop_instance_uid):
            if not UID_PATTERN.match(uid) or len(uid) > 64:
                raise ValueError(f"invalid UID {uid!r}")
        with self._lock:
            folder = self.incoming / study_uid
            if not folder.is_dir():
                folder.mkdir()
                fsync_dir(self.incoming)
            path = write_bytes(folder / f"{sop_instance_uid}.dcm", data)
            self._last_received[study_uid] = time.monotonic()
        return path

    def quiet_studies(self, quiet_seconds: float) -> list[str]:
        """Incoming studies with no instance for `quiet_seconds`, oldest first."""
        now = time.monotonic()
        with self._lock:
            ready = [(t, uid) for uid, t in self._last_received.items() if now - t >= quiet_seconds]
        return [uid for _, uid in sorted(ready)]

    def claim(self, study_uid: str) -> Path | None:
        """Move an incoming study to `work/` (atomically with respect to `store`); None if it is gone."""
        with self._lock:
            self._last_received.pop(study_uid, None)
            target = self.work / f"{study_uid}.{time.time_ns()}"
            try:
                os.rename(self.incoming / study_uid, target)
            except FileNotFoundError:  # removed by hand meanwhile: nothing to analyse
                return None
            fsync_dir(self.incoming)
            fsync_dir(self.work)
        return target

    def claimed(self) -> list[Path]:
        """Claimed studies not yet analysed (after a restart: the ones the last run did not finish)."""
        return sorted((p for p in self.work.iterdir() if p.is_dir()), key=lambda p: p.name.rsplit(".", 1)[-1])

    def instances(self, claimed: Path) -> list[Path]:
        return sorted(p for p in claimed.iterdir() if p.is_file() and not p.name.startswith("."))

    def waiting(self) -> int:
        """Studies still receiving or waiting for their quiet period."""
        with self._lock:
            return len(self._last_received)

    def set_aside(self, claimed: Path) -> Path:
        """Keep a study whose analysis failed unexpectedly for inspection, out of the work queue."""
        target = self.failed / claimed.name
        os.rename(claimed, target)
        fsync_dir(self.work)
        return target

    @staticmethod
    def remove(claimed: Path) -> None:
        shutil.rmtree(claimed, ignore_errors=True)
        fsync_dir(claimed.parent)

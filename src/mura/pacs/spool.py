"""The DICOM node's spool: received instances on disk, one folder per study, safe across crashes.

Layout under the spool root (every move is a `rename` inside one file system, so a crash leaves each
study wholly in one place):

    incoming/<StudyInstanceUID>/<SOPInstanceUID>.dcm   instances as received, still arriving
    work/<StudyInstanceUID>.<stamp>/                   a quiet study, claimed for analysis
    failed/<StudyInstanceUID>.<stamp>/                 a study whose analysis raised an unexpected error
    analysed/<StudyInstanceUID>/                       the instances of a study's last analysis and
                                                       `results.json` (what its results were), kept so
                                                       a late view re-analyses the whole study

A C-STORE is answered "success" only after `store` returns: the bytes are written through
`mura.atomic` (temp file, fsync, rename, folder fsynced), so an acknowledged instance survives a power
cut.
A study is claimed once no instance has arrived for it for the quiet period (or once it has been
receiving for longer than the node's maximum age); instances of the same study arriving later start a
new incoming folder instead of racing the first. When that one is claimed, the instances kept in
`analysed/` join it (`merge_analysed`), so the study is analysed whole again and its new report can
replace the earlier one. `analysed/` entries are kept for the node's incoming maximum age, and count
towards the quota: the oldest are dropped first when a store would exceed it.

What it holds is patient data: folders are 0700 and files 0600 (`mura.pacs.private_files`), a root
folder another user could write to is refused, received-but-unanalysed bytes are held under a quota
(a store beyond it raises `SpoolFull`, which the node answers "Out of Resources"), and `failed/` is
emptied of entries past their maximum age or beyond its own quota.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import threading
import time
from pathlib import Path
from typing import NamedTuple

from mura.atomic import fsync_dir
from mura.pacs.private_files import private_folder, write_private

GIB = 1 << 30
RESULTS_RECORD = "results.json"
UID_PATTERN = re.compile(r"^[0-9]+(\.[0-9]+)*$")


class SpoolFull(Exception):
    """A received instance would take the spool beyond its quota (answered "Out of Resources")."""


class Removed(NamedTuple):
    """An entry of `failed/` removed by `Spool.expire_failed`: its age, size and whether the quota did it."""

    path: Path
    age_seconds: float
    size_bytes: int
    over_quota: bool


def short_uid(uid: str, keep: int = 6) -> str:
    """`1.2.826.0.1.3680043.8.498.1234567` -> `1.2.82…234567`: enough to tell studies apart in a log."""
    return uid if len(uid) <= 2 * keep + 1 else f"{uid[:keep]}…{uid[-keep:]}"


def study_of(folder: Path) -> str:
    """The StudyInstanceUID of a claimed folder (`<uid>.<stamp>`) or an incoming one (`<uid>`)."""
    return folder.name.rsplit(".", 1)[0] if folder.parent.name != "incoming" else folder.name


def folder_bytes(folder: Path) -> int:
    """Bytes of the files under `folder` (0 for one removed meanwhile)."""
    total = 0
    for path in folder.rglob("*"):
        try:
            total += path.stat().st_size if path.is_file() else 0
        except OSError:  # removed while counting
            continue
    return total


class Spool:
    """Received instances per study; thread-safe (C-STOREs arrive on the association threads).

    `quota_bytes` bounds what is received but not yet analysed (`incoming/` and `work/`).
    """

    def __init__(self, root: Path, quota_bytes: int) -> None:
        self.root = private_folder(Path(root))
        self.incoming = private_folder(self.root / "incoming")
        self.work = private_folder(self.root / "work")
        self.failed = private_folder(self.root / "failed")
        self.analysed = private_folder(self.root / "analysed")
        self.quota_bytes = quota_bytes
        self._lock = threading.Lock()
        self._last_received: dict[str, float] = {}
        self._first_received: dict[str, float] = {}
        now = time.monotonic()
        for study in self.incoming.iterdir():  # left by an earlier run: quiet from now on
            if study.is_dir():
                for leftover in study.glob(".*"):  # temporaries of writes never acknowledged
                    leftover.unlink(missing_ok=True)
                self._last_received[study.name] = self._first_received[study.name] = now
        self._bytes = folder_bytes(self.incoming) + folder_bytes(self.work) + folder_bytes(self.analysed)

    @property
    def received_bytes(self) -> int:
        """Bytes received and not yet analysed (what the quota bounds)."""
        with self._lock:
            return self._bytes

    def store(self, study_uid: str, sop_instance_uid: str, data: bytes) -> Path:
        """Put one received instance on disk durably (0600); ValueError for a UID that is not a DICOM
        UID, SpoolFull if it would take the spool beyond its quota."""
        for uid in (study_uid, sop_instance_uid):
            if not UID_PATTERN.match(uid) or len(uid) > 64:
                raise ValueError(f"invalid UID {uid!r}")
        with self._lock:
            folder = self.incoming / study_uid
            path = folder / f"{sop_instance_uid}.dcm"
            replaced = path.stat().st_size if path.is_file() else 0  # the same instance sent again
            self._make_room(len(data) - replaced)
            if self._bytes - replaced + len(data) > self.quota_bytes:
                raise SpoolFull(
                    f"{self._bytes / GIB:.2f} GiB received and not yet analysed, quota "
                    f"{self.quota_bytes / GIB:.2f} GiB"
                )
            if not folder.is_dir():
                folder.mkdir(mode=0o700)
                fsync_dir(self.incoming)
            write_private(path, data)
            self._bytes += len(data) - replaced
            now = time.monotonic()
            self._last_received[study_uid] = now
            self._first_received.setdefault(study_uid, now)
        return path

    def _make_room(self, needed: int) -> None:
        """Drop kept `analysed/` studies, oldest first, while `needed` more bytes would exceed the quota
        (they only serve late views; received instances come first). Called holding the lock."""
        kept = sorted((p.stat().st_mtime, p) for p in self.analysed.iterdir() if p.is_dir())
        for _, folder in kept:
            if self._bytes + needed <= self.quota_bytes:
                return
            self._bytes -= folder_bytes(folder)
            shutil.rmtree(folder, ignore_errors=True)

    def keep_analysed(self, claimed: Path, record: dict | None) -> None:
        """After a claimed study's results are in the outbox: keep its instances and `record` (what its
        results were) for a late view, replacing what was kept before; without a record, remove it."""
        if record is None:
            self.remove(claimed)
            return
        write_private(claimed / RESULTS_RECORD, json.dumps(record).encode())
        target = self.analysed / study_of(claimed)
        with self._lock:
            self._bytes += (claimed / RESULTS_RECORD).stat().st_size
            if target.exists():
                self._bytes -= folder_bytes(target)
                shutil.rmtree(target, ignore_errors=True)
            os.rename(claimed, target)
            os.utime(target)
        fsync_dir(self.work)
        fsync_dir(self.analysed)

    def merge_analysed(self, claimed: Path) -> dict | None:
        """Move the instances kept from the study's last analysis into `claimed` (an instance sent again
        keeps its new copy) and return that analysis's record; None when nothing was kept."""
        kept = self.analysed / study_of(claimed)
        with self._lock:  # not dropped by `_make_room` half-way
            try:
                record = json.loads((kept / RESULTS_RECORD).read_text())
            except (OSError, ValueError):  # nothing kept, or a record cut short: a first analysis
                return None
            for path in kept.iterdir():
                if path.suffix == ".dcm" and not (claimed / path.name).exists():
                    os.rename(path, claimed / path.name)
            self._bytes -= folder_bytes(kept)
            shutil.rmtree(kept, ignore_errors=True)
        fsync_dir(claimed)
        fsync_dir(self.analysed)
        return record

    def expire_analysed(self, max_age_seconds: float) -> list[Path]:
        """Remove `analysed/` studies kept longer than `max_age_seconds`; return them. A view of such a
        study arriving later is analysed on its own."""
        now, removed = time.time(), []
        with self._lock:
            for folder in self.analysed.iterdir():
                if folder.is_dir() and now - folder.stat().st_mtime > max_age_seconds:
                    self._bytes -= folder_bytes(folder)
                    shutil.rmtree(folder, ignore_errors=True)
                    removed.append(folder)
        return removed

    def quiet_studies(self, quiet_seconds: float) -> list[str]:
        """Incoming studies with no instance for `quiet_seconds`, oldest first."""
        now = time.monotonic()
        with self._lock:
            ready = [(t, uid) for uid, t in self._last_received.items() if now - t >= quiet_seconds]
        return [uid for _, uid in sorted(ready)]

    def overdue(self, max_age_seconds: float, quiet_seconds: float) -> list[str]:
        """Studies still receiving (not quiet) `max_age_seconds` after their first instance, oldest first."""
        now = time.monotonic()
        with self._lock:
            late = [
                (first, uid)
                for uid, first in self._first_received.items()
                if now - first >= max_age_seconds and now - self._last_received[uid] < quiet_seconds
            ]
        return [uid for _, uid in sorted(late)]

    def claim(self, study_uid: str) -> Path | None:
        """Move an incoming study to `work/` (atomically with respect to `store`); None if it is gone."""
        with self._lock:
            self._last_received.pop(study_uid, None)
            self._first_received.pop(study_uid, None)
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

    def set_aside(self, folder: Path) -> Path:
        """Keep a claimed study whose analysis failed unexpectedly, or results no destination took, in
        `failed/` for inspection (out of every queue); its age there counts from now."""
        size = folder_bytes(folder) if folder.parent == self.work else 0
        target = self.failed / folder.name
        os.rename(folder, target)
        os.utime(target)
        fsync_dir(folder.parent)
        fsync_dir(self.failed)
        with self._lock:
            self._bytes -= size
        return target

    def remove(self, claimed: Path) -> None:
        """Delete a claimed study (analysed, or with nothing to analyse)."""
        size = folder_bytes(claimed)
        shutil.rmtree(claimed, ignore_errors=True)
        fsync_dir(claimed.parent)
        with self._lock:
            self._bytes -= size

    def expire_failed(self, max_age_seconds: float, quota_bytes: int) -> list[Removed]:
        """Remove `failed/` entries older than `max_age_seconds`, then the oldest ones while it holds
        more than `quota_bytes`; return what was removed."""
        now = time.time()
        entries = sorted((p.stat().st_mtime, p) for p in self.failed.iterdir() if p.is_dir())
        sizes = {path: folder_bytes(path) for _, path in entries}
        total = sum(sizes.values())
        removed = []
        for mtime, path in entries:  # oldest first
            age, over_quota = now - mtime, total > quota_bytes
            if age <= max_age_seconds and not over_quota:
                break
            shutil.rmtree(path, ignore_errors=True)
            total -= sizes[path]
            removed.append(Removed(path, age, sizes[path], over_quota and age <= max_age_seconds))
        if removed:
            fsync_dir(self.failed)
        return removed

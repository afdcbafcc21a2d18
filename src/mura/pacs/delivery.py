"""Delivering a study's results (SR + SCs) to a PACS: by C-STORE and/or DICOMweb STOW-RS, with an outbox.

Results are written to `outbox/<study>.<stamp>/` (files + `manifest.json`) before anything is sent, so a
destination that is down, or a restart, loses nothing: each entry is retried with exponential backoff
until every destination has taken it, then removed. A destination that took an entry gets a marker
file, so a retry after a partial success sends only to the others.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pydicom

from mura.atomic import fsync_dir, fsync_file, write_bytes
from mura.errors import MuraError
from mura.pacs.spool import short_uid, study_of

log = logging.getLogger("mura.dicom_node")

MANIFEST = "manifest.json"
TEMP_PREFIX = ".tmp-"
DELIVERED_PREFIX = ".delivered-"
FORWARD_PATTERN = re.compile(r"^(?P<aet>[^@]{1,16})@(?P<host>[^:@]+):(?P<port>[0-9]{1,5})$")
SUCCESS_OR_WARNING = {0x0000, 0x0001, 0x0107, 0x0116, 0xB000, 0xB006, 0xB007}


class DeliveryError(Exception):
    """A destination did not take the results this time (down, refused, timed out); retried later."""


class Destination(Protocol):
    name: str  # stable across restarts: names the marker file of a finished delivery

    def send(self, files: Sequence[Path]) -> None: ...


@dataclass
class CStoreDestination:
    """A DICOM Storage SCP (the PACS) reached by C-STORE."""

    ae_title: str
    host: str
    port: int
    calling_ae_title: str = "MURA"
    timeout: float = 30.0

    @property
    def name(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"

    def send(self, files: Sequence[Path]) -> None:
        from pynetdicom import AE

        datasets = [pydicom.dcmread(path) for path in files]
        ae = AE(ae_title=self.calling_ae_title)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = self.timeout
        ae.connection_timeout = min(self.timeout, 10.0)
        for sop_class in dict.fromkeys(str(ds.SOPClassUID) for ds in datasets):
            syntaxes = {
                str(ds.file_meta.TransferSyntaxUID) for ds in datasets if str(ds.SOPClassUID) == sop_class
            }
            ae.add_requested_context(sop_class, sorted(syntaxes))
        assoc = ae.associate(self.host, self.port, ae_title=self.ae_title)
        if not assoc.is_established:
            raise DeliveryError(f"{self.name}: association not accepted (peer down or refused)")
        try:
            for path, ds in zip(files, datasets, strict=True):
                status = assoc.send_c_store(ds)
                code = int(status.Status) if status and "Status" in status else None
                if code is None:
                    raise DeliveryError(f"{self.name}: no answer to the C-STORE of {path.name}")
                if code not in SUCCESS_OR_WARNING:
                    raise DeliveryError(
                        f"{self.name}: C-STORE of {path.name} failed with status 0x{code:04X}"
                    )
        finally:
            if assoc.is_established:
                assoc.release()


@dataclass
class StowDestination:
    """A DICOMweb server's STOW-RS endpoint (e.g. Orthanc's `/dicom-web`)."""

    url: str
    timeout: float = 30.0

    @property
    def name(self) -> str:
        return self.url

    def send(self, files: Sequence[Path]) -> None:
        import requests
        from dicomweb_client.api import DICOMwebClient

        session = requests.Session()
        client = DICOMwebClient(url=self.url, session=session, timeout=self.timeout)
        client.set_http_retry_params(retry=False)  # the outbox retries, with backoff
        try:
            client.store_instances([pydicom.dcmread(path) for path in files])
        except (requests.RequestException, OSError) as exc:
            raise DeliveryError(f"{self.url}: STOW-RS failed: {str(exc).splitlines()[0][:200]}") from None
        finally:
            session.close()


def parse_forward(text: str, calling_ae_title: str) -> CStoreDestination:
    """`AET@HOST:PORT` -> a C-STORE destination; MuraError naming the expected form otherwise."""
    match = FORWARD_PATTERN.match(text.strip())
    if not match or not 0 < int(match["port"]) < 65536:
        raise MuraError(f"destination {text!r}: expected AET@HOST:PORT, e.g. ORTHANC@127.0.0.1:4242")
    return CStoreDestination(match["aet"], match["host"], int(match["port"]), calling_ae_title)


@contextmanager
def building(final: Path) -> Iterator[Path]:
    """A temp folder next to `final`, renamed to `final` when the block succeeds, removed if it fails."""
    tmp = final.with_name(f"{TEMP_PREFIX}{final.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        for path in tmp.iterdir():
            if path.is_file():
                fsync_file(path)
        os.rename(tmp, final)
        fsync_dir(final.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@dataclass
class OutboxEntry:
    folder: Path
    manifest: dict[str, Any]
    attempts: int = 0
    next_attempt: float = 0.0  # time.monotonic()


@dataclass
class Outbox:
    """Results waiting for delivery, one folder per analysed study; one thread calls `deliver_due`."""

    folder: Path
    destinations: Sequence[Destination]
    first_retry_seconds: float = 1.0
    max_retry_seconds: float = 60.0
    on_delivered: Callable[[OutboxEntry], None] = lambda entry: None
    _retry_state: dict[str, tuple[int, float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        for leftover in self.folder.glob(f"{TEMP_PREFIX}*"):  # a write cut short: re-made from work/
            shutil.rmtree(leftover, ignore_errors=True)

    def has(self, name: str) -> bool:
        return (self.folder / name).is_dir()

    def add(self, name: str, write: Callable[[Path], Sequence[Path]], summary: dict[str, Any]) -> Path:
        """Write a study's results into a new entry (whole or not at all) with its manifest."""
        final = self.folder / name
        with building(final) as tmp:
            files = [Path(p) for p in write(tmp)]
            manifest = {**summary, "files": [p.relative_to(tmp).as_posix() for p in files]}
            write_bytes(tmp / MANIFEST, json.dumps(manifest, indent=1).encode())
        return final

    def entries(self) -> list[OutboxEntry]:
        found = []
        for folder in sorted(p for p in self.folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
            try:
                manifest = json.loads((folder / MANIFEST).read_text())
            except (OSError, ValueError):
                log.error("outbox %s: unreadable %s; left in place", folder.name, MANIFEST)
                continue
            attempts, next_attempt = self._retry_state.get(folder.name, (0, 0.0))
            found.append(OutboxEntry(folder, manifest, attempts, next_attempt))
        return found

    def pending(self) -> int:
        return len([p for p in self.folder.iterdir() if p.is_dir() and not p.name.startswith(".")])

    def deliver_due(self) -> list[OutboxEntry]:
        """Try every entry whose retry time has come; return those now delivered everywhere (removed)."""
        delivered = []
        now = time.monotonic()
        for entry in self.entries():
            if entry.next_attempt > now:
                continue
            if self._deliver(entry):
                self._retry_state.pop(entry.folder.name, None)
                shutil.rmtree(entry.folder, ignore_errors=True)
                fsync_dir(self.folder)
                self.on_delivered(entry)
                delivered.append(entry)
        return delivered

    def _deliver(self, entry: OutboxEntry) -> bool:
        files = [entry.folder / name for name in entry.manifest["files"]]
        for destination in self.destinations:
            marker = entry.folder / f"{DELIVERED_PREFIX}{_safe_name(destination.name)}"
            if marker.exists():
                continue
            try:
                destination.send(files)
            except Exception as exc:  # down, refused, or a file it cannot take: retried, never blocks others
                attempts = entry.attempts + 1
                wait = min(self.max_retry_seconds, self.first_retry_seconds * 2 ** (attempts - 1))
                self._retry_state[entry.folder.name] = (attempts, time.monotonic() + wait)
                study = short_uid(study_of(entry.folder))
                log.warning("study %s: delivery failed (%s); retry %d in %.0f s", study, exc, attempts, wait)
                return False
            write_bytes(marker, b"")
        return True


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)[:100] or "destination"

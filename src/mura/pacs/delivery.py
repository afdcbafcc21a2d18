"""Delivering a study's results (SR + SCs) to a PACS: by C-STORE and/or DICOMweb STOW-RS, with an outbox.

Results are written to `outbox/<study>.<stamp>/` (files + `manifest.json`) before anything is sent, so a
destination that is down, or a restart, loses nothing: each entry is retried with exponential backoff
until every destination has taken it, then removed. A destination that took an entry gets a marker
file, so a retry after a partial success sends only to the others. An entry no destination took
within the node's maximum age is handed to `failed/` (`Outbox.expire`); the outbox keeps a running
total of its bytes so the node can stop taking new studies while it is over its quota.

Destinations are named in logs by `name`, which never carries a secret: C-STORE can go over DICOM TLS
(`mura.pacs.tls`), STOW-RS credentials travel only in the Authorization header, and every error text
is passed through `mura.pacs.credentials.redact` before it is logged.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pydicom

from mura.atomic import fsync_dir, fsync_file
from mura.errors import MuraError
from mura.pacs.credentials import BasicCredentials, check_url_has_no_credentials, redact
from mura.pacs.private_files import FOLDER_MODE, make_private, private_folder, write_private
from mura.pacs.spool import folder_bytes, short_uid, study_of

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
    """A DICOM Storage SCP (the PACS) reached by C-STORE; over DICOM TLS when given a `tls` context
    (`mura.pacs.tls.forward_context`), which checks the peer's certificate against `host`."""

    ae_title: str
    host: str
    port: int
    calling_ae_title: str = "MURA"
    timeout: float = 30.0
    tls: ssl.SSLContext | None = None

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
        tls_args = (self.tls, self.host) if self.tls is not None else None
        assoc = ae.associate(self.host, self.port, ae_title=self.ae_title, tls_args=tls_args)
        if not assoc.is_established:
            why = "peer down, refused, or TLS handshake failed" if tls_args else "peer down or refused"
            raise DeliveryError(f"{self.name}: association not accepted ({why})")
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
    """A DICOMweb server's STOW-RS endpoint (e.g. Orthanc's `/dicom-web`), with HTTP Basic
    `credentials` when it needs them; a URL carrying a user name or password is refused."""

    url: str
    credentials: BasicCredentials | None = None
    timeout: float = 30.0

    def __post_init__(self) -> None:
        check_url_has_no_credentials(self.url)

    @property
    def name(self) -> str:
        return redact(self.url)

    def send(self, files: Sequence[Path]) -> None:
        import requests
        from dicomweb_client.api import DICOMwebClient

        session = requests.Session()
        if self.credentials is not None:
            session.auth = (self.credentials.user, self.credentials.password)
        client = DICOMwebClient(url=self.url, session=session, timeout=self.timeout)
        client.set_http_retry_params(retry=False)  # the outbox retries, with backoff
        try:
            client.store_instances([pydicom.dcmread(path) for path in files])
        except (requests.RequestException, OSError) as exc:
            secrets = (self.credentials.password,) if self.credentials else ()
            reason = redact(str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__, secrets)
            raise DeliveryError(f"{self.name}: STOW-RS failed: {reason}") from None
        finally:
            session.close()


def parse_forward(text: str, calling_ae_title: str, tls: ssl.SSLContext | None = None) -> CStoreDestination:
    """`AET@HOST:PORT` -> a C-STORE destination; MuraError naming the expected form otherwise."""
    match = FORWARD_PATTERN.match(text.strip())
    if not match or not 0 < int(match["port"]) < 65536:
        raise MuraError(f"destination {text!r}: expected AET@HOST:PORT, e.g. ORTHANC@127.0.0.1:4242")
    return CStoreDestination(match["aet"], match["host"], int(match["port"]), calling_ae_title, tls=tls)


@contextmanager
def building(final: Path) -> Iterator[Path]:
    """A private temp folder next to `final`, renamed to `final` when the block succeeds, removed if it
    fails; every file written into it is made 0600 (whoever wrote it)."""
    tmp = final.with_name(f"{TEMP_PREFIX}{final.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(mode=FOLDER_MODE)
    try:
        yield tmp
        for path in tmp.iterdir():
            if path.is_file():
                make_private(path)
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
    """Results waiting for delivery, one folder per analysed study; one thread calls `deliver_due`
    and `expire`, another `add`."""

    folder: Path
    destinations: Sequence[Destination]
    first_retry_seconds: float = 1.0
    max_retry_seconds: float = 60.0
    on_delivered: Callable[[OutboxEntry], None] = lambda entry: None
    _retry_state: dict[str, tuple[int, float]] = field(default_factory=dict)
    _bytes: int = field(default=0, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    def __post_init__(self) -> None:
        private_folder(self.folder)
        for leftover in self.folder.glob(f"{TEMP_PREFIX}*"):  # a write cut short: re-made from work/
            shutil.rmtree(leftover, ignore_errors=True)
        self._bytes = folder_bytes(self.folder)

    @property
    def size_bytes(self) -> int:
        """Bytes of the results waiting for delivery (what the node's outbox quota bounds)."""
        with self._lock:
            return self._bytes

    def _count(self, delta: int) -> None:
        with self._lock:
            self._bytes += delta

    def has(self, name: str) -> bool:
        return (self.folder / name).is_dir()

    def add(self, name: str, write: Callable[[Path], Sequence[Path]], summary: dict[str, Any]) -> Path:
        """Write a study's results into a new entry (whole or not at all) with its manifest."""
        final = self.folder / name
        with building(final) as tmp:
            files = [Path(p) for p in write(tmp)]
            manifest = {**summary, "files": [p.relative_to(tmp).as_posix() for p in files]}
            write_private(tmp / MANIFEST, json.dumps(manifest, indent=1).encode())
        self._count(folder_bytes(final))
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
                size = folder_bytes(entry.folder)
                shutil.rmtree(entry.folder, ignore_errors=True)
                fsync_dir(self.folder)
                self._count(-size)
                self.on_delivered(entry)
                delivered.append(entry)
        return delivered

    def expire(
        self, max_age_seconds: float, set_aside: Callable[[Path], Path]
    ) -> list[tuple[OutboxEntry, Path]]:
        """Hand every entry analysed more than `max_age_seconds` ago (and still not delivered) to
        `set_aside` (which moves it out of the outbox); return each with where it went."""
        now, expired = time.time(), []
        for entry in self.entries():
            if now - float(entry.manifest.get("claimed_at", now)) <= max_age_seconds:
                continue
            size = folder_bytes(entry.folder)
            expired.append((entry, set_aside(entry.folder)))
            self._retry_state.pop(entry.folder.name, None)
            self._count(-size)
        return expired

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
                reason = redact(str(exc))
                log.warning(
                    "study %s: delivery failed (%s); retry %d in %.0f s", study, reason, attempts, wait
                )
                return False
            write_private(marker, b"")
        return True


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)[:100] or "destination"

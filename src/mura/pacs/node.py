"""`mura dicom-node`: a DICOM Storage SCP that analyses each study it receives and sends the results on.

Flow: C-STORE -> spool (durable before "success") -> study quiet for `quiet_seconds` -> claimed ->
analysed (`mura.pacs.study.study_results`: SR + one SC per good view) -> outbox -> C-STORE
and/or STOW-RS to the destinations, retried with backoff -> outbox entry removed.

A late view re-analyses the whole study: each analysis's instances stay in the spool's `analysed/` for
`incoming_max_age_hours`, join the late ones, and the new SR replaces the earlier one (Predecessor
Documents Sequence). Holding results until a study is "complete" was not chosen: DICOM never says
when a study is complete, so every study would wait for a guess that can still be wrong.

Threads: pynetdicom runs one thread per association (they only write to the spool); the main thread
analyses quiet studies one at a time (one model, no contention); a delivery thread empties the outbox,
so a PACS that is down never holds up receiving or analysing. On SIGTERM the listening socket closes
(no new associations), open associations get `drain_seconds` to finish, and whatever is spooled stays
on disk for the next start, which also re-analyses claimed studies and re-sends the outbox.

Safety: the spool is private to the node's user (`mura.pacs.private_files`), every folder has a quota
and a maximum age (`mura.pacs.retention`), the listener can require DICOM TLS with client certificates
(`mura.pacs.tls`), and calling AE titles can be limited to a list. AE titles alone authenticate no
one: without TLS client certificates, whoever reaches the port can send studies.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mura.errors import MuraError
from mura.pacs.credentials import redact
from mura.pacs.delivery import Destination, Outbox, OutboxEntry
from mura.pacs.node_settings import NodeSettings
from mura.pacs.results import PriorResults, StudyResults
from mura.pacs.retention import HOUR, SWEEP_SECONDS, OutboxGate, sweep
from mura.pacs.scp import storage_scp
from mura.pacs.spool import GIB, Spool, SpoolFull, short_uid, study_of
from mura.pacs.tls import listener_context

log = logging.getLogger("mura.dicom_node")

STATUS_SUCCESS = 0x0000
STATUS_OUT_OF_RESOURCES = 0xA700
STATUS_CANNOT_UNDERSTAND = 0xC000


Analyse = Callable[[list[Path], PriorResults | None], StudyResults]


class DicomNode:
    """A Storage SCP that turns each received study into results for the PACS, and never loses one.

    Built from validated `settings`, an `analyse` callable (instance paths of one study -> its
    `StudyResults`, given the study's earlier results when a late view re-analyses it; the caller
    loads the model once and closes over it, so the node itself holds no
    model) and the destinations results go to. `serve` runs until `stop` is set; everything received
    or analysed but not yet delivered is on disk under `settings.spool_dir` and picked up by the next
    `serve`. The association timeouts and maximum PDU size come from the settings, so a peer that goes
    silent releases its thread and a peer cannot push an unbounded PDU.
    """

    def __init__(self, settings: NodeSettings, analyse: Analyse, destinations: Sequence[Destination]) -> None:
        if not destinations:
            raise MuraError("DicomNode: no destination; give at least one C-STORE or STOW-RS destination")
        self.settings = settings
        self.analyse = analyse
        self.destinations = list(destinations)
        self.tls = (
            listener_context(settings.tls_cert, settings.tls_key, settings.tls_ca, settings.network_timeout)
            if settings.tls_cert is not None
            else None
        )
        self.spool = Spool(settings.spool_dir, quota_bytes=int(settings.incoming_quota_gib * GIB))
        self.outbox = Outbox(
            settings.spool_dir / "outbox",
            self.destinations,
            first_retry_seconds=settings.first_retry_seconds,
            max_retry_seconds=settings.max_retry_seconds,
            on_delivered=self._log_delivered,
        )
        self.outbox_gate = OutboxGate(self.outbox, settings)
        self.stop = threading.Event()

    # --- receiving ---------------------------------------------------------------------------------
    def _on_store(self, event: Any) -> int:
        calling = event.assoc.requestor.ae_title
        try:
            dataset = event.dataset
            study_uid, instance_uid = str(dataset.StudyInstanceUID), str(dataset.SOPInstanceUID)
        except Exception as exc:  # pynetdicom/pydicom raise many types on a damaged dataset
            log.warning("C-STORE from %s refused: unreadable dataset or no UIDs (%s)", calling, exc)
            return STATUS_CANNOT_UNDERSTAND
        try:
            self.spool.store(study_uid, instance_uid, event.encoded_dataset(include_meta=True))
        except SpoolFull as exc:
            log.error(
                "C-STORE from %s refused with Out of Resources: the spool is full (%s; incoming_quota_gib)",
                calling,
                exc,
            )
            return STATUS_OUT_OF_RESOURCES
        except ValueError as exc:
            log.warning("C-STORE from %s refused: %s", calling, exc)
            return STATUS_CANNOT_UNDERSTAND
        except OSError as exc:
            log.error("C-STORE from %s refused: cannot write to the spool (%s)", calling, exc)
            return STATUS_OUT_OF_RESOURCES
        return STATUS_SUCCESS

    # --- analysing ---------------------------------------------------------------------------------
    def _analyse_claimed(self, folder: Path) -> None:
        study = short_uid(study_of(folder))
        if self.outbox.has(folder.name):  # analysed before a crash, results already kept
            self.spool.remove(folder)
            return
        started = time.time()
        kept = self.spool.merge_analysed(folder)
        prior = PriorResults.from_dict(kept) if kept else None
        instances = self.spool.instances(folder)
        if prior is not None:
            log.info(
                "study %s: late instance(s): re-analysing all %d, to replace the SR sent before",
                study,
                len(instances),
            )
        try:
            results = self.analyse(instances, prior)
        except MuraError as exc:
            log.warning("study %s: no results (%d instances): %s", study, len(instances), exc)
            self.spool.remove(folder)
            return
        except Exception as exc:  # a bug must not stop the node or block the other studies
            kept = self.spool.set_aside(folder)
            log.error(
                "study %s: analysis failed (%s: %s); instances kept in %s",
                study,
                type(exc).__name__,
                exc,
                kept,
            )
            return
        for item in results.skipped:
            log.warning("study %s: skipped %s", study, _one_line(item))
        prediction = results.prediction
        summary = {
            "study_instance_uid": study_of(folder),
            "fracture_probability": prediction.fracture_probability,
            "decision": prediction.decision,
            "operating_point": prediction.operating_point,
            "views": prediction.views,
            "instances": len(instances),
            "skipped": len(results.skipped),
            "claimed_at": started,
            "analysis_seconds": time.time() - started,
            "replaces": prior.sr_instance_uid if prior else None,
        }
        try:
            self.outbox.add(folder.name, results.write, summary)
        except OSError as exc:
            log.error("study %s: cannot write results (%s); re-analysed at the next start", study, exc)
            return
        replaceable = results.record(prior)
        self.spool.keep_analysed(folder, replaceable.to_dict() if replaceable else None)

    def _claim_and_analyse(self, study_uid: str) -> None:
        try:
            folder = self.spool.claim(study_uid)
            if folder is not None:
                self._analyse_claimed(folder)
        except OSError as exc:  # a spool problem (disk full, permissions) must not stop the node
            log.error("study %s: %s; left in the spool for the next start", short_uid(study_uid), exc)

    def _log_delivered(self, entry: OutboxEntry) -> None:
        m = entry.manifest
        probability = m.get("fracture_probability")
        point = f" ({m['operating_point']})" if m.get("operating_point") else ""
        point += ", replacing the SR sent before" if m.get("replaces") else ""
        log.info(
            "study %s: p=%s %s%s, %s views, %s skipped, %.2f s (analysis %.2f s), %d files -> %s",
            short_uid(str(m.get("study_instance_uid", entry.folder.name))),
            "n/a" if probability is None else f"{probability:.4f}",
            m.get("decision"),
            point,
            m.get("views"),
            m.get("skipped"),
            time.time() - float(m.get("claimed_at", time.time())),
            float(m.get("analysis_seconds", 0.0)),
            len(m.get("files", [])),
            ", ".join(d.name for d in self.destinations),
        )

    # --- running -----------------------------------------------------------------------------------
    def _deliver_loop(self) -> None:
        next_sweep = time.monotonic()
        while not self.stop.is_set():
            wait = self.settings.poll_seconds
            try:
                if time.monotonic() >= next_sweep:
                    next_sweep = time.monotonic() + SWEEP_SECONDS
                    sweep(self.spool, self.outbox, self.settings)
                self.outbox.deliver_due()
            except Exception as exc:  # e.g. the outbox folder gone: say so, try again later
                log.error("delivery: %s: %s", type(exc).__name__, redact(str(exc)))
                wait = self.settings.max_retry_seconds
            self.stop.wait(wait)

    def _analyse_due(self) -> None:
        """Claim and analyse the studies that are quiet, or that have been receiving for too long."""
        settings = self.settings
        max_age = settings.incoming_max_age_hours * HOUR
        for study_uid in self.spool.overdue(max_age, settings.quiet_seconds):
            if self.stop.is_set() or not self.outbox_gate.open():
                return
            log.warning(
                "study %s: still receiving %g h after its first instance (incoming_max_age_hours); "
                "analysed as received so far",
                short_uid(study_uid),
                settings.incoming_max_age_hours,
            )
            self._claim_and_analyse(study_uid)
        for study_uid in self.spool.quiet_studies(settings.quiet_seconds):
            if self.stop.is_set() or not self.outbox_gate.open():
                return
            self._claim_and_analyse(study_uid)

    def serve(self, ready: Callable[[], None] = lambda: None) -> int:
        """Receive, analyse and deliver until `stop` is set (SIGTERM); 0 after a clean shutdown."""
        from pynetdicom import evt

        ae = storage_scp(self.settings)
        handlers = [(evt.EVT_C_STORE, self._on_store), (evt.EVT_REJECTED, _log_rejected)]
        try:
            server = ae.start_server(
                (self.settings.host, self.settings.port),
                block=False,
                evt_handlers=handlers,
                ssl_context=self.tls,
            )
        except OSError as exc:
            raise MuraError(f"cannot listen on {self.settings.host}:{self.settings.port}: {exc}") from None
        claimed, undelivered = self.spool.claimed(), self.outbox.pending()
        if claimed or undelivered or self.spool.waiting():
            log.info(
                "resuming: %d studies spooled, %d claimed, %d results to deliver",
                self.spool.waiting(),
                len(claimed),
                undelivered,
            )
        delivery = threading.Thread(target=self._deliver_loop, name="mura-dicom-delivery", daemon=True)
        delivery.start()
        ready()
        try:
            for folder in claimed:  # claimed by an earlier run that did not finish
                if self.stop.is_set():
                    break
                self._analyse_claimed(folder)
            while not self.stop.is_set():
                self._analyse_due()
                self.stop.wait(self.settings.poll_seconds)
        finally:
            self.stop.set()
            server.shutdown()  # no new associations
            self._drain(ae)
            delivery.join(timeout=self.settings.drain_seconds)
        try:
            left_claimed, left_undelivered = len(self.spool.claimed()), self.outbox.pending()
        except OSError as exc:
            log.error("stopped; the spool is unreadable: %s", exc)
            return 0
        log.info(
            "stopped: %d studies spooled, %d claimed, %d results undelivered (kept for the next start)",
            self.spool.waiting(),
            left_claimed,
            left_undelivered,
        )
        return 0

    def _drain(self, ae: Any) -> None:
        """Let open associations finish their C-STOREs (an unanswered one is resent by its sender)."""
        deadline = time.monotonic() + self.settings.drain_seconds
        if ae.active_associations:
            log.info("shutdown: letting %d open association(s) finish", len(ae.active_associations))
        while ae.active_associations and time.monotonic() < deadline:
            time.sleep(0.05)
        for assoc in ae.active_associations:
            log.warning("shutdown: aborting the association with %s", assoc.requestor.ae_title)
            assoc.abort()
        ae.shutdown()


def _log_rejected(event: Any) -> None:
    requestor = event.assoc.requestor
    log.warning("association from %s (%s) rejected", requestor.ae_title, requestor.address)


def _one_line(item: Any) -> str:
    """A skipped view as `instance <short SOP Instance UID>: reason` (spooled files are named by UID)."""
    if isinstance(item, tuple | list) and len(item) == 2:
        name, reason = Path(item[0]).stem, str(item[1])
        return f"instance {short_uid(name)}: {reason.splitlines()[0] if reason else 'no reason given'}"
    return str(item).splitlines()[0] if str(item) else repr(item)

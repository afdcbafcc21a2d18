"""How much the DICOM node keeps, and for how long: quotas and maximum ages of its folders.

- `incoming/` + `work/` + `analysed/`: the spool's quota refuses a C-STORE beyond it (`SpoolFull`,
  answered "Out of Resources" so the sender retries later) once no kept `analysed/` study is left to
  drop; a study still receiving after `incoming_max_age_hours` is analysed as received so far
  (`Spool.overdue`), and an analysed study's instances are kept that long for late views.
- `outbox/`: while it holds more than its quota (a PACS down for long), no new study is claimed, so
  they wait in `incoming/`, whose quota then pushes back on the senders; results no destination took
  within `outbox_max_age_days` move to `failed/`.
- `failed/`: entries older than `failed_max_age_days` are removed, then the oldest while it holds
  more than its quota.

Every removal or move is logged with the study and the limit that caused it.
"""

from __future__ import annotations

import logging

from mura.pacs.delivery import Outbox
from mura.pacs.node_settings import NodeSettings
from mura.pacs.spool import GIB, Spool, short_uid, study_of

log = logging.getLogger("mura.dicom_node")

HOUR, DAY = 3600.0, 86400.0
SWEEP_SECONDS = 60.0  # how often the delivery thread applies the maximum ages and failed/'s quota


def sweep(spool: Spool, outbox: Outbox, settings: NodeSettings) -> None:
    """Move undeliverable results to `failed/`, then empty `failed/` of what outlived its limits."""
    for entry, kept in outbox.expire(settings.outbox_max_age_days * DAY, spool.set_aside):
        log.warning(
            "study %s: results not delivered within %g days (outbox_max_age_days); moved to %s",
            short_uid(study_of(entry.folder)),
            settings.outbox_max_age_days,
            kept,
        )
    for kept in spool.expire_analysed(settings.incoming_max_age_hours * HOUR):
        log.info(
            "study %s: analysed instances no longer kept for late views (%g h, incoming_max_age_hours)",
            short_uid(kept.name),
            settings.incoming_max_age_hours,
        )
    for removed in spool.expire_failed(
        settings.failed_max_age_days * DAY, int(settings.failed_quota_gib * GIB)
    ):
        why = (
            f"failed/ holds more than its quota of {settings.failed_quota_gib:g} GiB (failed_quota_gib)"
            if removed.over_quota
            else f"older than {settings.failed_max_age_days:g} days (failed_max_age_days)"
        )
        log.warning(
            "failed/%s removed (%.1f days old, %.1f MiB): %s",
            removed.path.name,
            removed.age_seconds / DAY,
            removed.size_bytes / (1 << 20),
            why,
        )


class OutboxGate:
    """Whether the node may claim new studies: not while the outbox is over its quota (said once)."""

    def __init__(self, outbox: Outbox, settings: NodeSettings) -> None:
        self.outbox = outbox
        self.quota_bytes = int(settings.outbox_quota_gib * GIB)
        self.quota_gib = settings.outbox_quota_gib
        self.closed = False

    def open(self) -> bool:
        over = self.outbox.size_bytes > self.quota_bytes
        if over and not self.closed:
            log.warning(
                "outbox holds %.2f GiB, over its quota of %g GiB (outbox_quota_gib): new studies wait "
                "in incoming/ until the destinations take results",
                self.outbox.size_bytes / GIB,
                self.quota_gib,
            )
        elif not over and self.closed:
            log.info("outbox under its quota again: analysing waiting studies")
        self.closed = over
        return not over

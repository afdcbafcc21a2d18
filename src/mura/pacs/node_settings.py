"""What a DICOM node is told at start: checked once, here, so a bad value stops it before it listens.

Ranges are those a hospital network needs, not merely what pynetdicom accepts: pynetdicom takes any
timeout (None: wait forever) and a maximum PDU of 0 (no limit), and would then let one silent peer hold
an association thread forever or send a PDU of any size into memory. Every folder the node keeps has
a quota and a maximum age, so a PACS that refuses results for weeks, or a sender that floods the
node, fills neither the disk nor keeps patient data longer than needed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, field_validator

AE_TITLE_LENGTH = 16


def default_spool_dir(ae_title: str, port: int, environ: Mapping[str, str] = os.environ) -> Path:
    """`$XDG_DATA_HOME/mura/dicom-node/AET-PORT` (else `~/.local/share/...`): this user's own data
    folder, not a shared temporary folder where another user could create the same name first."""
    data_home = environ.get("XDG_DATA_HOME", "")
    base = Path(data_home) if Path(data_home).is_absolute() else Path.home() / ".local" / "share"
    return base / "mura" / "dicom-node" / f"{ae_title.strip()}-{port}"


def _ae_title(value: str) -> str:
    """PS3.5 AE title: up to 16 characters of the default repertoire, no backslash or control
    character; leading and trailing spaces are not significant, so they are dropped."""
    title = value.strip()
    if (
        not 0 < len(title) <= AE_TITLE_LENGTH
        or not title.isascii()
        or not title.isprintable()
        or "\\" in title
    ):
        raise ValueError("an AE title is 1 to 16 printable ASCII characters without a backslash")
    return title


AETitle = Annotated[str, AfterValidator(_ae_title)]


class NodeSettings(BaseModel):
    """Where the node listens, whom it accepts, how long it waits, and where it keeps what it received."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    ae_title: AETitle = Field(description="this node's AE title (also used to send)")
    port: int = Field(ge=1, le=65535, description="DICOM port to listen on")
    spool_dir: Path = Field(description="spool and outbox folder (kept across restarts)")
    host: str = Field(
        "127.0.0.1", min_length=1, description="address to listen on (0.0.0.0: every interface)"
    )
    allowed_calling: tuple[AETitle, ...] = Field((), description="calling AE titles accepted (empty: any)")
    quiet_seconds: float = Field(
        5.0, ge=0, le=3600, description="analyse a study this long after its last instance"
    )
    first_retry_seconds: float = Field(1.0, gt=0, le=3600, description="first wait after a failed delivery")
    max_retry_seconds: float = Field(
        60.0, gt=0, le=86400, description="longest wait between delivery retries (the waits double up to it)"
    )
    drain_seconds: float = Field(
        30.0, ge=0, le=3600, description="on shutdown, how long open associations may finish"
    )
    poll_seconds: float = Field(
        0.1, gt=0, le=10, description="how often quiet studies and the outbox are checked"
    )
    acse_timeout: float = Field(
        30.0, gt=0, le=600, description="seconds to wait for an association request, release or abort"
    )
    dimse_timeout: float = Field(
        30.0, gt=0, le=3600, description="seconds to wait for the next DIMSE message of an operation"
    )
    network_timeout: float = Field(
        60.0, gt=0, le=3600, description="seconds without any traffic after which an association is closed"
    )
    maximum_pdu_size: int = Field(
        16382,
        ge=4096,
        le=1 << 24,
        description="largest PDU (bytes) this node accepts; 16382 is pynetdicom's and dcmtk's default",
    )
    incoming_quota_gib: float = Field(
        20.0,
        gt=0,
        le=1e5,
        description="received instances not yet analysed (GiB); a store beyond it is refused",
    )
    incoming_max_age_hours: float = Field(
        1.0,
        gt=0,
        le=8760,
        description="a study still receiving this long after its first instance is analysed",
    )
    outbox_quota_gib: float = Field(
        5.0, gt=0, le=1e5, description="results waiting for delivery (GiB); beyond it new studies wait"
    )
    outbox_max_age_days: float = Field(
        7.0, gt=0, le=3650, description="results not delivered after this long are moved to failed/"
    )
    failed_quota_gib: float = Field(
        20.0, gt=0, le=1e5, description="failed/ (GiB); beyond it the oldest entries are removed"
    )
    failed_max_age_days: float = Field(
        30.0, gt=0, le=3650, description="entries of failed/ are removed this long after they failed"
    )
    tls_cert: Path | None = Field(None, description="listen with DICOM TLS: this node's PEM certificate")
    tls_key: Path | None = Field(None, description="the private key of tls_cert (if not in the same file)")
    tls_ca: Path | None = Field(
        None, description="accept only peers with a client certificate signed by this CA (PEM)"
    )

    @field_validator("tls_key", "tls_ca")
    @classmethod
    def _needs_certificate(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if value is not None and info.data.get("tls_cert") is None:
            raise ValueError("needs the node's own certificate (tls_cert) as well")
        return value

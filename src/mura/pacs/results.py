"""The results of one study as DICOM objects, and how they leave the process (files, bytes).

The bottom of `mura.pacs`: plain types every other pacs module builds or reads, imported by all of
them and importing none of them.
"""

from __future__ import annotations

import io
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset

from mura.atomic import fsync_dir, fsync_file, temporary_name
from mura.errors import MuraError
from mura.prediction import Prediction, StudyPrediction


@dataclass(frozen=True)
class StudyIdentity:
    """Patient and study of results made from non-DICOM inputs (DICOM inputs carry their own)."""

    patient_id: str
    patient_name: str = ""
    study_instance_uid: str | None = None  # None: a new study UID
    accession_number: str = ""
    study_id: str = ""


@dataclass
class ViewResult:
    """One good view: its prediction, for DICOM inputs its parsed header, and its capture."""

    name: str  # the file name, or "image N" for an array
    prediction: Prediction
    header: Dataset | None
    pixels: Any = field(repr=False, default=None)
    capture: Dataset | None = field(repr=False, default=None)  # its Grad-CAM Secondary Capture


@dataclass(frozen=True)
class PriorResults:
    """A study's results already sent, which its re-analysis (after a late view) replaces: the report
    to name as predecessor (and whose series continues), and the capture series with the sources it
    already shows, so only new views get a capture."""

    study_uid: str
    sr_series_uid: str
    sr_instance_uid: str
    sr_sop_class_uid: str
    sr_instance_number: int
    capture_series_uid: str | None
    captured: tuple[str, ...]  # SOP Instance UIDs of the sources that already have a capture
    captures: int  # the capture series' highest instance number

    def sr_reference(self) -> Dataset:
        """What the Predecessor Documents Sequence needs of the replaced report."""
        ds = Dataset()
        ds.StudyInstanceUID, ds.SeriesInstanceUID = self.study_uid, self.sr_series_uid
        ds.SOPClassUID, ds.SOPInstanceUID = self.sr_sop_class_uid, self.sr_instance_uid
        return ds

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "captured": list(self.captured)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PriorResults:
        return cls(**{**data, "captured": tuple(data["captured"])})


@dataclass
class StudyResults:
    """Everything one study's analysis produced, kept together so every surface sends the same thing.

    `mura predict --dicom-out` writes `datasets` to a folder, the DICOM node puts them in its outbox,
    the HTTP service answers with `sr` alone. `prediction` is the study's prediction (the probability the
    SR carries), `skipped` says which received files were left out and why, so a caller can report
    them without re-reading anything. `sr` is None only when there is no patient/study to attach the
    objects to (non-DICOM inputs without a `StudyIdentity`); `note` then says so.
    """

    prediction: StudyPrediction
    views: list[ViewResult]  # the good views, in input order
    skipped: list[tuple[Path, str]]  # bad views and why
    sr: Dataset | None = None
    captures: list[Dataset] = field(default_factory=list)  # the views' captures, in view order
    note: str | None = None

    @property
    def datasets(self) -> list[Dataset]:
        return ([self.sr] if self.sr is not None else []) + list(self.captures)

    def write(self, directory: str | Path) -> list[Path]:
        """Write each object atomically as `SR_<SOPInstanceUID>.dcm` / `SC_<SOPInstanceUID>.dcm` (what
        it is, at a glance in a folder); never overwrites an existing file."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        return [
            write_dataset(ds, directory / f"{'SR' if ds is self.sr else 'SC'}_{ds.SOPInstanceUID}.dcm")
            for ds in self.datasets
        ]

    def record(self, prior: PriorResults | None = None) -> PriorResults | None:
        """What a later re-analysis of this study replaces (None without an SR)."""
        if self.sr is None:
            return None
        captured = {
            str(v.header.SOPInstanceUID) for v in self.views if v.header is not None and v.capture is not None
        }
        numbers = [int(c.InstanceNumber) for c in self.captures]
        series = self.captures[0].SeriesInstanceUID if self.captures else prior and prior.capture_series_uid
        return PriorResults(
            study_uid=str(self.sr.StudyInstanceUID),
            sr_series_uid=str(self.sr.SeriesInstanceUID),
            sr_instance_uid=str(self.sr.SOPInstanceUID),
            sr_sop_class_uid=str(self.sr.SOPClassUID),
            sr_instance_number=int(self.sr.InstanceNumber),
            capture_series_uid=str(series) if series else None,
            captured=tuple(sorted(captured | set(prior.captured if prior else ()))),
            captures=max([*numbers, prior.captures if prior else 0]),
        )


def dataset_bytes(ds: Dataset) -> bytes:
    """A result object as a DICOM file in memory (preamble, file meta), e.g. for an HTTP answer."""
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def write_dataset(ds: Dataset, target: Path) -> Path:
    """Temp file in the same folder + fsync + link into place: atomic, and it fails rather than replace
    a file (a result file name holds its SOP Instance UID, so an existing one is never ours to overwrite)."""
    if target.exists():
        raise MuraError(f"{target}: already exists; not overwritten")
    temp = temporary_name(target)
    try:
        ds.save_as(temp, enforce_file_format=True)
        fsync_file(temp)
        try:
            os.link(temp, target)
        except FileExistsError:
            raise MuraError(f"{target}: already exists; not overwritten") from None
        fsync_dir(target.parent)
    finally:
        temp.unlink(missing_ok=True)
    return target

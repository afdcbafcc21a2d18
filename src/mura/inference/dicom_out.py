"""DICOM results of a study prediction: one Structured Report, one Secondary Capture per good view.

Shared by `mura predict --dicom-out`, the service and the DICOM node, so a PACS gets the same objects
from each. The study probability is `mura.inference.files.study_record` over the views that could be
predicted (MURA: their mean); instances that are not images, or whose pixels cannot be decoded, are
skipped and listed. The source files are only read, never written.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydicom.dataset import Dataset
from pydicom.uid import UID

from mura.atomic import fsync_file, temporary_name
from mura.data.dicom import read_dataset
from mura.data.images import is_dicom
from mura.errors import ImageDecodeError, MuraError
from mura.inference.dicom_objects import MANUFACTURER, make_captures, make_report, model_name, study_reference
from mura.inference.files import FileResult, iter_file_predictions, study_record

if TYPE_CHECKING:
    from mura.inference.gradcam import GradCamExplainer
    from mura.inference.predictor import Predictor

NO_DICOM_NOTE = "no DICOM output: no input is DICOM and no patient/study identity was given"


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
    """One good view: its prediction record, for DICOM inputs its parsed header, and its capture."""

    path: Path
    record: dict[str, Any]
    header: Dataset | None
    pixels: Any = field(repr=False, default=None)
    capture: Dataset | None = field(repr=False, default=None)  # its Grad-CAM Secondary Capture


@dataclass
class StudyResults:
    record: dict[str, Any]  # the study record (study_record fields + operating_point)
    views: list[ViewResult]  # the good views, in input order
    skipped: list[tuple[Path, str]]  # bad views and why
    sr: Dataset | None = None  # None only when `note` says why there is no DICOM output
    captures: list[Dataset] = field(default_factory=list)  # the views' captures, in view order
    note: str | None = None

    @property
    def datasets(self) -> list[Dataset]:
        return ([self.sr] if self.sr is not None else []) + list(self.captures)

    def write(self, directory: str | Path) -> list[Path]:
        """Write each object atomically as `<SOPInstanceUID>.dcm`; never overwrites an existing file."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        return [write_dataset(ds, directory / f"{ds.SOPInstanceUID}.dcm") for ds in self.datasets]


def dataset_bytes(ds: Dataset) -> bytes:
    """A result object as a DICOM file in memory (preamble, file meta), e.g. for an HTTP answer."""
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def write_dataset(ds: Dataset, target: Path) -> Path:
    """Temp file in the same folder + fsync + link into place: atomic, and it fails rather than replace
    a file (a result file name is its SOP Instance UID, so an existing one is never ours to overwrite)."""
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
    finally:
        temp.unlink(missing_ok=True)
    return target


def image_sop_class_problem(ds: Dataset) -> str | None:
    """Why an instance is not a radiograph to predict on, or None."""
    sop_class = UID(str(ds.get("SOPClassUID", "")))
    if not sop_class:
        return "no SOP Class UID"
    name = sop_class.name if sop_class.is_valid else str(sop_class)
    if "Image Storage" not in name:
        return f"not an image SOP class ({name})"
    if str(ds.get("Manufacturer", "")) == MANUFACTURER and "DERIVED" in list(ds.get("ImageType", [])):
        return "a mura result (Secondary Capture), not a radiograph"
    return None


def study_results(
    predictor: Predictor,
    paths: Sequence[str | Path],
    *,
    explainer: GradCamExplainer | None = None,
    operating_point: str | float | None = None,
    identity: StudyIdentity | None = None,
    body_part: str | None = None,
    captures: bool = True,
) -> StudyResults:
    """Predict one study and build its SR and Secondary Captures; MuraError if no view can be predicted.

    `operating_point` is a stored threshold name (or a number); None uses the predictor's. `identity` is
    used only where no good view is DICOM; without it such a study gets no DICOM output (`note` says so).
    `explainer` defaults to `GradCamExplainer.from_predictor(predictor)`. `captures=False` (an answer
    that is the SR alone) skips the Grad-CAM captures of views whose DICOM source the SR can reference.
    """
    paths = [Path(p) for p in paths]
    if not paths:
        raise MuraError("a study needs at least one file")
    skipped: list[tuple[Path, str]] = []
    headers: dict[Path, Dataset] = {}
    candidates: list[Path] = []
    for path in paths:
        if is_dicom(path):
            try:
                header = read_dataset(path, stop_before_pixels=True)
            except ImageDecodeError as exc:
                skipped.append((path, exc.reason))
                continue
            problem = image_sop_class_problem(header)
            if problem:
                skipped.append((path, problem))
                continue
            headers[path] = header
        candidates.append(path)
    name, threshold = resolve_operating_point(predictor, operating_point)
    results = list(iter_file_predictions(predictor, candidates, body_part, keep_pixels=True))
    views: list[ViewResult] = []
    for result in results:
        if not result.ok:
            skipped.append((result.path, _reason(result)))
            continue
        probability = result.record["fracture_probability"]
        result.record.update(
            threshold=threshold,
            operating_point=name,
            decision="abnormal" if probability >= threshold else "normal",
        )
        views.append(ViewResult(result.path, result.record, headers.get(result.path), result.pixels))
    folder = Path(os.path.commonpath([p.parent for p in paths]))
    if not views:
        reasons = "; ".join(f"{p.name}: {r}" for p, r in skipped[:3])
        raise MuraError(f"{folder}: none of the study's {len(paths)} file(s) could be predicted ({reasons})")
    failed = [FileResult(p, error=r) for p, r in skipped]
    record = study_record(
        folder, [FileResult(v.path, record=v.record) for v in views] + failed, threshold, name
    )
    study = StudyResults(record=record, views=views, skipped=skipped)
    if not any(v.header is not None for v in views) and identity is None:
        study.note = NO_DICOM_NOTE
        return study

    reference = study_reference(views, identity)
    drawn = [v for v in views if captures or v.header is None]
    if drawn and explainer is None:
        from mura.inference.gradcam import GradCamExplainer

        explainer = GradCamExplainer.from_predictor(predictor)
    for view, capture in zip(
        drawn, make_captures(drawn, reference, explainer, model_name(predictor)), strict=True
    ):
        view.capture = capture
    study.captures = [v.capture for v in views if v.capture is not None]
    study.sr = make_report(predictor, study, reference)
    return study


def resolve_operating_point(predictor: Predictor, operating_point: str | float | None) -> tuple[str, float]:
    """(name, threshold): the predictor's own, or a stored threshold name / a number chosen now."""
    if operating_point is None:
        return predictor.threshold_name, float(predictor.threshold)
    return predictor.operating_point(operating_point)


def _reason(result: FileResult) -> str:
    prefix = f"{result.path}: "
    error = result.error or "unknown error"
    return error[len(prefix) :] if error.startswith(prefix) else error


def group_studies(paths: Sequence[str | Path], one_non_dicom_study: bool = False) -> list[list[Path]]:
    """Files -> studies: DICOM by StudyInstanceUID, other files by folder (or all in one study).

    Unreadable DICOM headers go with their folder's files, so the study lists them as skipped.
    """
    groups: dict[tuple[str, str], list[Path]] = {}
    for raw in paths:
        path = Path(raw)
        key = ("folder", "" if one_non_dicom_study else str(path.parent))
        if is_dicom(path):
            try:
                uid = str(read_dataset(path, stop_before_pixels=True).get("StudyInstanceUID", ""))
            except ImageDecodeError:
                uid = ""
            if uid:
                key = ("study", uid)
        groups.setdefault(key, []).append(path)
    return list(groups.values())

"""One study's DICOM results: predict its views, then build one SR and one Secondary Capture per view.

Shared by `mura predict --dicom-out`, the service and the DICOM node, so a PACS gets the same objects
from each. The study probability is `mura.inference.files.study_prediction` over the views that could
be predicted (MURA: their mean); instances that are not images, or whose pixels cannot be decoded, are
skipped and listed. The source files are only read, never written.

Out of scope (`mura.inference.scope`), two cases are told apart. An instance that is no projection
radiograph (a CT, an MR, a Secondary Capture: the gate's acquisition rules on its header) is skipped
like a non-image, so a study of nothing else gets no result at all: an AI fracture report has no
place in a CT study, and a routing rule that sends one here should not fill the PACS with them. A
radiograph the model cannot judge (a body part it was not trained on, a blank or noise-like image)
is a study a reader may expect a result for, so it gets an SR that states "not assessed" with the
reasons, and no finding, probability or Grad-CAM capture.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import UID

from mura.constants import given_body_part
from mura.data.dicom.read import read_dataset
from mura.data.images import is_dicom
from mura.errors import ImageDecodeError, MuraError
from mura.inference.files import (
    FileResult,
    FileSource,
    InMemoryFile,
    iter_file_predictions,
    not_assessed,
    source_path,
    study_prediction,
)
from mura.inference.scope import acquisition_problems, image_reasons
from mura.inference.study_identity import check_one_study
from mura.pacs.capture import make_captures
from mura.pacs.identity import MANUFACTURER, study_reference
from mura.pacs.results import PriorResults, StudyIdentity, StudyResults, ViewResult
from mura.pacs.sr import make_report
from mura.prediction import Prediction, decide

if TYPE_CHECKING:
    from mura.inference.gradcam import GradCamExplainer
    from mura.inference.predictor import Predictor

NO_DICOM_NOTE = "no DICOM output: no input is DICOM and no patient/study identity was given"


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


def split_radiographs(paths: Sequence[Path]) -> tuple[list[Path], list[tuple[Path, str]]]:
    """(files to predict, DICOM files set aside with the reason): instances that are not radiograph
    images, mura's own results among them, are left out as the node leaves them out. A DICOM header that
    cannot be read is kept, so the prediction reports its error."""
    kept: list[Path] = []
    set_aside: list[tuple[Path, str]] = []
    for path in paths:
        if is_dicom(path):
            try:
                problem = image_sop_class_problem(read_dataset(path, stop_before_pixels=True))
            except ImageDecodeError:
                problem = None
            if problem:
                set_aside.append((path, problem))
                continue
        kept.append(path)
    return kept, set_aside


def study_results(
    predictor: Predictor,
    views: Sequence[str | Path | InMemoryFile | np.ndarray],
    *,
    explainer: GradCamExplainer | None = None,
    operating_point: str | float | None = None,
    identity: StudyIdentity | None = None,
    body_part: str | None = None,
    captures: bool = True,
    prior: PriorResults | None = None,
) -> StudyResults:
    """Predict one study and build its SR and Secondary Captures; MuraError if no view can be predicted.

    `views` are files (PNG/JPEG/DICOM: paths, or `InMemoryFile` uploads, never written to disk) and/or
    decoded uint8 [H, W] arrays. `operating_point` is a stored threshold name (or a number); None uses
    the predictor's.
    `identity` is used only where no good view is DICOM; without it such a study gets no DICOM output
    (`note` says so), except that arrays without it are refused (they cannot be anything else).
    `explainer` defaults to `GradCamExplainer.from_predictor(predictor)`. `captures=False` (an answer that
    is the SR alone) skips the Grad-CAM captures of views whose DICOM source the SR can reference.
    `prior` (the study's results already sent, when a late view made the node re-analyse the whole
    study) makes the SR replace that report and draws captures only for views it had no capture of.
    """
    if not views:
        raise MuraError("a study needs at least one view")
    arrays = [(i, v) for i, v in enumerate(views) if isinstance(v, np.ndarray)]
    if arrays and identity is None:
        raise MuraError("image arrays carry no patient or study: give identity=StudyIdentity(...)")
    files = [v if isinstance(v, InMemoryFile) else Path(v) for v in views if not isinstance(v, np.ndarray)]
    skipped, headers, candidates = _readable(files)
    check_one_study(candidates)
    name, threshold = resolve_operating_point(predictor, operating_point)
    results = list(iter_file_predictions(predictor, candidates, body_part, keep_pixels=True))
    good: list[ViewResult] = []
    for number, result in enumerate(results):
        if result.prediction is None:
            skipped.append((result.path, _reason(result)))
            continue
        prediction = _decided_at(result.prediction, name, threshold)
        good.append(ViewResult(result.path.name, prediction, headers.get(number), result.pixels))
    reasons = {i: image_reasons(array) for i, array in arrays}  # an array has no header: layer 2 only
    scored = [(i, array) for i, array in arrays if not reasons[i]]
    batch = predictor.predict_images([a for _, a in scored], [given_body_part(body_part)] * len(scored))
    predictions = {i: batch.prediction(j, predictor.identity) for j, (i, _) in enumerate(scored)}
    for i, array in arrays:
        prediction = predictions.get(i) or not_assessed(predictor, None, reasons[i])
        good.append(ViewResult(f"image {i + 1}", _decided_at(prediction, name, threshold), None, array))
    on_disk = [f.parent for f in files if isinstance(f, Path)]
    folder = str(Path(os.path.commonpath(on_disk))) if on_disk else None
    if not good:
        reasons = "; ".join(f"{p.name}: {r}" for p, r in skipped[:3])
        where = f"{folder}: " if folder else ""
        raise MuraError(f"{where}none of the study's {len(views)} view(s) could be predicted ({reasons})")
    failed = [FileResult(p, error=r) for p, r in skipped]
    summary = study_prediction(
        folder, [FileResult(Path(v.name), prediction=v.prediction) for v in good] + failed, predictor.tiers
    )
    study = StudyResults(prediction=summary, views=good, skipped=skipped)
    if not any(v.header is not None for v in good) and identity is None:
        study.note = NO_DICOM_NOTE
        return study

    reference = study_reference(good, identity)
    shown = set(prior.captured) if prior else set()
    # A not-assessed view gets no Grad-CAM (a heat map would suggest a finding), unless the SR has
    # nothing else to reference for it (no DICOM source)
    drawn = [
        v
        for v in good
        if v.header is None
        or (captures and v.prediction.assessed and str(v.header.SOPInstanceUID) not in shown)
    ]
    if explainer is None and any(v.prediction.decision == "abnormal" for v in drawn):
        from mura.inference.gradcam import GradCamExplainer

        explainer = GradCamExplainer.from_predictor(predictor)
    model = predictor.identity
    made = make_captures(drawn, reference, explainer, model, prior)
    for view, capture in zip(drawn, made, strict=True):
        view.capture = capture
    study.captures = [v.capture for v in good if v.capture is not None]
    study.sr = make_report(model, study, reference, predictor.tiers.positive_class, prior)
    return study


def _readable(
    files: Sequence[FileSource],
) -> tuple[list[tuple[Path, str]], dict[int, Dataset], list[FileSource]]:
    """(skipped with reasons, DICOM headers by position among the files to predict, files to predict):
    DICOM instances that are not radiograph images, or whose header cannot be read, are skipped before
    any pixel is decoded."""
    skipped: list[tuple[Path, str]] = []
    headers: dict[int, Dataset] = {}
    candidates: list[FileSource] = []
    for source in files:
        data = source.data if isinstance(source, InMemoryFile) else source
        if is_dicom(data):
            try:
                header = read_dataset(data, source.name, stop_before_pixels=True)
            except ImageDecodeError as exc:
                skipped.append((source_path(source), exc.reason))
                continue
            problem = image_sop_class_problem(header)
            if problem:
                skipped.append((source_path(source), problem))
                continue
            out_of_scope = acquisition_problems(header)
            if out_of_scope:
                skipped.append((source_path(source), "not assessed: " + "; ".join(out_of_scope)))
                continue
            headers[len(candidates)] = header
        candidates.append(source)
    return skipped, headers, candidates


def _decided_at(prediction: Prediction, name: str, threshold: float) -> Prediction:
    """The same prediction decided at another operating point (not-assessed views stay as they are)."""
    if not prediction.assessed:
        return prediction
    decision = decide(float(prediction.fracture_probability or 0.0), threshold)
    return prediction.model_copy(
        update={"operating_point": name, "threshold": threshold, "decision": decision}
    )


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

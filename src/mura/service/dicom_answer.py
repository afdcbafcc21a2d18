"""`POST /v1/predict/study` with `Accept: application/dicom`: the study's Structured Report.

The SR is built by the same library function as `mura predict --dicom-out` and `mura dicom-node`
(`mura.pacs.study.study_results`), so its probability is the JSON answer's. The uploads go to it as
`InMemoryFile`s, decoded from the request's bytes: radiographs never touch a disk.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mura.errors import MuraError
from mura.inference.files import InMemoryFile
from mura.service.engine import ModelGate
from mura.service.errors import ServiceError
from mura.service.uploads import UploadedFile

DICOM_MEDIA_TYPE = "application/dicom"


def wants_dicom(accept: str | None) -> bool:
    """True when the client asks for DICOM (an Accept header listing application/dicom)."""
    return any(part.split(";")[0].strip() == DICOM_MEDIA_TYPE for part in (accept or "").split(","))


def study_report_bytes(
    predictor: Any, uploads: Sequence[UploadedFile], explainer: Any | None, gate: ModelGate
) -> bytes:
    """The study's SR as a DICOM file; 422 when no upload is a usable DICOM image. Runs on a worker
    thread with the model to itself (Grad-CAM captures, made only for views the SR cannot reference
    otherwise, run on the shared model)."""
    from mura.pacs.results import dataset_bytes
    from mura.pacs.study import study_results

    views = [InMemoryFile(upload.filename, upload.data) for upload in uploads]
    try:
        with gate.exclusive():
            results = study_results(predictor, views, explainer=explainer, captures=False)
    except MuraError as exc:
        raise ServiceError(422, "no_usable_view", str(exc)) from None
    if results.sr is None:
        raise ServiceError(422, "not_dicom", "a DICOM answer needs DICOM uploads (they carry the patient)")
    return dataset_bytes(results.sr)

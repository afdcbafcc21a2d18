"""`POST /v1/predict/study` with `Accept: application/dicom`: the study's Structured Report.

The SR is built by the same library function as `mura predict --dicom-out` and `mura dicom-node`
(`mura.inference.dicom_out.study_results`), so its probability is the JSON answer's. That function
reads files, so the uploads are written to a memory-backed temporary folder (/dev/shm where it exists)
for the duration of the call and removed with it: radiographs never touch a disk.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mura.data.images import is_dicom
from mura.errors import MuraError
from mura.service.engine import ModelGate
from mura.service.errors import ServiceError
from mura.service.uploads import UploadedFile

DICOM_MEDIA_TYPE = "application/dicom"
_MEMORY_DIR = Path("/dev/shm")


def wants_dicom(accept: str | None) -> bool:
    """True when the client asks for DICOM (an Accept header listing application/dicom)."""
    return any(part.split(";")[0].strip() == DICOM_MEDIA_TYPE for part in (accept or "").split(","))


def study_report_bytes(
    predictor: Any, uploads: Sequence[UploadedFile], explainer: Any | None, gate: ModelGate
) -> bytes:
    """The study's SR as a DICOM file; 422 when no upload is a usable DICOM image. Runs on a worker
    thread with the model to itself (Grad-CAM captures, made only for views the SR cannot reference
    otherwise, run on the shared model)."""
    from mura.inference.dicom_out import dataset_bytes, study_results

    where = str(_MEMORY_DIR) if _MEMORY_DIR.is_dir() else None
    with tempfile.TemporaryDirectory(prefix="mura-study-", dir=where) as folder:
        paths = []
        for number, upload in enumerate(uploads):
            path = Path(folder) / f"view{number:03d}{'.dcm' if is_dicom(upload.data) else '.img'}"
            path.write_bytes(upload.data)
            paths.append(path)
        try:
            with gate.exclusive():
                results = study_results(predictor, paths, explainer=explainer, captures=False)
        except MuraError as exc:
            raise ServiceError(422, "no_usable_view", str(exc).replace(folder, "study")) from None
        if results.sr is None:
            raise ServiceError(
                422, "not_dicom", "a DICOM answer needs DICOM uploads (they carry the patient)"
            )
        return dataset_bytes(results.sr)

"""Who made a result object and about whom: the study it belongs to and the algorithm that produced it.

- Study reference: the patient and study modules every result object copies (from the first DICOM view,
  or made from a `StudyIdentity` for non-DICOM inputs).
- Algorithm identity: a `mura.prediction.ModelIdentity` (names, mura version, one SHA-256 for the
  whole ensemble), built from a predictor's checkpoint files. The SR's observer device UID is derived
  from that SHA-256, so a PACS sees one device per model: two reports of one checkpoint carry the same
  device UID, two checkpoints different ones.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.uid import UID, generate_uid

from mura.errors import MuraError
from mura.pacs.results import StudyIdentity, ViewResult
from mura.prediction import ModelIdentity, Prediction

if TYPE_CHECKING:
    pass

MANUFACTURER = "mura"
NOT_FOR_DIAGNOSIS = "NOT FOR DIAGNOSTIC USE"
LONG_STRING = 64  # the most characters a LO element (names, model, version) holds

PATIENT_STUDY_KEYWORDS = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "StudyID",
    "AccessionNumber",
    "ReferringPhysicianName",
)


def study_reference(views: list[ViewResult], identity: StudyIdentity | None) -> Dataset:
    """The data set whose patient and study modules every object copies: the first DICOM view's header
    (the views were checked to be of one patient and study: `mura.inference.study_identity`), else one
    made from `identity`."""
    headers = [v.header for v in views if v.header is not None]
    if headers:
        return headers[0]
    if identity is None:
        raise MuraError("a study of non-DICOM files needs a StudyIdentity (at least a patient ID)")
    ref = Dataset()
    ref.PatientID = identity.patient_id
    ref.PatientName = identity.patient_name
    ref.PatientBirthDate = ""
    ref.PatientSex = ""
    ref.StudyInstanceUID = identity.study_instance_uid or generate_uid()
    now = datetime.now()  # the study is made now, from files that carry no date of their own
    ref.StudyDate, ref.StudyTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    ref.StudyID = identity.study_id or (identity.accession_number or "MURA")[:16]
    ref.AccessionNumber = identity.accession_number
    ref.ReferringPhysicianName = ""
    return ref


def copy_study_modules(reference: Dataset, target: Dataset) -> None:
    """Patient and study attributes exactly as the source has them (incl. empty ones)."""
    for keyword in PATIENT_STUDY_KEYWORDS:
        if keyword in reference:
            setattr(target, keyword, reference.get(keyword))
    if "SpecificCharacterSet" in reference:
        target.SpecificCharacterSet = reference.SpecificCharacterSet


def model_label(identity: ModelIdentity) -> str:
    """The model as a manufacturer's model name (a LO element)."""
    return f"{MANUFACTURER} {identity.name}"[:LONG_STRING]


def device_uid(identity: ModelIdentity) -> UID:
    """A UID that is a function of the model's SHA-256 alone (pydicom's root + a hash of it)."""
    return generate_uid(entropy_srcs=["mura observer device", identity.sha256])


def algorithm_identification(
    identity: ModelIdentity, prediction: Prediction
) -> hd.sr.AlgorithmIdentification:
    """The model (one item: its SHA-256 and member count), the operating point `prediction` was decided
    at, and where that decision was fitted (training data or a site's own sample)."""
    parameters = [
        f"sha256={identity.sha256} checkpoints={identity.members}",
        f"operating point {prediction.operating_point} threshold={prediction.threshold:.6f}",
    ]
    if identity.decision_origin:
        parameters.append(f"decision origin: {identity.decision_origin}")
    return hd.sr.AlgorithmIdentification(
        name=model_label(identity), version=identity.version[:LONG_STRING], parameters=parameters
    )


def observer_device(identity: ModelIdentity) -> hd.sr.DeviceObserverIdentifyingAttributes:
    """The SR's observer: one device per model, the same across reports and restarts."""
    return hd.sr.DeviceObserverIdentifyingAttributes(
        uid=device_uid(identity),
        name=MANUFACTURER,
        manufacturer_name=MANUFACTURER,
        model_name=model_label(identity),
    )

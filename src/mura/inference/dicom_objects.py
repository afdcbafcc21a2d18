"""The DICOM objects of a study result, built with highdicom (which checks them as it builds).

- Structured Report: Comprehensive SR holding TID 1500 (Measurement Report), the template PACS viewers
  and AI result consumers (e.g. OHIF, IHE AI Results) read. One measurement group for the study
  (probability, threshold, finding, body part and whether it was given or predicted, the algorithm with
  its checkpoints' sha256) and one per view, each referencing the source instance it was measured on.
- Secondary Capture per view: the Grad-CAM overlay above a banner with the probability and a burned-in
  "NOT FOR DIAGNOSTIC USE" line, in a new series of the source study (patient and study copied).
Codes not in DICOM or SNOMED use the private coding scheme 99MURA (PS3.16 8.2: "99" prefix).
"""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import highdicom as hd
import numpy as np
from PIL import Image, ImageDraw, ImageFont
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

import mura
from mura.checkpoint import file_sha256
from mura.constants import BODY_PARTS
from mura.errors import MuraError
from mura.inference.gradcam import overlay

MANUFACTURER = "mura"

if TYPE_CHECKING:
    from mura.inference.dicom_out import StudyIdentity, StudyResults, ViewResult
    from mura.inference.gradcam import GradCamExplainer
    from mura.inference.predictor import Predictor

SR_SERIES_NUMBER = 9901
SC_SERIES_NUMBER = 9902
NOT_FOR_DIAGNOSIS = "NOT FOR DIAGNOSTIC USE"
SCHEME = "99MURA"
ABNORMALITY = hd.sr.CodedConcept("ABN", SCHEME, "Musculoskeletal radiograph abnormality")
ABNORMALITY_PROBABILITY = hd.sr.CodedConcept("ABN-PROB", SCHEME, "Probability of abnormality")
DECISION_THRESHOLD = hd.sr.CodedConcept("THRESHOLD", SCHEME, "Decision threshold")
OPERATING_POINT = hd.sr.CodedConcept("OP", SCHEME, "Operating point")
BODY_PART_SOURCE = hd.sr.CodedConcept("BP-SRC", SCHEME, "Body part source")
BODY_PART_SOURCES = {
    "given": hd.sr.CodedConcept("BP-GIVEN", SCHEME, "Body part given"),
    "predicted": hd.sr.CodedConcept("BP-PRED", SCHEME, "Body part predicted by the model"),
}
BODY_PART_CODES = {
    "ELBOW": codes.SCT.ElbowJoint,
    "FINGER": codes.SCT.Finger,
    "FOREARM": codes.SCT.Forearm,
    "HAND": codes.SCT.Hand,
    "HUMERUS": codes.SCT.Humerus,
    "SHOULDER": codes.SCT.Shoulder,
    "WRIST": codes.SCT.WristJoint,
}
STUDY_GROUP = "study"
MIN_CAPTURE_WIDTH = 512  # small images are enlarged so the banner text stays legible

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
    """The data set whose patient and study modules every object copies: the first DICOM view's header,
    else one made from `identity`. DICOM views of different studies are refused."""
    headers = [v.header for v in views if v.header is not None]
    if headers:
        studies = {str(h.get("StudyInstanceUID", "")) for h in headers}
        if len(studies) > 1:
            raise MuraError(f"the views belong to {len(studies)} studies; give one study at a time")
        return headers[0]
    assert identity is not None
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


def _banner(rgb: np.ndarray, lines: list[str]) -> np.ndarray:
    """The overlay enlarged to a legible width, with a black banner of text lines above it."""
    image = Image.fromarray(rgb)
    if image.width < MIN_CAPTURE_WIDTH:
        scale = MIN_CAPTURE_WIDTH / image.width
        image = image.resize((MIN_CAPTURE_WIDTH, max(1, round(image.height * scale))), Image.BILINEAR)
    size = max(12, image.width // 36)
    font = ImageFont.load_default(size=size)
    while size > 8 and max(font.getlength(line) for line in lines) > image.width - 8:
        size -= 1
        font = ImageFont.load_default(size=size)
    line_height = round(size * 1.3)
    out = Image.new("RGB", (image.width, image.height + line_height * len(lines) + 8), (0, 0, 0))
    out.paste(image, (0, line_height * len(lines) + 8))
    draw = ImageDraw.Draw(out)
    for i, line in enumerate(lines):
        colour = (255, 220, 0) if line == NOT_FOR_DIAGNOSIS else (255, 255, 255)
        draw.text((4, 4 + i * line_height), line, fill=colour, font=font)
    return np.asarray(out, dtype=np.uint8)


def _view_lines(record: dict[str, Any]) -> list[str]:
    return [
        f"abnormality p = {record['fracture_probability']:.3f}: {record['decision']} at the "
        f"{record['operating_point']} operating point ({record['threshold']:.3f})",
        f"body part {record['body_part']} ({record['body_part_used']}), mura {mura.__version__}",
        NOT_FOR_DIAGNOSIS,
    ]


def make_captures(
    views: list[ViewResult], reference: Dataset, explainer: GradCamExplainer, model_name: str
) -> list[Dataset]:
    """One RGB Secondary Capture per view, all in one new series of the reference's study."""
    series_uid = generate_uid()
    captures = []
    for number, view in enumerate(views, start=1):
        record = view.record
        part = BODY_PARTS.index(record["body_part"]) if record["body_part_used"] == "given" else -1
        pixels = _banner(overlay(view.pixels, explainer.heatmap(view.pixels, part)), _view_lines(record))
        source = view.header if view.header is not None else reference
        capture = hd.sc.SCImage(
            pixel_array=pixels,
            photometric_interpretation=hd.PhotometricInterpretationValues.RGB,
            bits_allocated=8,
            coordinate_system=hd.CoordinateSystemNames.PATIENT,
            patient_orientation=("L", "F"),  # replaced below by the source's own (possibly empty)
            study_instance_uid=reference.StudyInstanceUID,
            series_instance_uid=series_uid,
            series_number=SC_SERIES_NUMBER,
            sop_instance_uid=generate_uid(),
            instance_number=number,
            manufacturer=MANUFACTURER,
            patient_id=reference.get("PatientID"),
            patient_name=reference.get("PatientName"),
            patient_birth_date=reference.get("PatientBirthDate"),
            patient_sex=reference.get("PatientSex") or None,
            accession_number=reference.get("AccessionNumber"),
            study_id=reference.get("StudyID"),
            study_date=reference.get("StudyDate") or None,
            study_time=reference.get("StudyTime") or None,
            referring_physician_name=reference.get("ReferringPhysicianName"),
        )
        _copy_study_modules(reference, capture)
        # The overlay keeps the source's orientation (enlarged, banner on top), so its value still holds.
        capture.PatientOrientation = source.get("PatientOrientation", "")
        capture.Laterality = source.get("Laterality", source.get("ImageLaterality", ""))
        capture.BurnedInAnnotation = "YES"
        capture.ImageType = ["DERIVED", "SECONDARY"]
        capture.SeriesDescription = f"mura Grad-CAM overlays ({NOT_FOR_DIAGNOSIS.lower()})"
        capture.DerivationDescription = "Grad-CAM heatmap of the abnormality output over the radiograph"
        capture.ManufacturerModelName = model_name[:64]
        capture.SoftwareVersions = mura.__version__
        if view.header is not None:
            item = Dataset()
            item.ReferencedSOPClassUID = view.header.SOPClassUID
            item.ReferencedSOPInstanceUID = view.header.SOPInstanceUID
            capture.SourceImageSequence = [item]
        captures.append(capture)
    return captures


def _copy_study_modules(reference: Dataset, target: Dataset) -> None:
    """Patient and study attributes exactly as the source has them (incl. empty ones)."""
    for keyword in PATIENT_STUDY_KEYWORDS:
        if keyword in reference:
            setattr(target, keyword, reference.get(keyword))
    if "SpecificCharacterSet" in reference:
        target.SpecificCharacterSet = reference.SpecificCharacterSet


@lru_cache(maxsize=64)
def _file_sha256(path: Path, mtime_ns: int, size: int) -> str:
    """`file_sha256`, computed once per file version (a node hashes the same checkpoint per study)."""
    return file_sha256(path)


def checkpoint_sha256(path: Path) -> str:
    stat = path.stat()
    return _file_sha256(path, stat.st_mtime_ns, stat.st_size)


def model_name(predictor: Predictor) -> str:
    return "mura " + "+".join(m.model_name for m in predictor.members)


def algorithm(predictor: Predictor, record: dict[str, Any]) -> hd.sr.AlgorithmIdentification:
    """Model names, mura's version and each checkpoint's sha256, plus the operating point used."""
    members = predictor.members
    parameters = [f"{m.model_name} {m.source.name} sha256={checkpoint_sha256(m.source)}" for m in members]
    parameters.append(f"operating point {record['operating_point']} threshold={record['threshold']:.6f}")
    return hd.sr.AlgorithmIdentification(
        name=model_name(predictor)[:64], version=mura.__version__, parameters=parameters
    )


def _group(
    tracking: str,
    record: dict[str, Any],
    algorithm_id: hd.sr.AlgorithmIdentification,
    sources: list[Dataset],
    with_threshold: bool,
) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    unit = codes.UCUM.NoUnits
    measurements = [hd.sr.Measurement(ABNORMALITY_PROBABILITY, float(record["fracture_probability"]), unit)]
    if with_threshold:
        measurements.append(hd.sr.Measurement(DECISION_THRESHOLD, float(record["threshold"]), unit))
    present = record["decision"] == "abnormal"
    evaluations = [
        hd.sr.QualitativeEvaluation(ABNORMALITY, codes.SCT.Present if present else codes.SCT.Absent),
        hd.sr.QualitativeEvaluation(BODY_PART_SOURCE, BODY_PART_SOURCES[record["body_part_used"]]),
    ]
    if with_threshold:
        point = str(record["operating_point"])
        evaluations.append(
            hd.sr.QualitativeEvaluation(
                OPERATING_POINT, hd.sr.CodedConcept(point, SCHEME, f"{point} operating point")
            )
        )
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=generate_uid(), identifier=tracking),
        finding_type=ABNORMALITY,
        algorithm_id=algorithm_id,
        finding_sites=[hd.sr.FindingSite(BODY_PART_CODES[record["body_part"]])],
        measurements=measurements,
        qualitative_evaluations=evaluations,
        source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(s) for s in sources],
    )


def make_report(predictor: Predictor, study: StudyResults, reference: Dataset) -> Dataset:
    """The study's Comprehensive SR (TID 1500); views without a DICOM source reference their capture."""
    algorithm_id = algorithm(predictor, study.record)
    sources = [v.header if v.header is not None else v.capture for v in study.views]
    groups = [_group(STUDY_GROUP, study.record, algorithm_id, sources, with_threshold=True)]
    groups += [
        _group(f"view {i}: {v.path.name}"[:64], v.record, algorithm_id, [s], with_threshold=False)
        for i, (v, s) in enumerate(zip(study.views, sources, strict=True), start=1)
    ]
    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=generate_uid(), name="mura", manufacturer_name=MANUFACTURER, model_name=model_name(predictor)[:64]
    )
    context = hd.sr.ObservationContext(
        observer_device_context=hd.sr.ObserverContext(codes.DCM.Device, device)
    )
    report = hd.sr.MeasurementReport(
        observation_context=context,
        procedure_reported=codes.SCT.PlainRadiography,
        imaging_measurements=groups,
    )
    unique_sources = [_evidence(s) for s in {s.SOPInstanceUID: s for s in sources}.values()]
    sr = hd.sr.ComprehensiveSR(
        evidence=unique_sources,
        content=report,
        series_instance_uid=generate_uid(),
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer=MANUFACTURER,
        is_complete=True,
    )
    _copy_study_modules(reference, sr)
    scheme = Dataset()
    scheme.CodingSchemeDesignator = SCHEME
    scheme.CodingSchemeName = "mura result codes"
    scheme.CodingSchemeResponsibleOrganization = "mura project"
    sr.CodingSchemeIdentificationSequence = [scheme]
    sr.SeriesDescription = f"mura AI result ({NOT_FOR_DIAGNOSIS.lower()})"
    return sr


def _evidence(source: Dataset) -> Dataset:
    """The identifying attributes of a source, type-2 patient/study attributes present (maybe empty):
    highdicom reads them from the first evidence item, and real modalities leave some out."""
    item = Dataset()
    for keyword in ("SOPClassUID", "SOPInstanceUID", "SeriesInstanceUID", *PATIENT_STUDY_KEYWORDS):
        setattr(item, keyword, source.get(keyword, ""))
    if "SpecificCharacterSet" in source:
        item.SpecificCharacterSet = source.SpecificCharacterSet
    return item


def sr_summary(sr: Dataset) -> dict[str, Any]:
    """What a consumer reads back from our SR: study probability and finding, per-view probabilities
    (keyed by the referenced SOP Instance UID) and every referenced source instance."""
    summary: dict[str, Any] = {"views": {}, "referenced_sop_instance_uids": []}
    for group in _items(sr, "126010"):  # Imaging Measurements
        for item in group.get("ContentSequence", []):
            if _code(item) != "125007":  # Measurement Group
                continue
            content = list(item.get("ContentSequence", []))
            tracking = next((c.TextValue for c in content if _code(c) == "112039"), "")
            probability = next(
                float(c.MeasuredValueSequence[0].NumericValue) for c in content if _code(c) == "ABN-PROB"
            )
            finding = next(c.ConceptCodeSequence[0].CodeMeaning for c in content if _code(c) == "ABN")
            refs = [
                str(c.ReferencedSOPSequence[0].ReferencedSOPInstanceUID)
                for c in content
                if _code(c) == "121112"
            ]
            if tracking == STUDY_GROUP:
                summary.update(study_probability=probability, finding=finding.lower())
                summary["referenced_sop_instance_uids"] = refs
            else:
                for ref in refs:
                    summary["views"][ref] = probability
    return summary


def _code(item: Dataset) -> str:
    names = item.get("ConceptNameCodeSequence")
    return str(names[0].CodeValue) if names else ""


def _items(ds: Dataset, code: str) -> list[Dataset]:
    return [item for item in ds.get("ContentSequence", []) if _code(item) == code]

"""The study's Structured Report: Comprehensive SR holding TID 1500 (Measurement Report).

TID 1500 is the template PACS viewers and AI result consumers (e.g. OHIF, IHE AI Results) read. One
measurement group for the study (probability, threshold, finding, body part and whether it was given or
predicted, the algorithm) and one per view, each referencing the source instance it was measured on.
The observer device is the model (`mura.pacs.identity`). Built with highdicom, which checks the object
as it builds. Codes not in DICOM or SNOMED use the private coding scheme 99MURA (PS3.16 8.2: "99"
prefix).
"""

from __future__ import annotations

from typing import Any

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from mura.pacs.identity import (
    MANUFACTURER,
    NOT_FOR_DIAGNOSIS,
    PATIENT_STUDY_KEYWORDS,
    algorithm_identification,
    copy_study_modules,
    observer_device,
)
from mura.pacs.results import StudyResults
from mura.prediction import ModelIdentity, Prediction

SR_SERIES_NUMBER = 9901
SCHEME = "99MURA"
ABNORMALITY = hd.sr.CodedConcept("ABN", SCHEME, "Musculoskeletal radiograph abnormality")
ABNORMALITY_PROBABILITY = hd.sr.CodedConcept("ABN-PROB", SCHEME, "Probability of abnormality")
DECISION_THRESHOLD = hd.sr.CodedConcept("THRESHOLD", SCHEME, "Decision threshold")
OPERATING_POINT = hd.sr.CodedConcept("OP", SCHEME, "Operating point")
BODY_PART_SOURCE = hd.sr.CodedConcept("BP-SRC", SCHEME, "Body part source")
BODY_PART_SOURCES = {
    "given": hd.sr.CodedConcept("BP-GIVEN", SCHEME, "Body part given"),
    "dicom": hd.sr.CodedConcept("BP-DICOM", SCHEME, "Body part read from the image's DICOM attributes"),
    "predicted": hd.sr.CodedConcept("BP-PRED", SCHEME, "Body part predicted by the model"),
}
NOT_ASSESSED = hd.sr.CodedConcept("NOT-ASSESSED", SCHEME, "Not assessed: outside what the model can judge")
REASON = hd.sr.CodedConcept("REASON", SCHEME, "Reason not assessed")
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


def _group(
    tracking: str,
    prediction: Prediction,
    algorithm_id: hd.sr.AlgorithmIdentification,
    sources: list[Dataset],
    with_threshold: bool,
) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    """One TID 1501 group. A not-assessed prediction states so, with its reasons, and claims no finding:
    no probability, no presence or absence, no finding site."""
    unit = codes.UCUM.NoUnits
    measurements, evaluations = [], []
    if prediction.fracture_probability is None:
        evaluations.append(hd.sr.QualitativeEvaluation(ABNORMALITY, NOT_ASSESSED))
        evaluations += [
            hd.sr.QualitativeEvaluation(REASON, hd.sr.CodedConcept(f"REASON-{i}", SCHEME, reason[:64]))
            for i, reason in enumerate(prediction.reasons, start=1)
        ]
    else:
        present = prediction.decision == "abnormal"
        measurements.append(hd.sr.Measurement(ABNORMALITY_PROBABILITY, prediction.fracture_probability, unit))
        evaluations.append(
            hd.sr.QualitativeEvaluation(ABNORMALITY, codes.SCT.Present if present else codes.SCT.Absent)
        )
        evaluations.append(
            hd.sr.QualitativeEvaluation(BODY_PART_SOURCE, BODY_PART_SOURCES[prediction.body_part_origin])
        )
    if with_threshold:
        measurements.append(hd.sr.Measurement(DECISION_THRESHOLD, prediction.threshold, unit))
        point = prediction.operating_point
        evaluations.append(
            hd.sr.QualitativeEvaluation(
                OPERATING_POINT, hd.sr.CodedConcept(point, SCHEME, f"{point} operating point")
            )
        )
    sites = [hd.sr.FindingSite(BODY_PART_CODES[prediction.body_part])] if prediction.body_part else None
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=generate_uid(), identifier=tracking),
        finding_type=ABNORMALITY,
        algorithm_id=algorithm_id,
        finding_sites=sites,
        measurements=measurements or None,
        qualitative_evaluations=evaluations,
        source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(s) for s in sources],
    )


def make_report(identity: ModelIdentity, study: StudyResults, reference: Dataset) -> Dataset:
    """The study's Comprehensive SR (TID 1500); views without a DICOM source reference their capture."""
    algorithm_id = algorithm_identification(identity, study.prediction)
    sources = [v.header if v.header is not None else v.capture for v in study.views]
    groups = [_group(STUDY_GROUP, study.prediction, algorithm_id, sources, with_threshold=True)]
    groups += [
        _group(f"view {i}: {v.name}"[:64], v.prediction, algorithm_id, [s], with_threshold=False)
        for i, (v, s) in enumerate(zip(study.views, sources, strict=True), start=1)
    ]
    context = hd.sr.ObservationContext(
        observer_device_context=hd.sr.ObserverContext(codes.DCM.Device, observer_device(identity))
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
    copy_study_modules(reference, sr)
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
    """What a consumer reads back from our SR through highdicom's TID 1500 accessors: the study's
    probability, finding, algorithm (name, version, parameters) and referenced instances, each view's
    probability (keyed by the SOP Instance UID it references) and the observer device's UID."""
    report = hd.sr.ComprehensiveSR.from_dataset(sr, copy=True).content
    summary: dict[str, Any] = {"views": {}, "referenced_sop_instance_uids": []}
    for group in report.get_image_measurement_groups(finding_type=ABNORMALITY):
        found = group.get_measurements(name=ABNORMALITY_PROBABILITY)
        probability = float(found[0].value) if found else None
        refs = [str(image.referenced_sop_instance_uid) for image in group.source_images]
        if group.tracking_identifier != STUDY_GROUP:
            summary["views"].update(dict.fromkeys(refs, probability))
            continue
        items = group[0].ContentSequence
        summary.update(
            study_probability=probability,
            finding=group.get_qualitative_evaluations(name=ABNORMALITY)[0].value.meaning.lower(),
            reasons=[e.value.meaning for e in group.get_qualitative_evaluations(name=REASON)],
            referenced_sop_instance_uids=refs,
            algorithm={
                "name": items.find(codes.DCM.AlgorithmName)[0].value,
                "version": items.find(codes.DCM.AlgorithmVersion)[0].value,
                "parameters": [item.value for item in items.find(codes.DCM.AlgorithmParameters)],
            },
        )
    devices = report.get_observer_contexts(observer_type=codes.DCM.Device)
    summary["device_uid"] = str(devices[0].observer_identifying_attributes.uid) if devices else None
    return summary

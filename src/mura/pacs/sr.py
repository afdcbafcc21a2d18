"""The study's Structured Report: Comprehensive SR holding TID 1500 (Measurement Report).

TID 1500 is the template PACS viewers and AI result consumers (e.g. OHIF, IHE AI Results) read. One
measurement group for the study and one per view, each referencing the source instance it was measured
on, and one planar ROI group (TID 1410) per finding of a DICOM view: its box as a closed SCOORD POLYLINE
on the source instance (in the source's pixels: `Prediction.findings` are in the decoded original's), the
finding Present, its score as the Probability and its operating point as a Comment ("operating point:
definite"). A view known only by its capture (a non-DICOM input) gets no region: the capture's pixels
are enlarged and banner-shifted, and the box is burned into it anyway. The observer device is the
model (`mura.pacs.identity`). Built with highdicom, which checks the object as it builds.

Every code is standard, so a PACS can index the finding and `dciodvfy` knows every scheme:
- finding: SNOMED CT 125605004 "Fracture of bone" for a model trained on fracture labels; for MURA's
  abnormality labels (fractures, hardware, degenerative disease, lesions) SNOMED CT 49755003
  "Morphologically abnormal structure", the concept DICOM's finding context groups use for an
  unspecified morphological abnormality. Its evaluation is Present / Absent, or "Not Evaluated"
  (SNOMED CT 373121007) for a view outside what the model can judge, with its reasons as text.
- anatomy: SNOMED CT for the seven MURA parts and FracAtlas's regions (hip, leg).
- probability: DCM 122157 "Probability"; threshold: DCM 122411 "Threshold Value".
- what has no standard concept is text under a standard name: where the body part came from
  (`given` / `dicom` / `predicted`, SNOMED CT 260753009 "Source"), the reasons (DCM 121106 "Comment")
  and a one-line summary a reader can take in at a glance (DCM 121111 "Summary").
The operating point and the model's one SHA-256 are the algorithm identification's parameters.

A re-analysis of a study that received a late view replaces the earlier report: same series, the next
instance number, and the earlier one in the Predecessor Documents Sequence.
"""

from __future__ import annotations

from typing import Any

import highdicom as hd
import numpy as np
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
from mura.pacs.results import PriorResults, StudyResults
from mura.prediction import Finding, ModelIdentity, PositiveClass, Prediction

SR_SERIES_NUMBER = 9901
FINDINGS: dict[str, hd.sr.CodedConcept] = {
    "fracture": hd.sr.CodedConcept("125605004", "SCT", "Fracture of bone"),
    "abnormality": hd.sr.CodedConcept("49755003", "SCT", "Morphologically abnormal structure"),
}
PROBABILITY = codes.DCM.Probability
THRESHOLD = codes.DCM.ThresholdValue
NOT_EVALUATED = codes.SCT.NotEvaluated
SOURCE = codes.SCT.Source  # the body part's: "body part: given | dicom | predicted"
SOURCE_PREFIX = "body part: "
REASON = codes.DCM.Comment
SUMMARY = codes.DCM.Summary
LONG_TEXT = 1024  # a UT value may hold far more; a summary line is kept short
BODY_PART_CODES: dict[str, hd.sr.CodedConcept | Any] = {
    "ELBOW": codes.SCT.ElbowJoint,
    "FINGER": codes.SCT.Finger,
    "FOREARM": codes.SCT.Forearm,
    "HAND": codes.SCT.Hand,
    "HUMERUS": codes.SCT.Humerus,
    "SHOULDER": codes.SCT.Shoulder,
    "WRIST": codes.SCT.WristJoint,
    "HIP": codes.SCT.Hip,  # FracAtlas "hip": the hip region (29836001)
    "LEG": codes.SCT.LowerLimb,  # FracAtlas "leg": femur to foot (61685007)
}
STUDY_GROUP = "study"
OPERATING_POINT_PREFIX = "operating point: "


def summary_text(prediction: Prediction) -> str:
    """One line a reader takes in at a glance, e.g. "Possible fracture (p = 0.56; suspicious operating
    point: sensitivity 0.90, specificity 0.67)"; "Not assessed: <reasons>" when not assessed."""
    if not prediction.assessed:
        return "Not assessed: " + "; ".join(prediction.reasons)
    words = prediction.tier_text or prediction.decision
    figures = prediction.tier_figures
    point = figures.operating_point if figures else prediction.operating_point
    validated = [
        f"{name} {value:.2f}"
        for name, value in (
            ("sensitivity", figures.sensitivity if figures else None),
            ("specificity", figures.specificity if figures else None),
        )
        if value is not None
    ]
    detail = f"{point} operating point" + (": " + ", ".join(validated) if validated else "")
    return f"{words} (p = {prediction.fracture_probability:.2f}; {detail})"


def _text(name: Any, value: str) -> hd.sr.TextContentItem:
    return hd.sr.TextContentItem(name=name, value=value[:LONG_TEXT], relationship_type="CONTAINS")


def _group(
    tracking: str,
    prediction: Prediction,
    finding: hd.sr.CodedConcept,
    algorithm_id: hd.sr.AlgorithmIdentification,
    sources: list[Dataset],
    is_study: bool,
) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    """One TID 1501 group. A not-assessed prediction says "Not Evaluated", with its reasons, and claims
    no finding: no probability, no presence or absence, no finding site."""
    unit = codes.UCUM.NoUnits
    measurements, texts = [], []
    if prediction.fracture_probability is None:
        evaluation = hd.sr.QualitativeEvaluation(finding, NOT_EVALUATED)
        texts += [_text(REASON, reason) for reason in prediction.reasons]
    else:
        present = prediction.decision == "abnormal"
        measurements.append(hd.sr.Measurement(PROBABILITY, prediction.fracture_probability, unit))
        evaluation = hd.sr.QualitativeEvaluation(finding, codes.SCT.Present if present else codes.SCT.Absent)
        texts.append(_text(SOURCE, SOURCE_PREFIX + prediction.body_part_origin))
    if is_study:
        measurements.append(hd.sr.Measurement(THRESHOLD, prediction.threshold, unit))
        texts.insert(0, _text(SUMMARY, summary_text(prediction)))
    site = BODY_PART_CODES.get(prediction.body_part or "")
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=generate_uid(), identifier=tracking),
        finding_type=finding,
        algorithm_id=algorithm_id,
        finding_sites=[hd.sr.FindingSite(site)] if site is not None else None,
        measurements=measurements or None,
        qualitative_evaluations=[evaluation],
        source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(s) for s in sources],
    )
    group[0].ContentSequence.extend(texts)
    return group


def _finding_group(
    tracking: str,
    finding: Finding,
    concept: hd.sr.CodedConcept,
    algorithm_id: hd.sr.AlgorithmIdentification,
    source: Dataset,
) -> hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations:
    """One TID 1410 group: the finding's box on `source` (closed polyline, column/row), Present, its score
    as the probability and its operating point as a comment."""
    x0, y0, x1, y1 = finding.box
    corners = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]], dtype=float)
    region = hd.sr.ImageRegion(
        graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
        graphic_data=corners,
        source_image=hd.sr.SourceImageForRegion.from_source_image(source),
    )
    group = hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=generate_uid(), identifier=tracking),
        referenced_region=region,
        finding_type=concept,
        algorithm_id=algorithm_id,
        measurements=[hd.sr.Measurement(PROBABILITY, finding.score, codes.UCUM.NoUnits)],
        qualitative_evaluations=[hd.sr.QualitativeEvaluation(concept, codes.SCT.Present)],
    )
    group[0].ContentSequence.append(_text(REASON, OPERATING_POINT_PREFIX + finding.operating_point))
    return group


def make_report(
    identity: ModelIdentity,
    study: StudyResults,
    reference: Dataset,
    positive_class: PositiveClass,
    prior: PriorResults | None = None,
) -> Dataset:
    """The study's Comprehensive SR (TID 1500); views without a DICOM source reference their capture.
    With `prior` (the study's earlier results) it replaces that report in its series."""
    finding = FINDINGS[positive_class]
    algorithm_id = algorithm_identification(identity, study.prediction)
    sources = [v.header if v.header is not None else v.capture for v in study.views]
    groups = [_group(STUDY_GROUP, study.prediction, finding, algorithm_id, sources, is_study=True)]
    groups += [
        _group(f"view {i}: {v.name}"[:64], v.prediction, finding, algorithm_id, [s], is_study=False)
        for i, (v, s) in enumerate(zip(study.views, sources, strict=True), start=1)
    ]
    groups += [
        _finding_group(f"view {i} finding {k}", found, finding, algorithm_id, v.header)
        for i, v in enumerate(study.views, start=1)
        if v.header is not None
        for k, found in enumerate(v.prediction.findings, start=1)
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
        series_instance_uid=prior.sr_series_uid if prior else generate_uid(),
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=generate_uid(),
        instance_number=prior.sr_instance_number + 1 if prior else 1,
        manufacturer=MANUFACTURER,
        is_complete=True,
        previous_versions=[prior.sr_reference()] if prior else None,
    )
    copy_study_modules(reference, sr)
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


def _finding_summary(group: hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations) -> dict[str, Any]:
    """A finding as a consumer reads it back: the source instance, the box (from the polyline), score and
    operating point."""
    region = group.roi
    points = np.asarray(region.value, dtype=float)
    comments = [t.removeprefix(OPERATING_POINT_PREFIX) for t in _texts(group, REASON)]
    return {
        "source": str(region.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID),
        "box": (*points.min(axis=0), *points.max(axis=0)),
        "score": float(group.get_measurements(name=PROBABILITY)[0].value),
        "operating_point": comments[0] if comments else None,
    }


def _texts(group: Any, name: Any) -> list[str]:
    return [str(item.value) for item in group[0].ContentSequence.find(name) if item.ValueType == "TEXT"]


def sr_summary(sr: Dataset) -> dict[str, Any]:
    """What a consumer reads back from our SR through highdicom's TID 1500 accessors: the study's
    finding (its SNOMED CT code and evaluation), probability, summary line, algorithm (name, version,
    parameters) and referenced instances, each view's probability and body-part source (keyed by the
    SOP Instance UID it references), the reports it replaces and the observer device's UID."""
    report = hd.sr.ComprehensiveSR.from_dataset(sr, copy=True).content
    summary: dict[str, Any] = {"views": {}, "body_part_sources": {}, "referenced_sop_instance_uids": []}
    for group in report.get_image_measurement_groups():
        evaluation = next(e for e in group.get_qualitative_evaluations() if e.name in FINDINGS.values())
        found = group.get_measurements(name=PROBABILITY)
        probability = float(found[0].value) if found else None
        refs = [str(image.referenced_sop_instance_uid) for image in group.source_images]
        sources = [s.removeprefix(SOURCE_PREFIX) for s in _texts(group, SOURCE)]
        if group.tracking_identifier != STUDY_GROUP:
            summary["views"].update(dict.fromkeys(refs, probability))
            summary["body_part_sources"].update(dict.fromkeys(refs, sources[0] if sources else None))
            continue
        items = group[0].ContentSequence
        summary.update(
            study_probability=probability,
            finding_code=(evaluation.name.scheme_designator, evaluation.name.value),
            finding=evaluation.value.meaning.lower(),
            text=_texts(group, SUMMARY)[0],
            reasons=_texts(group, REASON),
            referenced_sop_instance_uids=refs,
            algorithm={
                "name": items.find(codes.DCM.AlgorithmName)[0].value,
                "version": items.find(codes.DCM.AlgorithmVersion)[0].value,
                "parameters": [item.value for item in items.find(codes.DCM.AlgorithmParameters)],
            },
        )
    summary["findings"] = [_finding_summary(group) for group in report.get_planar_roi_measurement_groups()]
    summary["replaces"] = [
        str(item.ReferencedSOPInstanceUID)
        for study in sr.get("PredecessorDocumentsSequence", [])
        for series in study.ReferencedSeriesSequence
        for item in series.ReferencedSOPSequence
    ]
    devices = report.get_observer_contexts(observer_type=codes.DCM.Device)
    summary["device_uid"] = str(devices[0].observer_identifying_attributes.uid) if devices else None
    return summary

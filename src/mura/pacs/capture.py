"""Secondary Capture per view: the Grad-CAM overlay under a banner that states the result.

The banner carries the probability, decision, operating point and a burned-in "NOT FOR DIAGNOSTIC
USE" line, so a viewer that shows only pixels still shows what the picture is. Each capture goes into
one new series of the source study (patient and study copied) and references its source image.
Built with highdicom, which checks the object as it builds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import highdicom as hd
import numpy as np
from PIL import Image, ImageDraw, ImageFont
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from mura.constants import BODY_PARTS
from mura.inference.gradcam import overlay
from mura.pacs.identity import MANUFACTURER, NOT_FOR_DIAGNOSIS, copy_study_modules, model_label
from mura.pacs.results import ViewResult
from mura.prediction import ModelIdentity, Prediction

if TYPE_CHECKING:
    from mura.inference.gradcam import GradCamExplainer

SC_SERIES_NUMBER = 9902
MIN_CAPTURE_WIDTH = 512  # small images are enlarged so the banner text stays legible


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


def _view_lines(prediction: Prediction, identity: ModelIdentity) -> list[str]:
    if not prediction.assessed:
        return [
            "not assessed: " + "; ".join(prediction.reasons),
            f"mura {identity.version}",
            NOT_FOR_DIAGNOSIS,
        ]
    return [
        f"abnormality p = {prediction.fracture_probability:.3f}: {prediction.decision} at the "
        f"{prediction.operating_point} operating point ({prediction.threshold:.3f})",
        f"body part {prediction.body_part} ({prediction.body_part_origin}), mura {identity.version}",
        NOT_FOR_DIAGNOSIS,
    ]


def make_captures(
    views: list[ViewResult], reference: Dataset, explainer: GradCamExplainer, identity: ModelIdentity
) -> list[Dataset]:
    """One RGB Secondary Capture per view, all in one new series of the reference's study."""
    series_uid = generate_uid()
    captures = []
    for number, view in enumerate(views, start=1):
        prediction = view.prediction
        given = prediction.body_part is not None and prediction.body_part_origin != "predicted"
        part = BODY_PARTS.index(prediction.body_part) if given else -1
        lines = _view_lines(prediction, identity)
        pixels = _banner(overlay(view.pixels, explainer.heatmap(view.pixels, part)), lines)
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
        copy_study_modules(reference, capture)
        # The overlay keeps the source's orientation (enlarged, banner on top), so its value still holds.
        capture.PatientOrientation = source.get("PatientOrientation", "")
        capture.Laterality = source.get("Laterality", source.get("ImageLaterality", ""))
        capture.BurnedInAnnotation = "YES"
        capture.ImageType = ["DERIVED", "SECONDARY"]
        capture.SeriesDescription = f"mura Grad-CAM overlays ({NOT_FOR_DIAGNOSIS.lower()})"
        capture.DerivationDescription = "Grad-CAM heatmap of the abnormality output over the radiograph"
        capture.ManufacturerModelName = model_label(identity)
        capture.SoftwareVersions = identity.version
        if view.header is not None:
            item = Dataset()
            item.ReferencedSOPClassUID = view.header.SOPClassUID
            item.ReferencedSOPInstanceUID = view.header.SOPInstanceUID
            capture.SourceImageSequence = [item]
        captures.append(capture)
    return captures

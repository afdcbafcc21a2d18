"""Secondary Capture per view: the grey radiograph, the model's findings boxed (or, for a model without
a map head, the region that drove the score outlined), and a banner that states the result.

A reader looks at the film, not at a colour wash: the capture stays grey (MONOCHROME2). A view with
findings (`Prediction.findings`, from the model's fracture map) shows each as a box, dotted at the
`suspicious` operating point and solid at `definite`, as commercial fracture readers draw them. Without
findings, where the model looked is one outline, the contour of the Grad-CAM map at half its maximum,
drawn only where the view was called positive (a "no fracture seen" view has nothing to point at). The
banner carries the tier in words, the probability, the operating point and a burned-in "NOT FOR
DIAGNOSTIC USE" line, so a viewer that shows only pixels still shows what the picture is.

It is stored JPEG baseline (quality 95, via highdicom and Pillow), which every PACS that takes
compressed images takes. Measured: FracAtlas films (410-512 px wide, enlarged to 512) give 33-87 KB
where the uncompressed RGB captures were 0.7-1.1 MB; a 2,500 x 3,000 view gives 0.8 MB where it was
24 MB. RLE Lossless (pydicom's encoder) only halves a radiograph. The lossy compression is declared
(Lossy Image Compression 01, its ratio and method). Each capture goes into one series of the source
study (patient and study copied; a re-analysis after a late view continues that series) and references
its source image. Built with highdicom, which checks the object as it builds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import cv2
import highdicom as hd
import numpy as np
from PIL import Image, ImageDraw, ImageFont
from pydicom.dataset import Dataset
from pydicom.uid import JPEGBaseline8Bit, generate_uid

from mura.constants import BODY_PARTS
from mura.pacs.identity import MANUFACTURER, NOT_FOR_DIAGNOSIS, copy_study_modules, model_label
from mura.pacs.results import PriorResults, ViewResult
from mura.prediction import Finding, ModelIdentity, Prediction

if TYPE_CHECKING:
    from mura.inference.gradcam import GradCamExplainer

SC_SERIES_NUMBER = 9902
MIN_CAPTURE_WIDTH = 512  # small images are enlarged so the banner text stays legible
HIGH_REGION = 0.5  # the outline: where the Grad-CAM map reaches half its maximum
JPEG_METHOD = "ISO_10918_1"
DASH = 12  # a suspicious box's dashes and gaps, in capture pixels at 512 px wide (scaled with the film)


def _line_width(image: np.ndarray) -> int:
    return max(2, round(max(image.shape) / 250))


def _edges(box: tuple[float, ...], dotted: bool, dash: int) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """The segments of a box's outline: its four sides, or dashes along them."""
    x0, y0, x1, y1 = (round(c) for c in box)
    sides = [((x0, y0), (x1, y0)), ((x1, y0), (x1, y1)), ((x1, y1), (x0, y1)), ((x0, y1), (x0, y0))]
    if not dotted:
        return sides
    segments = []
    for (ax, ay), (bx, by) in sides:
        length = max(abs(bx - ax), abs(by - ay), 1)
        for start in range(0, length, 2 * dash):
            ends = (start / length, min(start + dash, length) / length)
            a, b = ((round(ax + (bx - ax) * t), round(ay + (by - ay) * t)) for t in ends)
            segments.append((a, b))
    return segments


def draw_findings(image: np.ndarray, findings: list[Finding], scale: float) -> np.ndarray:
    """The image (grey uint8 [H, W], or RGB [H, W, 3]: `mura explain`'s heatmap) with each finding's box
    (original pixels x `scale`) drawn white on a black edge: dotted when `suspicious`, solid when
    `definite`."""
    out = image.copy()
    width = _line_width(image)
    dash = max(4, round(DASH * image.shape[1] / MIN_CAPTURE_WIDTH))
    channels = image.shape[2] if image.ndim == 3 else 1
    for finding in findings:
        box = tuple(c * scale for c in finding.box)
        segments = _edges(box, finding.operating_point == "suspicious", dash)
        for level, thickness in ((0, width * 2 + 1), (255, width)):
            colour = (level,) * channels
            for start, end in segments:
                cv2.line(out, start, end, colour, thickness)
    return out


def outline(image: np.ndarray, heatmap: np.ndarray) -> np.ndarray:
    """The grey image with the contour of the heatmap's high region drawn white on a black edge (seen
    on bright bone and on dark background alike); uint8 [H, W]."""
    mask = (heatmap >= HIGH_REGION * float(heatmap.max())).astype(np.uint8) if heatmap.max() > 0 else None
    out = image.copy()
    if mask is None:
        return out
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    width = _line_width(image)
    cv2.drawContours(out, contours, -1, 0, width * 2 + 1)
    cv2.drawContours(out, contours, -1, 255, width)
    return out


def legible(image: np.ndarray) -> np.ndarray:
    """Small images enlarged to `MIN_CAPTURE_WIDTH` so the banner text and the outline stay legible."""
    height, width = image.shape[:2]
    if width >= MIN_CAPTURE_WIDTH:
        return image
    size = (MIN_CAPTURE_WIDTH, max(1, round(height * MIN_CAPTURE_WIDTH / width)))
    return cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)


def banner(grey: np.ndarray, lines: list[str]) -> np.ndarray:
    """A black banner of text lines above the image; the last line (NOT FOR DIAGNOSTIC USE) black on
    white so it stands out."""
    image = Image.fromarray(grey)
    size = max(12, image.width // 36)
    font = ImageFont.load_default(size=size)
    while size > 8 and max(font.getlength(line) for line in lines) > image.width - 8:
        size -= 1
        font = ImageFont.load_default(size=size)
    line_height = round(size * 1.3)
    top = line_height * len(lines) + 8
    out = Image.new("L", (image.width, image.height + top), 0)
    out.paste(image, (0, top))
    draw = ImageDraw.Draw(out)
    for i, line in enumerate(lines):
        y = 4 + i * line_height
        if line == NOT_FOR_DIAGNOSIS:
            draw.rectangle((0, y - 2, round(font.getlength(line)) + 8, y + line_height - 2), fill=255)
        draw.text((4, y), line, fill=0 if line == NOT_FOR_DIAGNOSIS else 255, font=font)
    return np.asarray(out, dtype=np.uint8)


def view_lines(prediction: Prediction, identity: ModelIdentity) -> list[str]:
    """The banner: the tier in words with the probability and operating point, the body part and where
    it came from, the model, NOT FOR DIAGNOSTIC USE."""
    if not prediction.assessed:
        reasons = "Not assessed: " + "; ".join(prediction.reasons)
        return [reasons, f"{model_label(identity)} {identity.version}", NOT_FOR_DIAGNOSIS]
    if prediction.findings:
        shown = f"{len(prediction.findings)} box(es): dotted suspicious, solid definite"
    else:
        shown = "outlined: where the model looked" if prediction.decision == "abnormal" else "no outline"
    return [
        f"{prediction.tier_text or prediction.decision}: p = {prediction.fracture_probability:.2f} "
        f"({prediction.operating_point} operating point {prediction.threshold:.3f}; {shown})",
        f"{prediction.body_part_words}; {model_label(identity)} {identity.version}",
        NOT_FOR_DIAGNOSIS,
    ]


def _pixels(view: ViewResult, explainer: GradCamExplainer | None, identity: ModelIdentity) -> np.ndarray:
    prediction = view.prediction
    grey = legible(view.pixels)
    if prediction.findings:
        grey = draw_findings(grey, prediction.findings, grey.shape[1] / view.pixels.shape[1])
    elif explainer is not None and prediction.decision == "abnormal":
        given = prediction.body_part is not None and prediction.body_part_origin != "predicted"
        part = BODY_PARTS.index(prediction.body_part) if given else -1
        heatmap = explainer.heatmap(view.pixels, part)
        grey = outline(grey, cv2.resize(heatmap, grey.shape[::-1], interpolation=cv2.INTER_LINEAR))
    return banner(grey, view_lines(prediction, identity))


def make_captures(
    views: list[ViewResult],
    reference: Dataset,
    explainer: GradCamExplainer | None,
    identity: ModelIdentity,
    prior: PriorResults | None = None,
) -> list[Dataset]:
    """One grey JPEG Secondary Capture per view, in one series of the reference's study (the prior
    results' series, numbered on from them, when a re-analysis adds views). `explainer` is needed only
    for views called positive without findings (the others get no outline)."""
    series_uid = (prior.capture_series_uid if prior else None) or generate_uid()
    first = (prior.captures if prior else 0) + 1
    captures = []
    for number, view in enumerate(views, start=first):
        pixels = _pixels(view, explainer, identity)
        source = view.header if view.header is not None else reference
        capture = hd.sc.SCImage(
            pixel_array=pixels,
            photometric_interpretation=hd.PhotometricInterpretationValues.MONOCHROME2,
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
            transfer_syntax_uid=JPEGBaseline8Bit,
        )
        copy_study_modules(reference, capture)
        # The capture keeps the source's orientation (enlarged, banner on top), so its value still holds.
        capture.PatientOrientation = source.get("PatientOrientation", "")
        capture.Laterality = source.get("Laterality", source.get("ImageLaterality", ""))
        capture.BurnedInAnnotation = "YES"
        capture.ImageType = ["DERIVED", "SECONDARY"]
        capture.LossyImageCompression = "01"
        capture.LossyImageCompressionRatio = f"{pixels.size / len(capture.PixelData):.2f}"[:16]
        capture.LossyImageCompressionMethod = JPEG_METHOD
        capture.SeriesDescription = f"mura result overlays ({NOT_FOR_DIAGNOSIS.lower()})"
        capture.DerivationDescription = (
            "Radiograph with the fracture map's findings boxed (dotted suspicious, solid definite)"
            if view.prediction.findings
            else "Radiograph with the Grad-CAM region of the fracture output outlined (half maximum)"
        )
        capture.ManufacturerModelName = model_label(identity)
        capture.SoftwareVersions = identity.version
        if view.header is not None:
            item = Dataset()
            item.ReferencedSOPClassUID = view.header.SOPClassUID
            item.ReferencedSOPInstanceUID = view.header.SOPInstanceUID
            capture.SourceImageSequence = [item]
        captures.append(capture)
    return captures

"""DICOM results a PACS understands: the SR's finding is a SNOMED CT concept (a fracture for a model
trained on fracture labels), it holds a one-line summary, no private code is left for dciodvfy to warn
about; the Secondary Capture is a grey, outlined, JPEG-compressed picture of a stated size; files are
named SR_ / SC_; a re-analysis after a late view replaces the report it supersedes."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import JPEGBaseline8Bit

from mura.checkpoint import load_checkpoint, update_checkpoint
from mura.decision import PointFigures
from mura.inference.predictor import Predictor
from mura.pacs.results import StudyIdentity
from mura.pacs.sr import sr_summary
from mura.pacs.study import study_results

GOOD = ("1.dcm", "2.dcm", "3.dcm")
FRACATLAS_CAPTURE_LIMIT = 150_000  # bytes; measured 33-87 KB on FracAtlas films (0.7-1.1 MB as RGB)


@pytest.fixture(scope="module")
def fracture_predictor(pacs_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Predictor:
    """The PACS test model, recorded as trained on fracture labels with figures at `suspicious`."""
    decision = load_checkpoint(pacs_checkpoint).meta.decision
    figures = {"suspicious": PointFigures(tp=90, fp=33, tn=67, fn=10)}
    target = tmp_path_factory.mktemp("fracture") / "fracture.pt"
    update_checkpoint(
        pacs_checkpoint, target, positive_class="fracture", decision=replace(decision, figures=figures)
    )
    return Predictor.from_checkpoints([target], device="cpu", runtime="torch")


def test_a_fracture_model_reports_snomed_fracture_of_bone_with_a_summary_line(
    fracture_predictor, study_dir, tmp_path, assert_valid
) -> None:
    made = study_results(fracture_predictor, [study_dir / n for n in GOOD], operating_point="suspicious")
    written = made.write(tmp_path)
    summary = sr_summary(pydicom.dcmread(next(p for p in written if p.name.startswith("SR_"))))
    assert summary["finding_code"] == ("SCT", "125605004")  # Fracture of bone
    assert summary["finding"] in {"present", "absent"}
    p = made.prediction.fracture_probability
    pattern = (
        rf"(Fracture likely|Possible fracture|No fracture seen) \(p = {p:.2f}; suspicious operating point"
    )
    assert re.fullmatch(pattern + r": sensitivity 0\.90, specificity 0\.67\)", summary["text"])
    assert_valid(written)  # strict: no warning but an unknown Laterality on the captures
    assert not any(b"99MURA" in path.read_bytes() for path in written)


def test_an_abnormality_model_reports_a_morphological_abnormality(predictor, study_dir) -> None:
    made = study_results(predictor, [study_dir / n for n in GOOD], captures=False)
    assert sr_summary(made.sr)["finding_code"] == ("SCT", "49755003")  # Morphologically abnormal structure


def test_results_are_named_by_what_they_are(predictor, study_dir, tmp_path) -> None:
    made = study_results(predictor, [study_dir / n for n in GOOD])
    names = sorted(p.name for p in made.write(tmp_path))
    assert names == sorted(
        [f"SR_{made.sr.SOPInstanceUID}.dcm"] + [f"SC_{c.SOPInstanceUID}.dcm" for c in made.captures]
    )


def test_a_capture_of_a_fracatlas_film_is_grey_outlined_compressed_and_small(
    predictor, fracatlas_dir, tmp_path, assert_valid
) -> None:
    film = sorted((fracatlas_dir / "images" / "Fractured").glob("*.jpg"))[0]
    identity = StudyIdentity("P1", "Film^Frac", "1.2.826.0.1.3680043.10.9999.2")
    flagged = study_results(predictor, [film], identity=identity, operating_point=0.0)  # called positive
    cleared = study_results(predictor, [film], identity=identity, operating_point=1.0)  # called negative
    captures = [flagged.captures[0], cleared.captures[0]]
    for capture in captures:
        assert capture.PhotometricInterpretation == "MONOCHROME2" and capture.SamplesPerPixel == 1
        assert capture.file_meta.TransferSyntaxUID == JPEGBaseline8Bit
        assert capture.LossyImageCompression == "01" and capture.LossyImageCompressionMethod == "ISO_10918_1"
    sizes = [p.stat().st_size for p in flagged.write(tmp_path / "flagged") if p.name.startswith("SC_")]
    assert sizes[0] < FRACATLAS_CAPTURE_LIMIT
    outlined, plain = (c.pixel_array.astype(int) for c in captures)
    body = slice(plain.shape[0] // 5, None)  # below the banner
    assert (outlined[body] >= 250).sum() > (plain[body] >= 250).sum() + 100  # the white outline
    assert_valid([tmp_path / "flagged" / f"SC_{flagged.captures[0].SOPInstanceUID}.dcm"])


def test_a_reanalysis_with_a_late_view_replaces_the_report_and_adds_only_the_new_capture(
    predictor, study_dir, assert_valid, tmp_path
) -> None:
    first = study_results(predictor, [study_dir / n for n in GOOD[:2]])
    again = study_results(predictor, [study_dir / n for n in GOOD], prior=first.record())
    replaced = sr_summary(again.sr)
    assert replaced["replaces"] == [first.sr.SOPInstanceUID]
    assert again.sr.SeriesInstanceUID == first.sr.SeriesInstanceUID and again.sr.InstanceNumber == 2
    assert len(replaced["referenced_sop_instance_uids"]) == 3  # the whole study, not the late view alone
    late = str(pydicom.dcmread(study_dir / GOOD[2], stop_before_pixels=True).SOPInstanceUID)
    assert [c.SourceImageSequence[0].ReferencedSOPInstanceUID for c in again.captures] == [late]
    assert again.captures[0].SeriesInstanceUID == first.captures[0].SeriesInstanceUID
    assert again.captures[0].InstanceNumber == 3
    assert_valid(again.write(tmp_path))

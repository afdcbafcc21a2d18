"""DICOM results of a study: the SR carries the predictor's study probability and references exactly the
good source instances; each good view gets a non-blank Secondary Capture; dciodvfy finds no error."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from mura.cli import main
from mura.data.synth import render_image
from mura.errors import MuraError
from mura.inference.dicom_objects import checkpoint_sha256, sr_summary
from mura.inference.dicom_out import (
    StudyIdentity,
    StudyResults,
    dataset_bytes,
    group_studies,
    study_results,
)
from mura.inference.files import iter_file_predictions, study_record
from mura.inference.predictor import Predictor

DX = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation
BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"
THRESHOLDS = {"default": 0.5, "youden": 0.45, "suspicious": 0.3}


def dx_instance(path: Path, study: Dataset, view: int, photometric: str, **tags: object) -> Path:
    """A DX instance of a synthetic wrist radiograph (12-bit), in the patient and study of `study`."""
    grey = render_image("WRIST", view % 2 == 0, [7, view], view).astype(np.float64)[::4, ::4]
    stored = np.clip(grey * 16, 0, 4095).astype(np.uint16)
    if photometric == "MONOCHROME1":
        stored = 4095 - stored
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = DX, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.update(study)
    ds.SOPClassUID, ds.SOPInstanceUID = DX, meta.MediaStorageSOPInstanceUID
    ds.SeriesInstanceUID, ds.SeriesNumber, ds.InstanceNumber = generate_uid(), 1, view
    ds.Modality, ds.ImageType, ds.PatientOrientation = "DX", ["ORIGINAL", "PRIMARY"], ["L", "F"]
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = stored.tobytes()
    for key, value in tags.items():
        setattr(ds, key, value)
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture(scope="module")
def predictor(make_checkpoint) -> Predictor:
    checkpoint = make_checkpoint("dicom_out.pt", "custom_cnn", 32, seed=3, threshold=THRESHOLDS)
    return Predictor.from_checkpoints([checkpoint], device="cpu", runtime="torch")


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 good DX views (MONOCHROME1 and 2, body part on two), one undecodable, one text SR."""
    folder = tmp_path_factory.mktemp("study")
    study = Dataset()
    study.PatientName, study.PatientID, study.PatientBirthDate, study.PatientSex = "Doe^Jane", "P7", "", "F"
    study.StudyInstanceUID, study.StudyDate, study.StudyTime = generate_uid(), "20260301", "101500"
    study.StudyID, study.AccessionNumber, study.ReferringPhysicianName = "S1", "ACC7", ""
    dx_instance(folder / "1.dcm", study, 1, "MONOCHROME2", BodyPartExamined="WRIST", ImageLaterality="L")
    dx_instance(folder / "2.dcm", study, 2, "MONOCHROME1", BodyPartExamined="WRIST", ImageLaterality="L")
    dx_instance(folder / "3.dcm", study, 3, "MONOCHROME2")
    broken = pydicom.dcmread(dx_instance(folder / "4.dcm", study, 4, "MONOCHROME2"))
    broken.PixelData = broken.PixelData[:100]  # truncated: cannot be decoded
    broken.save_as(folder / "4.dcm")
    report = Dataset()
    report.file_meta = FileMetaDataset()
    report.file_meta.MediaStorageSOPClassUID, report.file_meta.MediaStorageSOPInstanceUID = (
        BASIC_TEXT_SR,
        "1.2.3",
    )
    report.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    report.update(study)
    report.SOPClassUID, report.SOPInstanceUID, report.Modality = BASIC_TEXT_SR, "1.2.3", "SR"
    report.save_as(folder / "5.dcm", enforce_file_format=True)
    return folder


def digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def results(predictor: Predictor, study_dir: Path) -> tuple[StudyResults, dict[str, str], dict[str, str]]:
    before = digests(study_dir)
    made = study_results(predictor, sorted(study_dir.glob("*.dcm")), operating_point="suspicious")
    return made, before, digests(study_dir)


def good_uids(study_dir: Path) -> set[str]:
    return {str(pydicom.dcmread(study_dir / f"{i}.dcm").SOPInstanceUID) for i in (1, 2, 3)}


def dciodvfy(path: Path) -> tuple[list[str], list[str]]:
    """(errors, warnings) dicom3tools' validator reports for one file."""
    if shutil.which("dciodvfy") is None:
        pytest.skip("dicom3tools' dciodvfy is not installed (Debian package dicom3tools)")
    run = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    lines = (run.stdout + run.stderr).splitlines()
    return [x for x in lines if x.startswith("Error")], [x for x in lines if x.startswith("Warning")]


# Warnings dciodvfy gives that we cannot avoid: our private codes' scheme (declared in the SR's Coding
# Scheme Identification Sequence, still not one dciodvfy knows) and an empty Laterality where the source
# does not say which side (allowed "when actually unknown").
ACCEPTED_WARNINGS = ("Unrecognized defined term <99MURA>", "attribute <Laterality>")


def assert_valid(paths: list[Path]) -> None:
    for path in paths:
        errors, warnings = dciodvfy(path)
        assert errors == [], f"{path.name}: {errors}"
        unexpected = [w for w in warnings if not any(a in w for a in ACCEPTED_WARNINGS)]
        assert unexpected == [], f"{path.name}: {unexpected}"


def content_texts(ds: Dataset) -> list[str]:
    """Every text value and code meaning in the SR content tree."""
    found = []
    for item in ds.get("ContentSequence", []):
        found += [str(item.TextValue)] if "TextValue" in item else []
        found += [str(c.CodeMeaning) for c in item.get("ConceptCodeSequence", [])]
        found += content_texts(item)
    return found


def test_sr_probability_equals_the_predictors_study_record(results, predictor, study_dir) -> None:
    made, _, _ = results
    good = [study_dir / f"{i}.dcm" for i in (1, 2, 3)]
    expected = study_record(study_dir, list(iter_file_predictions(predictor, good)), 0.3, "suspicious")
    summary = sr_summary(made.sr)
    assert abs(summary["study_probability"] - expected["fracture_probability"]) < 1e-6
    assert abs(made.record["fracture_probability"] - expected["fracture_probability"]) < 1e-6
    assert summary["finding"] == ("present" if expected["fracture_probability"] >= 0.3 else "absent")
    assert made.record["operating_point"] == "suspicious" and made.record["threshold"] == 0.3
    assert made.record["views"] == 3 and made.record["views_failed"] == 2


def test_sr_references_exactly_the_good_instances(results, study_dir) -> None:
    made, _, _ = results
    summary = sr_summary(made.sr)
    assert set(summary["referenced_sop_instance_uids"]) == good_uids(study_dir)
    assert set(summary["views"]) == good_uids(study_dir)
    evidence = {
        str(i.ReferencedSOPInstanceUID)
        for s in made.sr.CurrentRequestedProcedureEvidenceSequence
        for series in s.ReferencedSeriesSequence
        for i in series.ReferencedSOPSequence
    }
    assert evidence == good_uids(study_dir)
    by_uid = {str(v.header.SOPInstanceUID): v.record["fracture_probability"] for v in made.views}
    assert all(abs(summary["views"][uid] - p) < 1e-6 for uid, p in by_uid.items())


def test_sr_names_model_checkpoint_operating_point_and_body_part(results, predictor, study_dir) -> None:
    made, _, _ = results
    sr = made.sr
    assert sr.SOPClassUID == pydicom.uid.ComprehensiveSRStorage
    assert sr.StudyInstanceUID == pydicom.dcmread(study_dir / "1.dcm").StudyInstanceUID
    assert sr.PatientID == "P7" and sr.CompletionFlag == "COMPLETE" and sr.VerificationFlag == "UNVERIFIED"
    text = "\n".join(content_texts(sr))
    assert checkpoint_sha256(predictor.members[0].source) in text
    assert "custom_cnn" in text and "suspicious" in text and "Body part predicted by the model" in text
    assert "Wrist joint" in text  # finding site of the study, SNOMED coded
    assert "Body part given" in text  # views 1 and 2 carried BodyPartExamined


def test_bad_views_are_skipped_with_their_reason(results, study_dir) -> None:
    made, _, _ = results
    reasons = {path.name: reason for path, reason in made.skipped}
    assert set(reasons) == {"4.dcm", "5.dcm"}
    assert reasons["4.dcm"].startswith("cannot decode pixel data")
    assert reasons["5.dcm"].startswith("not an image SOP class (Basic Text SR Storage)")


def test_one_capture_per_good_view_in_a_new_series_of_the_study(results, study_dir) -> None:
    made, _, _ = results
    sources = [pydicom.dcmread(study_dir / f"{i}.dcm") for i in (1, 2, 3)]
    assert len(made.captures) == 3
    assert len({c.SeriesInstanceUID for c in made.captures}) == 1
    assert made.captures[0].SeriesInstanceUID not in {s.SeriesInstanceUID for s in sources}
    for capture, source in zip(made.captures, sources, strict=True):
        assert capture.SOPClassUID == SecondaryCaptureImageStorage and capture.BurnedInAnnotation == "YES"
        for keyword in (
            "PatientName",
            "PatientID",
            "PatientSex",
            "StudyInstanceUID",
            "StudyDate",
            "AccessionNumber",
        ):
            assert capture.get(keyword) == source.get(keyword), keyword
        assert capture.SourceImageSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
        pixels = capture.pixel_array
        assert pixels.ndim == 3 and pixels.shape[2] == 3 and pixels.std() > 10
        assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 100  # a coloured heatmap, not a flat image
        banner = pixels[: pixels.shape[0] // 5]
        yellow = (banner[..., 0] > 200) & (banner[..., 1] > 180) & (banner[..., 2] < 60)
        assert yellow.sum() > 50  # the NOT FOR DIAGNOSTIC USE line is burned in


def test_source_files_are_byte_identical(results) -> None:
    _, before, after = results
    assert before == after


def test_written_objects_are_readable_valid_and_never_overwritten(results, tmp_path: Path) -> None:
    made, _, _ = results
    written = made.write(tmp_path)
    assert sorted(p.name for p in written) == sorted(f"{d.SOPInstanceUID}.dcm" for d in made.datasets)
    assert len(written) == 4 and not list(tmp_path.glob(".*"))  # no temp files left behind
    reread = pydicom.dcmread(written[0])
    assert dataset_bytes(made.sr) == written[0].read_bytes()  # the same file in memory
    assert abs(sr_summary(reread)["study_probability"] - made.record["fracture_probability"]) < 1e-12
    assert_valid(written)
    before = digests(tmp_path)
    with pytest.raises(MuraError, match="already exists"):
        made.write(tmp_path)
    assert digests(tmp_path) == before


def test_a_study_of_only_bad_views_is_a_clear_error(predictor, study_dir) -> None:
    with pytest.raises(MuraError) as info:
        study_results(predictor, [study_dir / "4.dcm", study_dir / "5.dcm"])
    message = str(info.value)
    assert "none of the study's 2 file(s) could be predicted" in message and "\n" not in message
    assert "4.dcm: cannot decode pixel data" in message


@pytest.fixture(scope="module")
def png_study(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("png_study")
    paths = []
    for view in (1, 2):
        path = folder / f"view{view}.png"
        Image.fromarray(render_image("HAND", False, [5, view], view)[::4, ::4]).save(path)
        paths.append(path)
    return paths


def test_non_dicom_inputs_get_dicom_output_only_with_an_identity(predictor, png_study, tmp_path) -> None:
    plain = study_results(predictor, png_study)
    assert plain.sr is None and plain.captures == [] and "no DICOM output" in (plain.note or "")
    identity = StudyIdentity("P9", "Roe^Richard", "1.2.826.0.1.3680043.10.9999.1", accession_number="A9")
    made = study_results(predictor, png_study, identity=identity, body_part="hand")
    assert made.note is None and len(made.captures) == 2
    for ds in made.datasets:
        assert ds.PatientID == "P9" and ds.StudyInstanceUID == identity.study_instance_uid
        assert ds.AccessionNumber == "A9"
    summary = sr_summary(made.sr)
    assert set(summary["referenced_sop_instance_uids"]) == {c.SOPInstanceUID for c in made.captures}
    assert abs(summary["study_probability"] - made.record["fracture_probability"]) < 1e-12
    assert_valid(made.write(tmp_path))


def test_cli_dicom_out_matches_the_printed_study_record(
    predictor, study_dir, tmp_path, make_checkpoint
) -> None:
    checkpoint = make_checkpoint("dicom_out.pt", "custom_cnn", 32, seed=3, threshold=THRESHOLDS)
    out, err = io.StringIO(), io.StringIO()
    args = ["predict", str(study_dir), "-c", str(checkpoint), "--study", "--runtime", "torch"]
    with redirect_stdout(out), redirect_stderr(err):
        code = main([*args, "--threshold", "youden", "--dicom-out", str(tmp_path / "results")])
    assert code == 0, err.getvalue()
    study = [r for r in map(json.loads, out.getvalue().splitlines()) if r["kind"] == "study"][0]
    written = sorted((tmp_path / "results").glob("*.dcm"))
    reports = [
        pydicom.dcmread(p) for p in written if pydicom.dcmread(p, stop_before_pixels=True).Modality == "SR"
    ]
    assert len(written) == 4 and len(reports) == 1
    summary = sr_summary(reports[0])
    assert abs(summary["study_probability"] - study["fracture_probability"]) < 1e-6
    assert set(summary["referenced_sop_instance_uids"]) == good_uids(study_dir)
    assert "wrote 4 DICOM object(s)" in err.getvalue() and "leave out" in err.getvalue()
    assert "youden operating point" in content_texts(reports[0])


def test_cli_says_why_plain_images_get_no_dicom_output(png_study, tmp_path, make_checkpoint) -> None:
    checkpoint = make_checkpoint("dicom_out.pt", "custom_cnn", 32, seed=3, threshold=THRESHOLDS)
    err = io.StringIO()
    with redirect_stdout(io.StringIO()), redirect_stderr(err):
        code = main(["predict", *map(str, png_study), "-c", str(checkpoint), "--dicom-out", str(tmp_path)])
    assert code == 0 and "no DICOM output" in err.getvalue() and not list(tmp_path.iterdir())


def test_files_are_grouped_by_study_and_one_call_takes_one_study(predictor, study_dir, tmp_path) -> None:
    other = Dataset()
    other.PatientName, other.PatientID, other.StudyInstanceUID = "Roe^Ann", "P8", generate_uid()
    stranger = dx_instance(tmp_path / "other.dcm", other, 1, "MONOCHROME2")
    png = tmp_path / "plain.png"
    Image.fromarray(np.full((40, 40), 90, np.uint8)).save(png)
    paths = [study_dir / "1.dcm", study_dir / "2.dcm", stranger, png]
    groups = group_studies(paths)
    assert sorted(map(len, groups)) == [1, 1, 2]
    assert [study_dir / "1.dcm", study_dir / "2.dcm"] in groups
    with pytest.raises(MuraError, match="belong to 2 studies"):
        study_results(predictor, [study_dir / "1.dcm", stranger])


def test_identity_options_need_a_patient_id(png_study, tmp_path, make_checkpoint) -> None:
    checkpoint = make_checkpoint("dicom_out.pt", "custom_cnn", 32, seed=3, threshold=THRESHOLDS)
    err = io.StringIO()
    with redirect_stdout(io.StringIO()), redirect_stderr(err):
        code = main(
            ["predict", str(png_study[0]), "-c", str(checkpoint), "--dicom-out", str(tmp_path)]
            + ["--patient-name", "Doe^J"]
        )
    assert code != 0 and "need --patient-id" in err.getvalue() and not list(tmp_path.iterdir())


def test_sources_missing_type_2_attributes_still_give_valid_objects(predictor, tmp_path) -> None:
    """Modalities leave out PatientBirthDate, StudyDate, AccessionNumber...; the results still build."""
    bare = Dataset()
    bare.PatientID, bare.StudyInstanceUID = "P5", generate_uid()
    sources = [dx_instance(tmp_path / f"{i}.dcm", bare, i, "MONOCHROME2") for i in (1, 2)]
    made = study_results(predictor, sources, operating_point="youden")
    assert made.sr.StudyInstanceUID == bare.StudyInstanceUID and made.sr.PatientBirthDate == ""
    assert set(sr_summary(made.sr)["referenced_sop_instance_uids"]) == {
        str(pydicom.dcmread(p).SOPInstanceUID) for p in sources
    }
    for path in made.write(tmp_path / "out"):
        errors, _ = dciodvfy(path)
        assert errors == [], f"{path.name}: {errors}"


def test_sr_alone_draws_captures_only_for_views_it_cannot_reference_otherwise(
    predictor, study_dir, png_study
) -> None:
    dicoms = [study_dir / f"{i}.dcm" for i in (1, 2, 3)]
    alone = study_results(predictor, dicoms, captures=False)
    assert alone.captures == [] and alone.sr is not None
    assert set(sr_summary(alone.sr)["referenced_sop_instance_uids"]) == good_uids(study_dir)
    full = study_results(predictor, dicoms)
    assert sr_summary(alone.sr)["study_probability"] == sr_summary(full.sr)["study_probability"]
    mixed = study_results(predictor, [dicoms[0], png_study[0]], captures=False)
    assert len(mixed.captures) == 1 and mixed.views[1].capture is mixed.captures[0]
    referenced = set(sr_summary(mixed.sr)["referenced_sop_instance_uids"])
    assert referenced == {str(mixed.views[0].header.SOPInstanceUID), mixed.captures[0].SOPInstanceUID}

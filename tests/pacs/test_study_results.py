"""DICOM results of a study: the SR carries the predictor's study probability and references exactly the
good source instances; each good view gets a non-blank Secondary Capture; dciodvfy finds no error."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.uid import SecondaryCaptureImageStorage, generate_uid

from mura.errors import MuraError
from mura.inference.files import iter_file_predictions, study_prediction
from mura.inference.predictor import Predictor
from mura.pacs.results import StudyIdentity, StudyResults, dataset_bytes
from mura.pacs.sr import sr_summary
from mura.pacs.study import group_studies, study_results


def digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def results(predictor: Predictor, study_dir: Path) -> tuple[StudyResults, dict[str, str], dict[str, str]]:
    before = digests(study_dir)
    made = study_results(predictor, sorted(study_dir.glob("*.dcm")), operating_point="suspicious")
    return made, before, digests(study_dir)


def test_sr_probability_equals_the_predictors_study_record(results, predictor, study_dir) -> None:
    made, _, _ = results
    good = [study_dir / f"{i}.dcm" for i in (1, 2, 3)]
    expected = study_prediction(str(study_dir), list(iter_file_predictions(predictor, good)), predictor.tiers)
    summary = sr_summary(made.sr)
    assert abs(summary["study_probability"] - expected.fracture_probability) < 1e-6
    assert abs(made.prediction.fracture_probability - expected.fracture_probability) < 1e-6
    assert summary["finding"] == ("present" if expected.fracture_probability >= 0.3 else "absent")
    assert made.prediction.operating_point == "suspicious" and made.prediction.threshold == 0.3
    assert made.prediction.views == 3 and made.prediction.views_failed == 2


def test_sr_references_exactly_the_good_instances(results, good_uids) -> None:
    made, _, _ = results
    summary = sr_summary(made.sr)
    assert set(summary["referenced_sop_instance_uids"]) == good_uids
    assert set(summary["views"]) == good_uids
    evidence = {
        str(i.ReferencedSOPInstanceUID)
        for s in made.sr.CurrentRequestedProcedureEvidenceSequence
        for series in s.ReferencedSeriesSequence
        for i in series.ReferencedSOPSequence
    }
    assert evidence == good_uids
    by_uid = {str(v.header.SOPInstanceUID): v.prediction.fracture_probability for v in made.views}
    assert all(abs(summary["views"][uid] - p) < 1e-6 for uid, p in by_uid.items())


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
        assert capture.PhotometricInterpretation == "MONOCHROME2" and pixels.ndim == 2
        assert pixels.std() > 10 and len(np.unique(pixels)) > 100  # the radiograph, not a flat image
        banner = pixels[: pixels.shape[0] // 5]
        assert (banner > 240).sum() > 500  # the white NOT FOR DIAGNOSTIC USE bar and the text are burned in


def test_source_files_are_byte_identical(results) -> None:
    _, before, after = results
    assert before == after


def test_written_objects_are_readable_valid_and_never_overwritten(
    results, tmp_path: Path, assert_valid
) -> None:
    made, _, _ = results
    written = made.write(tmp_path)
    kinds = ["SR"] + ["SC"] * len(made.captures)
    names = [f"{kind}_{d.SOPInstanceUID}.dcm" for kind, d in zip(kinds, made.datasets, strict=True)]
    assert sorted(p.name for p in written) == sorted(names)
    assert len(written) == 4 and not list(tmp_path.glob(".*"))  # no temp files left behind
    reread = pydicom.dcmread(written[0])
    assert dataset_bytes(made.sr) == written[0].read_bytes()  # the same file in memory
    assert abs(sr_summary(reread)["study_probability"] - made.prediction.fracture_probability) < 1e-12
    assert_valid(written)
    before = digests(tmp_path)
    with pytest.raises(MuraError, match="already exists"):
        made.write(tmp_path)
    assert digests(tmp_path) == before


def test_a_study_of_only_bad_views_is_a_clear_error(predictor, study_dir) -> None:
    with pytest.raises(MuraError) as info:
        study_results(predictor, [study_dir / "4.dcm", study_dir / "5.dcm"])
    message = str(info.value)
    assert "none of the study's 2 view(s) could be predicted" in message and "\n" not in message
    assert "4.dcm: cannot decode pixel data" in message


def test_non_dicom_inputs_get_dicom_output_only_with_an_identity(
    predictor, png_study, tmp_path, assert_valid
) -> None:
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
    assert abs(summary["study_probability"] - made.prediction.fracture_probability) < 1e-12
    assert_valid(made.write(tmp_path))


def test_files_are_grouped_by_study_and_one_call_takes_one_study(
    predictor, study_dir, tmp_path, dx_instance
) -> None:
    other = Dataset()
    other.PatientName, other.PatientID, other.StudyInstanceUID = "Roe^Ann", "P8", generate_uid()
    stranger = dx_instance(tmp_path / "other.dcm", other, 1, "MONOCHROME2")
    png = tmp_path / "plain.png"
    Image.fromarray(np.full((40, 40), 90, np.uint8)).save(png)
    paths = [study_dir / "1.dcm", study_dir / "2.dcm", stranger, png]
    groups = group_studies(paths)
    assert sorted(map(len, groups)) == [1, 1, 2]
    assert [study_dir / "1.dcm", study_dir / "2.dcm"] in groups
    with pytest.raises(MuraError, match="different PatientID and StudyInstanceUID; "):
        study_results(predictor, [study_dir / "1.dcm", stranger])


def test_sources_missing_type_2_attributes_still_give_valid_objects(
    predictor, tmp_path, dx_instance, assert_valid
) -> None:
    """Modalities leave out PatientBirthDate, StudyDate, AccessionNumber...; the results still build."""
    bare = Dataset()
    bare.PatientID, bare.StudyInstanceUID = "P5", generate_uid()
    sources = [dx_instance(tmp_path / f"{i}.dcm", bare, i, "MONOCHROME2") for i in (1, 2)]
    made = study_results(predictor, sources, operating_point="youden")
    assert made.sr.StudyInstanceUID == bare.StudyInstanceUID and made.sr.PatientBirthDate == ""
    assert set(sr_summary(made.sr)["referenced_sop_instance_uids"]) == {
        str(pydicom.dcmread(p).SOPInstanceUID) for p in sources
    }
    assert_valid(made.write(tmp_path / "out"), strict=False)


def test_sr_alone_draws_captures_only_for_views_it_cannot_reference_otherwise(
    predictor, study_dir, png_study, good_uids
) -> None:
    dicoms = [study_dir / f"{i}.dcm" for i in (1, 2, 3)]
    alone = study_results(predictor, dicoms, captures=False)
    assert alone.captures == [] and alone.sr is not None
    assert set(sr_summary(alone.sr)["referenced_sop_instance_uids"]) == good_uids
    full = study_results(predictor, dicoms)
    assert sr_summary(alone.sr)["study_probability"] == sr_summary(full.sr)["study_probability"]
    mixed = study_results(predictor, [dicoms[0], png_study[0]], captures=False)
    assert len(mixed.captures) == 1 and mixed.views[1].capture is mixed.captures[0]
    referenced = set(sr_summary(mixed.sr)["referenced_sop_instance_uids"])
    assert referenced == {str(mixed.views[0].header.SOPInstanceUID), mixed.captures[0].SOPInstanceUID}

"""The command line over `mura.pacs`: `mura predict --dicom-out` writes what the library builds, and
`mura dicom-node` reports a bad setting under the flag that set it, before it listens."""

from __future__ import annotations

import io
import json
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pydicom
import pytest

from mura.cli import main
from mura.pacs.sr import sr_summary


def run(args: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(args)
    return code, out.getvalue(), err.getvalue()


def test_dicom_out_matches_the_printed_study_record(pacs_checkpoint, study_dir, good_uids, tmp_path) -> None:
    args = ["predict", str(study_dir), "-c", str(pacs_checkpoint), "--study", "--runtime", "torch"]
    code, out, err = run([*args, "--threshold", "youden", "--dicom-out", str(tmp_path / "results")])
    assert code == 0, err
    study = [r for r in map(json.loads, out.splitlines()) if r["kind"] == "study"][0]
    written = sorted((tmp_path / "results").glob("*.dcm"))
    reports = [
        pydicom.dcmread(p) for p in written if pydicom.dcmread(p, stop_before_pixels=True).Modality == "SR"
    ]
    assert len(written) == 4 and len(reports) == 1
    summary = sr_summary(reports[0])
    assert abs(summary["study_probability"] - study["fracture_probability"]) < 1e-6
    assert set(summary["referenced_sop_instance_uids"]) == good_uids
    assert "wrote 4 DICOM object(s)" in err and "leave out" in err
    assert "operating point youden threshold=0.450000" in summary["algorithm"]["parameters"]


def test_dicom_out_that_would_write_nothing_fails_before_predicting(
    pacs_checkpoint, png_study, tmp_path
) -> None:
    code, out, err = run(
        ["predict", *map(str, png_study), "-c", str(pacs_checkpoint), "--dicom-out", str(tmp_path)]
    )
    assert code == 2 and out == "" and err.count("\n") == 1
    assert "--dicom-out: none of the 2 file(s) is DICOM" in err and "give --patient-id" in err
    assert not list(tmp_path.iterdir())


def test_predict_skips_muras_own_results_and_says_so(pacs_checkpoint, study_dir, tmp_path) -> None:
    folder = tmp_path / "with_results"
    folder.mkdir()
    for name in ("1.dcm", "2.dcm"):
        (folder / name).write_bytes((study_dir / name).read_bytes())
    args = ["predict", str(folder), "-c", str(pacs_checkpoint), "--runtime", "torch"]
    assert run([*args, "--dicom-out", str(folder)])[0] == 0  # the results land next to the views
    code, out, err = run(args)
    records = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and sorted(Path(r["path"]).name for r in records) == ["1.dcm", "2.dcm"]
    assert err.count("a mura result (Secondary Capture), not a radiograph") == 2
    assert err.count("not an image SOP class (Comprehensive SR Storage)") == 1


def test_identity_options_need_a_patient_id(pacs_checkpoint, png_study, tmp_path) -> None:
    args = ["predict", str(png_study[0]), "-c", str(pacs_checkpoint), "--dicom-out", str(tmp_path)]
    code, _, err = run([*args, "--patient-name", "Doe^J"])
    assert code != 0 and "need --patient-id" in err and not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--port", "70000"], "--port 70000: Input should be less than or equal to 65535"),
        (["--ae-title", "A\\B"], "--ae-title 'A\\\\B': an AE title is 1 to 16 printable ASCII"),
        (["--ae-title", "SEVENTEEN_LETTERS"], "--ae-title 'SEVENTEEN_LETTERS': an AE title is 1 to 16"),
        (["--allow", "OK", " "], "--allow ' ': an AE title is 1 to 16"),
        (["--quiet-seconds", "-1"], "--quiet-seconds -1.0: Input should be greater than or equal to 0"),
        (["--dimse-timeout", "0"], "--dimse-timeout 0.0: Input should be greater than 0"),
        (["--max-pdu-size", "0"], "--max-pdu-size 0: Input should be greater than or equal to 4096"),
        (["--forward", "PACS@host"], "--forward: destination 'PACS@host': expected AET@HOST:PORT"),
    ],
)
def test_dicom_node_names_the_flag_of_a_bad_setting(
    flags: list[str], named: str, pacs_checkpoint: Path, tmp_path: Path
) -> None:
    args = ["dicom-node", "--checkpoint", str(pacs_checkpoint), "--spool", str(tmp_path / "spool")]
    args += ["--port", "11112", "--ae-title", "MURA", "--forward", "PACS@127.0.0.1:4242"]
    code, _, err = run([*args, *flags])  # a flag given twice: argparse keeps the last
    assert code == 2 and err.count("\n") == 1, err
    assert f"mura dicom-node: error: {named}" in err
    assert not (tmp_path / "spool").exists()  # refused before anything was created

"""`mura dicom-node` and studies outside the model's scope, end to end: storescu -> the node -> Orthanc.

A CT study gets nothing back (Orthanc holds the CT alone: no SR, no capture claiming a finding); a knee
radiograph, which a model of the upper limb cannot judge, gets an SR that states "not assessed" with
the reason and no Secondary Capture.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file

from mura.pacs.sr import sr_summary
from tests.pacs.test_node import (
    DX_CLASS,
    MISSING_TOOLS,
    ORTHANC,
    SENDER_AET,
    STORESCU,
    Orthanc,
    _file,
    dx_instance,
    launch_node,
    split_results,
    storescu,
    wait_for,
)

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not (ORTHANC and STORESCU), reason=MISSING_TOOLS)]


def test_a_ct_gets_no_result_and_a_knee_radiograph_an_sr_stating_not_assessed(
    tiny_checkpoint: Path, make_radiograph, tmp_path: Path
) -> None:
    orthanc = Orthanc(tmp_path / "orthanc").start()
    node = launch_node(tmp_path / "node", tiny_checkpoint, orthanc.forward, "--allow", SENDER_AET)
    try:
        ct = Path(shutil.copy(get_testdata_file("CT_small.dcm"), tmp_path / "ct.dcm"))
        ct_study = str(pydicom.dcmread(ct, stop_before_pixels=True).StudyInstanceUID)
        storescu(orthanc.dicom_port, [ct], called=orthanc.aet)  # the modality's copy to the PACS
        storescu(node.port, [ct])
        knee_ds = dx_instance(
            pydicom.uid.generate_uid(),
            pydicom.uid.generate_uid(),
            1,
            make_radiograph(),
            "MONOCHROME2",
            "KNEE",
        )
        knee = _file(knee_ds, DX_CLASS, tmp_path / "knee.dcm")
        storescu(node.port, [knee])

        def knee_sr():
            srs, scs, _ = split_results(orthanc.instances(str(knee_ds.StudyInstanceUID)))
            return (srs, scs) if srs else None

        srs, scs = wait_for(knee_sr, 120, "the knee study's SR in Orthanc", 0.2)
        summary = sr_summary(srs[0])
        assert scs == [] and summary["study_probability"] is None
        assert summary["finding"] not in ("present", "absent")
        assert any("BodyPartExamined KNEE is not one of the parts" in r for r in summary["reasons"])

        wait_for(lambda: "no results" in node.text(), 60, "the node to give the CT study up")
        found = orthanc.instances(ct_study)
        assert [str(ds.SOPClassUID) for _, ds in found] == [pydicom.uid.CTImageStorage]  # the CT alone
        assert "Modality CT is not projection radiography" in node.text()
    finally:
        code = node.stop()
        orthanc.stop(graceful=False)
    assert code == 0, node.text()[-3000:]

"""A view sent after its study's results: the node re-analyses the whole study and Orthanc receives one
replacing SR that references its predecessor, not a second verdict on the late view alone."""

from __future__ import annotations

from pathlib import Path

import pytest

from mura.pacs.sr import sr_summary
from tests.pacs.test_node import (
    ORTHANC,
    STORESCU,
    Orthanc,
    launch_node,
    make_study,
    sop_uid,
    split_results,
    sr_references,
    storescu,
    wait_for,
)

pytestmark = pytest.mark.slow


@pytest.mark.skipif(not (ORTHANC and STORESCU), reason="needs Debian packages orthanc and dcmtk")
def test_a_late_view_gives_one_replacing_sr_that_references_its_predecessor(
    tiny_checkpoint: Path, make_radiograph, tmp_path: Path
) -> None:
    orthanc = Orthanc(tmp_path / "orthanc").start()
    node = launch_node(tmp_path / "node", tiny_checkpoint, orthanc.forward)
    try:
        study = make_study(tmp_path / "study", make_radiograph, views=3, with_bad=False)
        early, late = study.good[:2], study.good[2:]

        def results(srs_wanted: int, scs_wanted: int):
            srs, scs, _ = split_results(orthanc.instances(study.uid))
            return (srs, scs) if len(srs) >= srs_wanted and len(scs) >= scs_wanted else None

        storescu(node.port, early)
        (first,), _ = wait_for(lambda: results(1, 2), 120, "the first SR in Orthanc", 0.2)
        storescu(node.port, late)
        srs, scs = wait_for(lambda: results(2, 3), 120, "the replacing SR in Orthanc", 0.2)

        assert len(srs) == 2 and len(scs) == 3  # one capture per view, none drawn twice
        replacing = next(sr for sr in srs if sr.SOPInstanceUID != first.SOPInstanceUID)
        summary = sr_summary(replacing)
        assert summary["replaces"] == [first.SOPInstanceUID]
        assert replacing.SeriesInstanceUID == first.SeriesInstanceUID and replacing.InstanceNumber == 2
        assert sr_references(first) == {sop_uid(p) for p in early}
        assert sr_references(replacing) == {sop_uid(p) for p in study.good}  # the whole study
        assert len(summary["views"]) == 3 and len({sc.SeriesInstanceUID for sc in scs}) == 1
        log = wait_for(lambda: "replacing the SR sent before" in node.text() and node.text(), 30, "the log")
        assert "late instance(s): re-analysing all 3" in log
    finally:
        code = node.stop()
        orthanc.stop(graceful=False)
    assert code == 0, node.text()[-3000:]

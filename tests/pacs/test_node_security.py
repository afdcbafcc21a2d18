"""The DICOM node keeps patient data to itself: a private spool that no other user can plant or read,
bounded disk use, and an open door said aloud (STOW-RS credentials: test_node_credentials.py).

Each test failed on the node as it was before issue 17 (spool in $TMPDIR adopting a world-writable
folder, files 0644, no quota or expiry, nothing said about accepting any calling AE title).
"""

from __future__ import annotations

import io
import logging
import os
import stat
import threading
import time
from collections.abc import Iterator
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import DigitalXRayImageStorageForPresentation

from mura.cli import build_parser, main
from mura.cli.dicom import node_settings
from mura.errors import MuraError
from mura.pacs.delivery import Outbox, parse_forward
from mura.pacs.node import DicomNode
from mura.pacs.node_settings import NodeSettings
from mura.pacs.retention import DAY, sweep
from mura.pacs.spool import Spool
from tests.factories.node import free_port, serving
from tests.pacs.test_node_parts import capture


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def run_cli(args: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            code = main(args)
        except SystemExit as exc:  # --help
            code = int(exc.code or 0)
    return code, out.getvalue(), err.getvalue()


# --- the spool: where, whose, which modes ------------------------------------------------------------
def test_default_spool_is_in_the_users_data_folder_not_a_shared_temporary_one(monkeypatch, tmp_path) -> None:
    flags = ["dicom-node", "--checkpoint", "m.pt", "--port", "11112", "--ae-title", "MURA"]
    flags += ["--forward", "PACS@127.0.0.1:4242"]
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    settings = node_settings(build_parser().parse_args(flags))
    assert settings.spool_dir == tmp_path / "data" / "mura" / "dicom-node" / "MURA-11112"
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    settings = node_settings(build_parser().parse_args(flags))
    assert settings.spool_dir == tmp_path / "home" / ".local" / "share" / "mura" / "dicom-node" / "MURA-11112"
    spool = Spool(settings.spool_dir, quota_bytes=1 << 20)
    assert mode(spool.root) == 0o700 and mode(spool.root.parent) == 0o700


def test_a_spool_folder_another_user_could_write_to_or_owns_is_refused(monkeypatch, tmp_path) -> None:
    planted = tmp_path / "mura-dicom-node-MURA-11112"
    planted.mkdir()
    planted.chmod(0o777)  # pre-created by someone else, world-writable
    with pytest.raises(MuraError, match=f"folder {planted}: others may write to it .*chmod 700"):
        Spool(planted, quota_bytes=1 << 20)
    assert list(planted.iterdir()) == []  # nothing written into it
    planted.chmod(0o700)
    monkeypatch.setattr(os, "getuid", lambda: os.stat(planted).st_uid + 1)  # as if another user made it
    with pytest.raises(MuraError, match=f"folder {planted}: owned by another user"):
        Spool(planted, quota_bytes=1 << 20)


def test_a_spool_of_ours_that_others_could_read_is_closed(tmp_path: Path) -> None:
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir(mode=0o755)
    spool_dir.chmod(0o755)
    Spool(spool_dir, quota_bytes=1 << 20)
    assert mode(spool_dir) == 0o700


def test_everything_the_node_writes_is_readable_by_its_user_only(tmp_path: Path) -> None:
    old_umask = os.umask(0o022)  # the usual umask, which would give 0644 files
    try:
        spool = Spool(tmp_path / "spool", quota_bytes=1 << 20)
        study = generate_uid()
        received = spool.store(study, generate_uid(), b"DICM instance")
        assert (mode(received), mode(received.parent)) == (0o600, 0o700)
        claimed = spool.claim(study)
        assert claimed is not None
        failed = spool.set_aside(claimed)
        outbox = Outbox(tmp_path / "spool" / "outbox", [parse_forward("P@127.0.0.1:9", "N")])
        entry = outbox.add(f"{study}.1", lambda d: [capture(d / "sc.dcm", study)], {"claimed_at": 0})
    finally:
        os.umask(old_umask)
    folders = [spool.root, spool.incoming, spool.work, spool.failed, failed, outbox.folder, entry]
    assert {p: mode(p) for p in folders} == {p: 0o700 for p in folders}
    files = [*failed.iterdir(), *entry.iterdir()]
    assert len(files) == 3 and {p: mode(p) for p in files} == {p: 0o600 for p in files}


# --- quotas and maximum ages -------------------------------------------------------------------------
@pytest.fixture
def quota_node(tiny_checkpoint: Path, tmp_path: Path, make_dicom, make_radiograph) -> Iterator[DicomNode]:
    """A serving node whose incoming quota takes one radiograph but not two."""
    size = len(make_dicom(make_radiograph()))
    settings = NodeSettings(
        ae_title="MURANODE",
        port=free_port(),
        spool_dir=tmp_path / "spool",
        quiet_seconds=600,
        drain_seconds=5,
        incoming_quota_gib=1.5 * size / (1 << 30),
    )
    node = DicomNode(settings, lambda paths, prior: None, [parse_forward("X@127.0.0.1:9", "N")])
    with serving(node):
        yield node


def test_a_store_beyond_the_quota_is_answered_out_of_resources_with_one_log_line(
    quota_node: DicomNode, make_dicom, make_radiograph, caplog: pytest.LogCaptureFixture
) -> None:
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(DigitalXRayImageStorageForPresentation, ExplicitVRLittleEndian)
    study = generate_uid()
    first, second = (pydicom.dcmread(io.BytesIO(make_dicom(make_radiograph(seed=i)))) for i in (1, 2))
    for ds in (first, second):
        ds.StudyInstanceUID = study
    assoc = ae.associate("127.0.0.1", quota_node.settings.port, ae_title="MURANODE")
    assert assoc.is_established
    with caplog.at_level(logging.WARNING, logger="mura.dicom_node"):
        try:
            assert assoc.send_c_store(first).Status == 0x0000
            assert assoc.send_c_store(second).Status == 0xA700
        finally:
            assoc.release()
    refusals = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(refusals) == 1 and "Out of Resources: the spool is full" in refusals[0]
    assert "MODALITY" in refusals[0] and "quota" in refusals[0]
    assert [p.name for p in (quota_node.spool.incoming / study).iterdir()] == [f"{first.SOPInstanceUID}.dcm"]


def test_undelivered_results_and_old_failed_studies_expire_with_a_log_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = NodeSettings(
        ae_title="MURANODE",
        port=104,
        spool_dir=tmp_path / "spool",
        outbox_max_age_days=7,
        failed_max_age_days=30,
    )
    node = DicomNode(settings, lambda paths, prior: None, [parse_forward("X@127.0.0.1:9", "N")])
    stale, fresh = generate_uid(), generate_uid()
    now = time.time()
    for study, claimed_at in ((stale, now - 8 * DAY), (fresh, now - DAY)):
        node.outbox.add(
            f"{study}.1", lambda d, s=study: [capture(d / "sc.dcm", s)], {"claimed_at": claimed_at}
        )
    old_failure, new_failure = (node.spool.failed / f"{generate_uid()}.1" for _ in range(2))
    for folder, age in ((old_failure, 31 * DAY), (new_failure, 2 * DAY)):
        folder.mkdir()
        (folder / "x.dcm").write_bytes(b"x" * 100)
        os.utime(folder, (now - age, now - age))
    size_before = node.outbox.size_bytes

    with caplog.at_level(logging.INFO, logger="mura.dicom_node"):
        sweep(node.spool, node.outbox, settings)
    messages = [r.getMessage() for r in caplog.records]
    assert [p.name for p in node.outbox.folder.iterdir()] == [f"{fresh}.1"]
    assert 0 < node.outbox.size_bytes < size_before
    assert sorted(p.name for p in node.spool.failed.iterdir()) == sorted([f"{stale}.1", new_failure.name])
    assert any(f"study {stale[:6]}" in m and "not delivered within 7 days" in m for m in messages)
    assert any(f"failed/{old_failure.name} removed" in m and "older than 30 days" in m for m in messages)
    # The results just moved to failed/ count their 30 days from now, not from the analysis.
    sweep(node.spool, node.outbox, settings)
    assert (node.spool.failed / f"{stale}.1").is_dir()


def test_failed_studies_beyond_their_quota_go_oldest_first(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", quota_bytes=1 << 20)
    now = time.time()
    for age in (3, 2, 1):  # days
        folder = spool.failed / f"1.2.{age}.1"
        folder.mkdir()
        (folder / "x.dcm").write_bytes(b"x" * 1000)
        os.utime(folder, (now - age * DAY, now - age * DAY))
    removed = spool.expire_failed(max_age_seconds=30 * DAY, quota_bytes=1500)
    assert [(r.path.name, r.over_quota) for r in removed] == [("1.2.3.1", True), ("1.2.2.1", True)]
    assert [p.name for p in spool.failed.iterdir()] == ["1.2.1.1"]


def test_a_study_that_keeps_receiving_past_its_maximum_age_is_due_anyway(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", quota_bytes=1 << 20)
    trickled = generate_uid()
    spool.store(trickled, generate_uid(), b"x")
    assert spool.overdue(max_age_seconds=3600, quiet_seconds=600) == []
    assert spool.overdue(max_age_seconds=0, quiet_seconds=600) == [trickled]
    assert spool.overdue(max_age_seconds=0, quiet_seconds=0) == []  # quiet: analysed the usual way


def test_new_studies_wait_while_the_outbox_is_over_its_quota(tmp_path: Path, caplog) -> None:
    settings = NodeSettings(
        ae_title="MURANODE",
        port=free_port(),
        spool_dir=tmp_path / "spool",
        quiet_seconds=0,
        poll_seconds=0.05,
        drain_seconds=1,
        outbox_quota_gib=1e-7,  # about 100 bytes
    )
    analysed: list[list[Path]] = []
    node = DicomNode(
        settings, lambda paths, prior: analysed.append(paths), [parse_forward("X@127.0.0.1:9", "N")]
    )
    study, waiting = generate_uid(), generate_uid()
    node.outbox.add(f"{study}.1", lambda d: [capture(d / "sc.dcm", study)], {"claimed_at": time.time()})
    node.spool.store(waiting, generate_uid(), b"x")
    thread = threading.Thread(target=node.serve, daemon=True)
    with caplog.at_level(logging.INFO, logger="mura.dicom_node"):
        thread.start()
        time.sleep(1.0)  # twenty polls
        node.stop.set()
        thread.join(30)
    assert analysed == [] and node.spool.quiet_studies(0) == [waiting]
    warnings = [r.getMessage() for r in caplog.records if "over its quota" in r.getMessage()]
    assert len(warnings) == 1 and "new studies wait in incoming/" in warnings[0]


# --- an open door, said aloud ------------------------------------------------------------------------
def test_help_says_that_without_allow_any_calling_ae_title_is_accepted() -> None:
    code, out, _ = run_cli(["dicom-node", "--help"])
    text = " ".join(out.split())
    assert code == 0 and "without --allow, ANY calling AE title is accepted" in text
    assert "--allow AET [AET ...] accept only these calling AE titles (default: ANY calling AE title" in text


def test_listening_beyond_loopback_without_allow_or_tls_is_warned_at_start(pacs_checkpoint, tmp_path) -> None:
    args = ["dicom-node", "--checkpoint", str(pacs_checkpoint), "--spool", str(tmp_path / "spool")]
    args += ["--port", str(free_port()), "--ae-title", "MURA", "--forward", "PACS@127.0.0.1:9"]
    # 192.0.2.1 (TEST-NET-1) is no address of this machine: the node warns, then cannot listen.
    code, _, err = run_cli([*args, "--host", "192.0.2.1"])
    assert code == 2 and "cannot listen on 192.0.2.1" in err
    assert "warning: listening on 192.0.2.1 without --allow: any calling AE title is accepted" in err
    assert "warning: without --tls-cert, images and results cross the network unencrypted" in err
    code, _, err = run_cli([*args, "--host", "192.0.2.1", "--allow", "MODALITY"])
    assert code == 2 and "without --allow" not in err

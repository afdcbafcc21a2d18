"""The DICOM node keeps patient data and secrets to itself: a private spool that no other user can
plant or read, bounded disk use, STOW-RS credentials out of argv and logs, an open door said aloud.

Each test failed on the node as it was before issue 17 (spool in $TMPDIR adopting a world-writable
folder, files 0644, no quota or expiry, the STOW password in the URL and in every log line, nothing
said about accepting any calling AE title).
"""

from __future__ import annotations

import base64
import io
import logging
import os
import stat
import threading
import time
from collections.abc import Iterator
from contextlib import redirect_stderr, redirect_stdout
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import DigitalXRayImageStorageForPresentation

from mura.cli import build_parser, main
from mura.cli.dicom import node_settings
from mura.errors import MuraError
from mura.pacs.credentials import BasicCredentials, redact, stow_credentials
from mura.pacs.delivery import Outbox, StowDestination, parse_forward
from mura.pacs.node import DicomNode
from mura.pacs.node_settings import NodeSettings
from mura.pacs.retention import DAY, sweep
from mura.pacs.spool import Spool
from tests.pacs.test_node import launch_node, make_study, needs_tools, storescu, wait_for
from tests.pacs.test_node_parts import StorageSCP, capture, free_port

PASSWORD = "pw-Wq8Zt3vK"


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
    node = DicomNode(settings, lambda paths: None, [parse_forward("X@127.0.0.1:9", "N")])
    ready = threading.Event()
    thread = threading.Thread(target=lambda: node.serve(ready.set), daemon=True)
    thread.start()
    assert ready.wait(30)
    yield node
    node.stop.set()
    thread.join(30)


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
    node = DicomNode(settings, lambda paths: None, [parse_forward("X@127.0.0.1:9", "N")])
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


# --- STOW-RS credentials -----------------------------------------------------------------------------
def test_stow_credentials_come_from_a_private_file_or_the_environment(tmp_path: Path) -> None:
    secret = tmp_path / "stow"
    secret.write_text(f"mura:{PASSWORD}\n")
    secret.chmod(0o600)
    assert stow_credentials(secret, {}) == BasicCredentials("mura", PASSWORD)
    assert PASSWORD not in repr(stow_credentials(secret, {}))
    environment = {"MURA_STOW_USER": "mura", "MURA_STOW_PASSWORD": PASSWORD}
    assert stow_credentials(None, environment) == BasicCredentials("mura", PASSWORD)
    assert stow_credentials(None, {}) is None
    secret.chmod(0o640)
    with pytest.raises(MuraError, match=f"stow_credentials_file {secret}: permissions 0640 .* chmod 600"):
        stow_credentials(secret, {})
    secret.chmod(0o600)
    with pytest.raises(MuraError, match="given both"):
        stow_credentials(secret, environment)
    with pytest.raises(MuraError, match="set both MURA_STOW_USER"):
        stow_credentials(None, {"MURA_STOW_PASSWORD": PASSWORD})
    secret.write_text(PASSWORD)
    with pytest.raises(MuraError, match="expected one line user:password") as refused:
        stow_credentials(secret, {})
    assert PASSWORD not in str(refused.value)


def test_logged_urls_lose_their_user_info_and_query_values() -> None:
    assert (
        redact("https://u:p@pacs.example/dicom-web?token=abc&x=1")
        == "https://***@pacs.example/dicom-web?token=***&x=***"
    )
    message = "Max retries exceeded with url: /dicom-web/studies?access_token=abc (Caused by timeout)"
    assert redact(message, [PASSWORD]) == message.replace("abc", "***")
    assert redact(f"401 for {PASSWORD}", [PASSWORD]) == "401 for ***"
    destination = StowDestination("https://pacs.example/dicom-web?key=abc", BasicCredentials("u", PASSWORD))
    assert destination.name == "https://pacs.example/dicom-web?key=***"
    with pytest.raises(MuraError, match="carries a user name or password") as refused:
        StowDestination(f"https://mura:{PASSWORD}@pacs.example/dicom-web")
    assert PASSWORD not in str(refused.value)


def test_cli_refuses_a_stow_url_with_a_password_without_echoing_it(pacs_checkpoint: Path, tmp_path) -> None:
    args = ["dicom-node", "--checkpoint", str(pacs_checkpoint), "--spool", str(tmp_path / "spool")]
    args += [
        "--port",
        "11112",
        "--ae-title",
        "MURA",
        "--stow",
        f"http://mura:{PASSWORD}@127.0.0.1:9/dicom-web",
    ]
    code, _, err = run_cli(args)
    assert code == 2 and err.count("\n") == 1, err
    assert "--stow: STOW-RS URL http://***@127.0.0.1:9/dicom-web: carries a user name or password" in err
    assert PASSWORD not in err and not (tmp_path / "spool").exists()
    secret = tmp_path / "stow"
    secret.write_text(f"mura:{PASSWORD}")
    secret.chmod(0o644)
    code, _, err = run_cli(
        [*args[:-1], "http://127.0.0.1:9/dicom-web", "--stow-credentials-file", str(secret)]
    )
    assert code == 2 and f"--stow-credentials-file {secret}: permissions 0644" in err


class RefusingStow(BaseHTTPRequestHandler):
    """A STOW-RS endpoint that is down (503) and records the Authorization header of every attempt."""

    seen: list[str] = []

    def do_POST(self) -> None:  # noqa: N802 - the http.server hook's name
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        RefusingStow.seen.append(self.headers.get("Authorization", ""))
        self.send_response(503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.slow
@needs_tools
def test_the_stow_password_never_appears_in_the_node_logs_or_argv_even_on_retry(
    tiny_checkpoint: Path, make_radiograph, tmp_path: Path
) -> None:
    RefusingStow.seen = []
    web = ThreadingHTTPServer(("127.0.0.1", 0), RefusingStow)
    threading.Thread(target=web.serve_forever, daemon=True).start()
    pacs_port = free_port()
    pacs = StorageSCP(pacs_port)  # the C-STORE destination takes the results; STOW-RS keeps failing
    os.environ["MURA_STOW_USER"], os.environ["MURA_STOW_PASSWORD"] = "mura", PASSWORD
    try:
        stow = f"http://127.0.0.1:{web.server_address[1]}/dicom-web"
        node = launch_node(tmp_path / "node", tiny_checkpoint, f"PACS@127.0.0.1:{pacs_port}", "--stow", stow)
    finally:
        del os.environ["MURA_STOW_USER"], os.environ["MURA_STOW_PASSWORD"]
    try:
        assert PASSWORD not in Path(f"/proc/{node.process.pid}/cmdline").read_text()
        study = make_study(tmp_path / "study", make_radiograph, views=1, with_bad=False)
        storescu(node.port, study.files)
        try:
            wait_for(lambda: node.text().count("STOW-RS failed") >= 3, 90, "three STOW-RS attempts", 0.2)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; the node said:\n{node.text()[-3000:]}") from None
    finally:
        assert node.stop() == 0
        web.shutdown()
        pacs.close()
    expected = "Basic " + base64.b64encode(f"mura:{PASSWORD}".encode()).decode()
    assert len(RefusingStow.seen) >= 3 and set(RefusingStow.seen) == {expected}
    log = node.text()
    assert stow in log and "503" in log
    assert PASSWORD not in log and expected.split()[1] not in log


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

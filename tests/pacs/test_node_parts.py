"""The DICOM node's parts in-process (fast): the durable spool, the outbox's retries and the SCP's refusals.

Destinations are real pynetdicom Storage SCPs on loopback; the node analyses with a real model.
"""

from __future__ import annotations

import copy
import io
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pydantic import ValidationError
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import DigitalXRayImageStorageForPresentation, SecondaryCaptureImageStorage

from mura.errors import MuraError
from mura.pacs.delivery import CStoreDestination, Outbox, parse_forward
from mura.pacs.node import DicomNode
from mura.pacs.node_settings import NodeSettings
from mura.pacs.spool import Spool
from tests.factories.node import free_port


def capture(path: Path, study_uid: str, rows: int = 8) -> Path:
    """A small Secondary Capture file (what the outbox carries)."""
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = SecondaryCaptureImageStorage, generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.PatientID, ds.Modality = (
        study_uid,
        generate_uid(),
        "P",
        "OT",
    )
    ds.Rows = ds.Columns = rows
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = bytes(range(rows * rows))
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = (
        ds.SOPClassUID,
        ds.SOPInstanceUID,
    )
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.save_as(path, enforce_file_format=True)
    return path


class StorageSCP:
    """A real Storage SCP on loopback that records the SOP Instance UIDs it was sent (over TLS when
    given an `ssl_context`)."""

    def __init__(self, port: int, ae_title: str = "PACS", ssl_context: ssl.SSLContext | None = None) -> None:
        self.received: list[str] = []
        ae = AE(ae_title=ae_title)
        for context in AllStoragePresentationContexts:
            ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        handlers = [(evt.EVT_C_STORE, self._store)]
        self.server = ae.start_server(
            ("127.0.0.1", port), block=False, evt_handlers=handlers, ssl_context=ssl_context
        )

    def _store(self, event) -> int:
        self.received.append(str(event.dataset.SOPInstanceUID))
        return 0x0000

    def close(self) -> None:
        self.server.shutdown()


def test_spool_stores_durably_byte_for_byte_and_claims_only_quiet_studies(tmp_path: Path) -> None:
    spool = Spool(tmp_path, quota_bytes=1 << 20)
    study, first, second = generate_uid(), generate_uid(), generate_uid()
    path = spool.store(study, first, b"DICM-bytes-1")
    assert path.read_bytes() == b"DICM-bytes-1" and path.name == f"{first}.dcm"
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left behind
    with pytest.raises(ValueError, match="invalid UID"):
        spool.store("../../etc", first, b"x")
    assert spool.quiet_studies(60) == [] and spool.quiet_studies(0) == [study]
    claimed = spool.claim(study)
    assert claimed is not None
    spool.store(study, second, b"late")  # arrives after the claim: a new incoming folder, not a race
    assert [p.read_bytes() for p in spool.instances(claimed)] == [b"DICM-bytes-1"]
    assert (tmp_path / "incoming" / study / f"{second}.dcm").read_bytes() == b"late"


def test_spool_after_a_crash_drops_unacknowledged_temp_files_and_requeues_everything(tmp_path: Path) -> None:
    spool = Spool(tmp_path, quota_bytes=1 << 20)
    receiving, analysing = generate_uid(), generate_uid()
    spool.store(receiving, generate_uid(), b"acknowledged")
    (tmp_path / "incoming" / receiving / f".{generate_uid()}.tmp-4242.dcm").write_bytes(b"cut short")
    spool.store(analysing, generate_uid(), b"claimed")
    claimed = spool.claim(analysing)

    restarted = Spool(tmp_path, quota_bytes=1 << 20)
    assert [p.read_bytes() for p in (tmp_path / "incoming" / receiving).iterdir()] == [b"acknowledged"]
    assert restarted.quiet_studies(0) == [receiving]
    assert restarted.claimed() == [claimed]


def test_outbox_retries_with_backoff_and_resends_only_where_delivery_failed(tmp_path: Path) -> None:
    study = generate_uid()
    sources = tmp_path / "results"
    sources.mkdir()
    files = [capture(sources / f"sc{i}.dcm", study) for i in range(2)]
    up_port, down_port = free_port(), free_port()
    up = StorageSCP(up_port)
    down = None
    try:
        outbox = Outbox(
            tmp_path / "outbox",
            [
                CStoreDestination("PACS", "127.0.0.1", up_port),
                CStoreDestination("PACS", "127.0.0.1", down_port),
            ],
            first_retry_seconds=0.5,
            max_retry_seconds=0.5,
        )
        outbox.add(f"{study}.1", lambda d: [Path(p.replace(d / p.name)) for p in files], {"views": 2})
        assert outbox.deliver_due() == [] and outbox.pending() == 1  # the second PACS is down
        assert outbox.deliver_due() == []  # within the backoff: not even tried
        down = StorageSCP(down_port)
        delivered = []
        deadline = time.monotonic() + 10
        while not delivered and time.monotonic() < deadline:
            delivered = outbox.deliver_due()
            time.sleep(0.1)
        assert [e.manifest["views"] for e in delivered] == [2] and outbox.pending() == 0
        assert len(up.received) == 2, "the PACS that took the results the first time got them again"
        assert sorted(down.received) == sorted(up.received)
    finally:
        up.close()
        if down is not None:
            down.close()


def test_forward_must_be_aet_at_host_colon_port() -> None:
    assert parse_forward("ORTHANC@127.0.0.1:4242", "MURA").name == "ORTHANC@127.0.0.1:4242"
    for bad in ("ORTHANC", "ORTHANC@host", "A@h:0", "TOO_LONG_AE_TITLE_X@h:1"):
        with pytest.raises(MuraError, match="AET@HOST:PORT"):
            parse_forward(bad, "MURA")


@pytest.fixture
def running_node(tiny_checkpoint: Path, tmp_path: Path) -> Iterator[DicomNode]:
    from mura.inference.predictor import Predictor
    from mura.pacs.study import study_results

    predictor = Predictor.from_checkpoints([tiny_checkpoint], device="cpu", runtime="torch")
    settings = NodeSettings(
        ae_title="MURANODE",
        port=free_port(),
        spool_dir=tmp_path / "spool",
        quiet_seconds=600,
        drain_seconds=5,
        acse_timeout=1,
        network_timeout=2,
        maximum_pdu_size=8192,
    )
    node = DicomNode(
        settings,
        lambda paths, prior: study_results(predictor, paths, prior=prior),
        [parse_forward("X@127.0.0.1:9", "N")],
    )
    ready = threading.Event()
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(node.serve(ready.set)), daemon=True)
    thread.start()
    assert ready.wait(30)
    yield node
    node.stop.set()
    thread.join(30)
    assert result == [0]


def test_node_refuses_an_instance_without_uids_and_spools_a_good_one_as_sent(
    running_node: DicomNode, make_dicom, make_radiograph
) -> None:
    good = pydicom.dcmread(io.BytesIO(make_dicom(make_radiograph())))
    good.StudyInstanceUID, good.SeriesInstanceUID = generate_uid(), generate_uid()
    nameless = copy.deepcopy(good)
    del nameless.StudyInstanceUID
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(DigitalXRayImageStorageForPresentation, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", running_node.settings.port, ae_title="MURANODE")
    assert assoc.is_established
    try:
        assert assoc.send_c_store(nameless).Status == 0xC000
        assert assoc.send_c_store(good).Status == 0x0000
    finally:
        assoc.release()
    stored = running_node.spool.incoming / good.StudyInstanceUID / f"{good.SOPInstanceUID}.dcm"
    assert pydicom.dcmread(stored).PixelData == good.PixelData
    assert running_node.spool.waiting() == 1


def test_node_answers_to_its_own_ae_title_only(running_node: DicomNode) -> None:
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context("1.2.840.10008.1.1")  # Verification
    wrong = ae.associate("127.0.0.1", running_node.settings.port, ae_title="SOMEONE")
    assert wrong.is_rejected
    right = ae.associate("127.0.0.1", running_node.settings.port, ae_title="MURANODE")
    assert right.is_established and right.send_c_echo().Status == 0x0000
    right.release()


def test_node_announces_its_maximum_pdu_and_drops_a_peer_that_stays_silent(running_node: DicomNode) -> None:
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context("1.2.840.10008.1.1")  # Verification
    assoc = ae.associate("127.0.0.1", running_node.settings.port, ae_title="MURANODE")
    assert assoc.is_established and assoc.acceptor.maximum_length == 8192
    deadline = time.monotonic() + 10
    while assoc.is_established and time.monotonic() < deadline:  # idle longer than network_timeout (2 s)
        time.sleep(0.1)
    assert not assoc.is_established
    with socket.create_connection(("127.0.0.1", running_node.settings.port), timeout=10) as mute:
        started = time.monotonic()
        assert mute.recv(1) == b""  # no association request within acse_timeout (1 s): closed
        assert time.monotonic() - started < 8


def test_node_settings_refuse_what_a_network_cannot_use(tmp_path: Path) -> None:
    good = {"ae_title": " MURA ", "port": 104, "spool_dir": tmp_path}
    assert NodeSettings(**good).ae_title == "MURA"  # leading/trailing spaces are not significant
    for bad in (
        {"port": 0},
        {"ae_title": "WAY_TOO_LONG_TITLE"},
        {"ae_title": "   "},
        {"allowed_calling": ("OK", "BACK\\SLASH")},
        {"acse_timeout": 0},
        {"network_timeout": 1e6},
        {"maximum_pdu_size": 0},
        {"quiet_seconds": -1},
        {"unknown": 1},
    ):
        with pytest.raises(ValidationError):
            NodeSettings(**{**good, **bad})

"""`mura dicom-node` end to end: dcmtk's storescu -> the node (a subprocess) -> a real Orthanc.

Everything runs on loopback with free ports: Orthanc with its own JSON config and temporary storage,
the node with a tiny random checkpoint and its own spool. Only a missing Debian package skips.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from mura.cli import main as mura_main
from mura.pacs.spool import short_uid
from mura.pacs.sr import sr_summary
from tests.factories.node import free_port

pytestmark = pytest.mark.slow

ORTHANC = shutil.which("Orthanc") or shutil.which("Orthanc", path="/usr/sbin:/usr/local/sbin")
STORESCU, ECHOSCU, DCMCJPEG = shutil.which("storescu"), shutil.which("echoscu"), shutil.which("dcmcjpeg")
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
DX_CLASS = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation
PDF_CLASS = "1.2.840.10008.5.1.4.1.1.104.1"  # Encapsulated PDF Storage: not an image
NODE_AET, SENDER_AET = "MURANODE", "MODALITY"
SR_PREFIX, SC_PREFIX = "1.2.840.10008.5.1.4.1.1.88.", "1.2.840.10008.5.1.4.1.1.7"

MISSING_TOOLS = (
    "needs Debian packages orthanc and dcmtk (Orthanc, storescu, echoscu, dcmcjpeg): `make system-deps`"
)
needs_tools = pytest.mark.skipif(not (ORTHANC and STORESCU and ECHOSCU and DCMCJPEG), reason=MISSING_TOOLS)


def wait_for(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


# --- Orthanc -----------------------------------------------------------------------------------------
@dataclass
class Orthanc:
    folder: Path
    dicom_port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    aet: str = "ORTHANC"
    process: subprocess.Popen | None = None

    @property
    def forward(self) -> str:
        return f"{self.aet}@127.0.0.1:{self.dicom_port}"

    def start(self) -> Orthanc:
        config = {
            "Name": "mura-test",
            "StorageDirectory": str(self.folder / "storage"),
            "IndexDirectory": str(self.folder / "index"),
            "DicomAet": self.aet,
            "DicomPort": self.dicom_port,
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomModalities": {},
            "Plugins": [str(DICOMWEB_PLUGIN)] if DICOMWEB_PLUGIN.exists() else [],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
            "StorageCompression": False,
            "SaveJobs": False,
        }
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "orthanc.json").write_text(json.dumps(config))
        log = open(self.folder / "orthanc.log", "ab")  # noqa: SIM115 - closed with the process
        self.process = subprocess.Popen([ORTHANC, str(self.folder / "orthanc.json")], stdout=log, stderr=log)
        wait_for(self._up, 30, "Orthanc's REST API")
        return self

    def _up(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"Orthanc exited: {(self.folder / 'orthanc.log').read_text()[-2000:]}")
        try:
            return bool(self.get("/system"))
        except (urllib.error.URLError, ConnectionError):
            return False

    def stop(self, graceful: bool = True) -> None:
        """SIGTERM (its storage is reused by a restart) or, for a throw-away server, SIGKILL."""
        if self.process and self.process.poll() is None:
            if graceful:
                self.process.terminate()
            else:
                self.process.kill()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def request(self, path: str, body: bytes | None = None) -> bytes:
        url = f"http://127.0.0.1:{self.http_port}{path}"
        with urllib.request.urlopen(urllib.request.Request(url, data=body), timeout=10) as response:
            return response.read()

    def get(self, path: str) -> Any:
        return json.loads(self.request(path))

    def instances(self, study_uid: str) -> list[tuple[bytes, Dataset]]:
        """Every instance Orthanc stores for the study: its file and the parsed dataset."""
        query = {"Level": "Instance", "Query": {"StudyInstanceUID": study_uid}}
        ids = json.loads(self.request("/tools/find", json.dumps(query).encode()))
        files = [self.file(i) for i in ids]
        return [(data, pydicom.dcmread(io.BytesIO(data))) for data in files]

    def count(self, study_uid: str) -> int:
        query = {"Level": "Instance", "Query": {"StudyInstanceUID": study_uid}}
        return len(json.loads(self.request("/tools/find", json.dumps(query).encode())))

    def file(self, instance_id: str) -> bytes:
        return self.request(f"/instances/{instance_id}/file")


@pytest.fixture
def orthanc_factory(tmp_path: Path) -> Iterator[Callable[[], Orthanc]]:
    made: list[Orthanc] = []

    def make() -> Orthanc:
        made.append(Orthanc(tmp_path / f"orthanc{len(made)}"))
        return made[-1]

    yield make
    for server in made:
        server.stop(graceful=False)


# --- the node ----------------------------------------------------------------------------------------
@dataclass
class Node:
    process: subprocess.Popen
    port: int
    log: Path

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, timeout: float = 60) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise AssertionError(f"node did not stop on SIGTERM:\n{self.text()[-3000:]}") from None

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


def launch_node(
    folder: Path, checkpoint: Path, forward: str, *extra: str, port: int = 0, quiet: float = 0.5
) -> Node:
    """`python -m mura dicom-node ...` with its spool in `folder`; returns once it listens."""
    port = port or free_port()
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / f"node-{time.monotonic_ns()}.log"
    command = [sys.executable, "-m", "mura", "dicom-node", "--checkpoint", str(checkpoint), "--device", "cpu"]
    command += [
        "--port",
        str(port),
        "--ae-title",
        NODE_AET,
        "--forward",
        forward,
        "--quiet-seconds",
        str(quiet),
    ]
    command += ["--spool", str(folder / "spool"), "--retry-max-seconds", "1", *extra]
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "1"}
    with open(log, "wb") as handle:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=handle, env=env)
    node = Node(process, port, log)

    def listening() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"node exited with {process.returncode}:\n{node.text()[-3000:]}")
        return "listening on" in node.text()

    try:
        wait_for(listening, 120, "the node to listen")
    except BaseException:
        node.kill()
        raise
    return node


@pytest.fixture
def start_node(tiny_checkpoint: Path, tmp_path: Path) -> Iterator[Callable[..., Node]]:
    nodes: list[Node] = []

    def start(forward: str, *extra: str, **kwargs: Any) -> Node:
        nodes.append(launch_node(tmp_path / "node", tiny_checkpoint, forward, *extra, **kwargs))
        return nodes[-1]

    yield start
    for node in nodes:
        node.kill()


def storescu(port: int, files: list[Path], aet: str = SENDER_AET, called: str = NODE_AET) -> None:
    """Send as a modality does: uncompressed files as they are, JPEG Lossless ones proposed as such (-xs)."""
    compressed = [
        p
        for p in files
        if pydicom.dcmread(p, stop_before_pixels=True).file_meta.TransferSyntaxUID.is_compressed
    ]
    for batch, options in (([p for p in files if p not in compressed], []), (compressed, ["-xs"])):
        if not batch:
            continue
        result = subprocess.run(
            [STORESCU, *options, "-aet", aet, "-aec", called, "127.0.0.1", str(port), *map(str, batch)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, f"storescu failed: {result.stderr[-2000:]}"


def echoscu(port: int, aet: str) -> subprocess.CompletedProcess:
    command = [ECHOSCU, "-aet", aet, "-aec", NODE_AET, "127.0.0.1", str(port)]
    return subprocess.run(command, capture_output=True, text=True, timeout=30)


# --- a synthetic study -------------------------------------------------------------------------------
@dataclass
class Study:
    uid: str
    folder: Path
    good: list[Path]  # DX views the node must analyse
    bad: list[Path]  # received, then skipped

    @property
    def files(self) -> list[Path]:
        return self.good + self.bad


def _patient_study(study_uid: str) -> Dataset:
    ds = Dataset()
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = (
        "Test^Wrist",
        "MURA-42",
        "19800101",
        "F",
    )
    ds.StudyInstanceUID, ds.StudyDate, ds.StudyTime = study_uid, "20260101", "101500"
    ds.StudyID, ds.AccessionNumber, ds.ReferringPhysicianName = "1", "ACC42", ""
    ds.StudyDescription = "XR WRIST 3V"
    return ds


def _file(ds: Dataset, sop_class: str, path: Path) -> Path:
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, generate_uid()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = (
        sop_class,
        ds.SOPInstanceUID,
    )
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.save_as(path, enforce_file_format=True)
    return path


def dx_instance(
    study_uid: str, series_uid: str, number: int, pixels: np.ndarray, photometric: str, body_part: str | None
) -> Dataset:
    ds = _patient_study(study_uid)
    ds.SeriesInstanceUID, ds.SeriesNumber, ds.InstanceNumber = series_uid, 1, number
    ds.Modality, ds.Manufacturer, ds.PresentationIntentType = "DX", "Synthetic", "FOR PRESENTATION"
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    stored = pixels.astype(np.uint16) * 16
    ds.PixelData = ((4095 - stored) if photometric == "MONOCHROME1" else stored).tobytes()
    if body_part:
        ds.BodyPartExamined = body_part
    return ds


def make_study(
    folder: Path, make_radiograph, views: int = 3, with_bad: bool = True, jpeg_lossless: bool = False
) -> Study:
    """DX views alternating MONOCHROME1/2 (body part on the first ones), plus bad instances; with
    `jpeg_lossless` one more view compressed by dcmtk's dcmcjpeg (JPEG Lossless SV1, as CR/DX often are)."""
    folder.mkdir(parents=True)
    study_uid, series_uid = generate_uid(), generate_uid()
    good = []
    for i in range(views + jpeg_lossless):
        pixels = make_radiograph("WRIST", abnormal=i % 2 == 0, seed=i, view=i % 2)
        photometric = "MONOCHROME1" if i % 2 else "MONOCHROME2"
        ds = dx_instance(study_uid, series_uid, i + 1, pixels, photometric, "WRIST" if i < 2 else None)
        good.append(_file(ds, DX_CLASS, folder / f"view{i}.dcm"))
    if jpeg_lossless:
        raw = good[-1].rename(folder.parent / f"{folder.name}-uncompressed.dcm")
        subprocess.run(
            [DCMCJPEG, "+e1", str(raw), str(good[-1])], check=True, capture_output=True, timeout=60
        )
    bad = []
    if with_bad:
        broken = dx_instance(
            study_uid, series_uid, 90, make_radiograph("WRIST", seed=9), "MONOCHROME2", "WRIST"
        )
        broken.PixelData = broken.PixelData[: len(broken.PixelData) // 3 // 2 * 2]  # truncated: undecodable
        bad.append(_file(broken, DX_CLASS, folder / "truncated.dcm"))
        pdf = _patient_study(study_uid)
        pdf.SeriesInstanceUID, pdf.SeriesNumber, pdf.InstanceNumber, pdf.Modality = (
            generate_uid(),
            2,
            1,
            "DOC",
        )
        pdf.MIMETypeOfEncapsulatedDocument, pdf.BurnedInAnnotation = "application/pdf", "NO"
        pdf.EncapsulatedDocument = b"%PDF-1.4\n%%EOF\n"
        bad.append(_file(pdf, PDF_CLASS, folder / "request.dcm"))
    return Study(study_uid, folder, good, bad)


def sop_uid(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def split_results(found: list[tuple[bytes, Dataset]]) -> tuple[list[Dataset], list[Dataset], list[bytes]]:
    """(SRs, SCs, other instances' files) among a study's instances."""
    srs = [ds for _, ds in found if str(ds.SOPClassUID).startswith(SR_PREFIX)]
    scs = [ds for _, ds in found if str(ds.SOPClassUID).startswith(SC_PREFIX)]
    results = {ds.SOPInstanceUID for ds in srs + scs}
    return srs, scs, [data for data, ds in found if ds.SOPInstanceUID not in results]


def results_in(orthanc: Orthanc, study: Study) -> tuple[list[Dataset], list[Dataset], list[bytes]] | None:
    """The study's SR, SCs and other files once the SR and one SC per good view are stored, else None."""
    srs, scs, others = split_results(orthanc.instances(study.uid))
    return (srs, scs, others) if len(srs) >= 1 and len(scs) >= len(study.good) else None


def dataset_bytes(data: bytes) -> bytes:
    """A DICOM file's bytes after its file meta group (which each receiver rewrites)."""
    assert data[128:132] == b"DICM" and data[132:136] == b"\x02\x00\x00\x00"
    return data[144 + int.from_bytes(data[140:144], "little") :]


def sr_references(sr: Dataset) -> set[str]:
    """SOP Instance UIDs the SR names as its evidence."""
    return {
        str(ref.ReferencedSOPInstanceUID)
        for keyword in ("CurrentRequestedProcedureEvidenceSequence", "PertinentOtherEvidenceSequence")
        for study in sr.get(keyword, [])
        for series in study.ReferencedSeriesSequence
        for ref in series.ReferencedSOPSequence
    }


def predicted(
    folder: Path, checkpoint: Path, capsys: pytest.CaptureFixture
) -> tuple[float, dict[str, float]]:
    """What `mura predict --study` says for the same files: the study's and each view's probability."""
    capsys.readouterr()
    assert (
        mura_main(["predict", str(folder), "--study", "--checkpoint", str(checkpoint), "--device", "cpu"])
        == 0
    )
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    study = next(r["fracture_probability"] for r in records if r["kind"] == "study")
    views = {sop_uid(Path(r["path"])): r["fracture_probability"] for r in records if r["kind"] == "image"}
    return study, views


# --- one PACS and one node for the tests that do not restart anything --------------------------------
@dataclass
class Pacs:
    orthanc: Orthanc  # receives the results by C-STORE
    web: Orthanc  # receives the same results by STOW-RS (its DICOMweb plugin)
    node: Node
    folder: Path


@pytest.fixture(scope="module")
def pacs(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pacs]:
    if not (ORTHANC and STORESCU and ECHOSCU and DCMCJPEG):
        pytest.skip(MISSING_TOOLS)
    if not DICOMWEB_PLUGIN.exists():
        pytest.skip(f"needs Debian package orthanc-dicomweb ({DICOMWEB_PLUGIN}): `make system-deps`")
    folder = tmp_path_factory.mktemp("pacs")
    orthanc, web = Orthanc(folder / "orthanc"), Orthanc(folder / "web", aet="WEB")
    try:
        orthanc.start()
        web.start()
        stow = f"http://127.0.0.1:{web.http_port}/dicom-web"
        node = launch_node(folder, tiny_checkpoint, orthanc.forward, "--stow", stow, "--allow", SENDER_AET)
    except BaseException:
        orthanc.stop()
        web.stop()
        raise
    yield Pacs(orthanc, web, node, folder)
    code = node.stop()
    orthanc.stop(graceful=False)
    web.stop(graceful=False)
    assert code == 0, node.text()[-3000:]


def test_study_through_the_node_lands_in_orthanc_as_sr_and_secondary_captures(
    pacs: Pacs, make_radiograph, tiny_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    study = make_study(tmp_path / "study", make_radiograph, views=3, jpeg_lossless=True)
    assert pydicom.dcmread(study.good[-1]).file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.70"
    before = {p.name: sha256(p) for p in study.files}
    only_bad = make_study(tmp_path / "only_bad", make_radiograph, views=0)  # must not block the other
    storescu(pacs.node.port, only_bad.files)
    storescu(pacs.orthanc.dicom_port, study.files, called=pacs.orthanc.aet)  # the modality's copy to the PACS
    storescu(pacs.node.port, study.files)

    srs, scs, others = wait_for(
        lambda: results_in(pacs.orthanc, study), 120, "the SR and SCs in Orthanc", 0.2
    )
    assert len(srs) == 1 and len(scs) == len(study.good)
    sr = srs[0]
    web_srs, web_scs, _ = wait_for(lambda: results_in(pacs.web, study), 60, "the results by STOW-RS", 0.2)
    assert {ds.SOPInstanceUID for ds in web_srs + web_scs} == {ds.SOPInstanceUID for ds in srs + scs}
    study_probability, view_probabilities = predicted(study.folder, tiny_checkpoint, capsys)
    summary = sr_summary(sr)  # read back through highdicom, as a TID 1500 consumer does
    assert summary["study_probability"] == pytest.approx(study_probability, abs=1e-6)
    assert summary["views"] == pytest.approx(view_probabilities, abs=1e-6)
    assert sr_references(sr) == {sop_uid(p) for p in study.good}
    sources = pydicom.dcmread(study.good[0], stop_before_pixels=True)
    for ds in (sr, *scs):
        assert (ds.StudyInstanceUID, ds.PatientID, ds.PatientName) == (study.uid, "MURA-42", "Test^Wrist")
        assert ds.SeriesInstanceUID != sources.SeriesInstanceUID
    for sc in scs:
        pixels = sc.pixel_array.astype(np.float64)
        assert pixels.std() > 5 and len(np.unique(pixels)) > 16, "the Secondary Capture is blank"
    # The sources: untouched on disk, and Orthanc holds exactly what the modality sent.
    assert {p.name: sha256(p) for p in study.files} == before
    assert sorted(map(dataset_bytes, others)) == sorted(dataset_bytes(p.read_bytes()) for p in study.files)
    log = wait_for(
        lambda: study.uid[-6:] in pacs.node.text() and pacs.node.text(), 30, "the study's log line"
    )
    study_lines = [line for line in log.splitlines() if f"study {study.uid[:6]}" in line and "p=" in line]
    assert len(study_lines) == 1 and f"{len(study.good)} views, 2 skipped" in study_lines[0]
    assert f"study {short_uid(only_bad.uid)}: no results (2 instances): " in log
    assert pacs.orthanc.count(only_bad.uid) == 0
    truncated, pdf = (f"skipped instance {short_uid(sop_uid(p))}: " for p in study.bad)
    assert f"{truncated}cannot decode pixel data" in log and f"{pdf}not an image SOP class" in log
    assert not list((pacs.folder / "spool" / "incoming").iterdir()), "the spool was not cleaned"
    assert not list((pacs.folder / "spool" / "work").iterdir())
    wait_for(lambda: not list((pacs.folder / "spool" / "outbox").iterdir()), 10, "the outbox to empty")


def test_node_answers_c_echo_and_rejects_a_calling_ae_title_not_allowed(pacs: Pacs) -> None:
    allowed = echoscu(pacs.node.port, SENDER_AET)
    assert allowed.returncode == 0, allowed.stderr
    refused = echoscu(pacs.node.port, "INTRUDER")
    assert refused.returncode != 0
    assert "reject" in (refused.stdout + refused.stderr).lower()
    assert "association from INTRUDER" in pacs.node.text()
    assert pacs.node.process.poll() is None  # still serving


@pytest.mark.benchmark
def test_latency_from_last_instance_to_sr_in_orthanc_for_a_four_view_study(
    pacs: Pacs, make_radiograph, tmp_path: Path
) -> None:
    """A benchmark, not a test (deselected by default; `benchmarks/bench_dicom_node.sh` runs it and writes
    docs/benchmarks/dicom.md): quiet period excluded, every study's results checked, no time asserted."""
    quiet = 0.5
    latencies = []
    for run in range(3):
        study = make_study(tmp_path / f"study{run}", make_radiograph, views=4, with_bad=False)
        storescu(pacs.node.port, study.files)
        received = time.monotonic()
        expected = 1 + len(study.good)  # the SR and one SC per view (the sources went to the node only)
        wait_for(lambda: pacs.orthanc.count(study.uid) >= expected, 120, "the SR in Orthanc", 0.02)  # noqa: B023
        latencies.append(time.monotonic() - received - quiet)
        srs, scs, _ = split_results(pacs.orthanc.instances(study.uid))
        assert len(srs) == 1 and len(scs) == 4
    print(
        f"\n4-view study, last instance received -> SR + 4 SCs stored in Orthanc (quiet {quiet} s excluded):"
    )
    print("  runs: " + ", ".join(f"{t:.2f} s" for t in latencies) + f"; median {np.median(latencies):.2f} s")


# --- faults: the destination down, SIGTERM mid-study -------------------------------------------------
def outbox_entries(folder: Path) -> list[Path]:
    return [p for p in (folder / "spool" / "outbox").iterdir() if not p.name.startswith(".")]


@needs_tools
def test_results_wait_in_the_outbox_while_the_pacs_is_down_and_survive_a_restart(
    orthanc_factory, start_node, make_radiograph, tmp_path: Path
) -> None:
    orthanc = orthanc_factory()  # ports chosen, not started yet: the PACS is down
    node = start_node(orthanc.forward)
    first = make_study(tmp_path / "first", make_radiograph, views=2, with_bad=False)
    storescu(node.port, first.files)
    wait_for(lambda: node.text().count("delivery failed") >= 2, 60, "failed delivery attempts", 0.2)
    assert len(outbox_entries(tmp_path / "node")) == 1
    orthanc.start()  # back up: delivered without any restart
    srs, scs, _ = wait_for(lambda: results_in(orthanc, first), 60, "the first study's results", 0.2)
    assert sr_references(srs[0]) == {sop_uid(p) for p in first.good} and len(scs) == 2
    wait_for(lambda: not outbox_entries(tmp_path / "node"), 10, "the outbox to empty")

    orthanc.stop()  # down again; this time the node stops before the PACS returns
    second = make_study(tmp_path / "second", make_radiograph, views=2, with_bad=False)
    storescu(node.port, second.files)
    wait_for(
        lambda: len(outbox_entries(tmp_path / "node")) == 1, 60, "the second study's results on disk", 0.2
    )
    assert node.stop() == 0
    assert "1 results undelivered" in node.text()
    orthanc.start()
    restarted = start_node(orthanc.forward, port=node.port)
    assert "resuming: 0 studies spooled, 0 claimed, 1 results to deliver" in restarted.text()
    srs, _, _ = wait_for(lambda: results_in(orthanc, second), 60, "results kept across the restart", 0.2)
    assert sr_references(srs[0]) == {sop_uid(p) for p in second.good}
    wait_for(lambda: not outbox_entries(tmp_path / "node"), 10, "the outbox to empty")
    assert restarted.stop() == 0


@needs_tools
def test_sigterm_mid_study_loses_no_instance_and_the_study_completes_after_restart(
    orthanc_factory, start_node, make_radiograph, tmp_path: Path
) -> None:
    orthanc = orthanc_factory().start()
    study = make_study(tmp_path / "study", make_radiograph, views=8, with_bad=False)
    first, rest = study.good[:6], study.good[6:]
    node = start_node(orthanc.forward, quiet=600)  # the study is never quiet before SIGTERM
    incoming = tmp_path / "node" / "spool" / "incoming" / study.uid
    command = [STORESCU, "--repeat", "30", "-aet", SENDER_AET, "-aec", NODE_AET]  # long enough to interrupt
    command += ["127.0.0.1", str(node.port), *map(str, first)]
    sender = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wait_for(
        lambda: incoming.is_dir() and any(incoming.iterdir()), 30, "the first instance in the spool", 0.01
    )
    started = time.monotonic()
    assert node.stop(timeout=60) == 0  # SIGTERM while the association may still be sending
    assert time.monotonic() - started < 30
    assert sender.wait(30) == 0, sender.stderr.read()  # the open association was let finish
    spooled = {p.name: p.read_bytes() for p in incoming.iterdir()}
    assert {f"{sop_uid(p)}.dcm" for p in first} == set(spooled)
    sent = sorted(dataset_bytes(p.read_bytes()) for p in first)
    assert sorted(map(dataset_bytes, spooled.values())) == sent  # received byte for byte
    assert orthanc.count(study.uid) == 0
    assert "letting 1 open association(s) finish" in node.text() and "1 studies spooled" in node.text()

    restarted = start_node(orthanc.forward, port=node.port, quiet=2.0)
    assert "resuming: 1 studies spooled, 0 claimed, 0 results to deliver" in restarted.text()
    storescu(restarted.port, rest)  # the rest of the study, after the restart
    srs, scs, _ = wait_for(lambda: results_in(orthanc, study), 120, "the whole study's results", 0.2)
    assert sr_references(srs[0]) == {sop_uid(p) for p in study.good} and len(scs) == len(study.good)
    assert restarted.stop() == 0

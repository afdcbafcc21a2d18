"""DICOM TLS for the node: receiving (client certificates required with a CA) and forwarding.

Certificates are made by the test with `openssl req` (a CA, the node, the PACS, a modality, and an
intruder signed by another CA). Every server listens on loopback and is stopped after its test.
Each test failed on the node as it was before issue 17 (no TLS at all).
"""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydicom.uid import generate_uid
from pynetdicom import AE

from mura.errors import MuraError
from mura.pacs.delivery import CStoreDestination, DeliveryError
from mura.pacs.node import DicomNode
from mura.pacs.node_settings import NodeSettings
from mura.pacs.tls import forward_context, listener_context
from tests.factories.node import free_port, serving
from tests.pacs.test_node import NODE_AET, SENDER_AET, STORESCU, launch_node, make_study, wait_for
from tests.pacs.test_node_parts import StorageSCP, capture
from tests.pacs.test_node_security import run_cli

VERIFICATION = "1.2.840.10008.1.1"


@dataclass
class Pki:
    folder: Path

    def cert(self, name: str) -> Path:
        return self.folder / f"{name}.pem"

    def key(self, name: str) -> Path:
        return self.folder / f"{name}.key"

    def server(self, name: str, ca: str = "ca") -> ssl.SSLContext:
        """A TLS server context for `name` that requires a client certificate signed by `ca`."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert(name), self.key(name))
        context.load_verify_locations(self.cert(ca))
        context.verify_mode = ssl.CERT_REQUIRED
        return context


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command (Debian package openssl)")
    pki = Pki(tmp_path_factory.mktemp("pki"))

    def request(name: str, *extra: str) -> None:
        key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"]
        files = ["-keyout", str(pki.key(name)), "-out", str(pki.cert(name)), "-subj", f"/CN={name}"]
        subprocess.run(["openssl", "req", "-x509", *key, *files, *extra], check=True, capture_output=True)
        pki.key(name).chmod(0o600)

    for ca in ("ca", "rogue-ca"):
        request(
            ca, "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign"
        )
    for name, ca, host in (
        ("node", "ca", "IP:127.0.0.1"),
        ("pacs", "ca", "IP:127.0.0.1"),
        ("modality", "ca", "DNS:modality.example"),
        ("intruder", "rogue-ca", "DNS:intruder.example"),
        ("elsewhere", "ca", "DNS:pacs.example"),  # a valid certificate, but for another host
    ):
        signed = ["-CA", str(pki.cert(ca)), "-CAkey", str(pki.key(ca))]
        names = ["-addext", f"subjectAltName={host}", "-addext", "basicConstraints=critical,CA:FALSE"]
        request(name, *signed, *names)
    return pki


def tls_flags(pki: Pki) -> list[str]:
    """Listen with TLS requiring client certificates, and forward over TLS with the node's certificate."""
    node, key, ca = str(pki.cert("node")), str(pki.key("node")), str(pki.cert("ca"))
    forward = ["--forward-tls-ca", ca, "--forward-tls-cert", node, "--forward-tls-key", key]
    return ["--tls-cert", node, "--tls-key", key, "--tls-ca", ca, *forward]


# --- in-process: the contexts, the listener, the forward ---------------------------------------------
@pytest.fixture
def tls_node(pki: Pki, tmp_path: Path) -> Iterator[DicomNode]:
    settings = NodeSettings(
        ae_title=NODE_AET,
        port=free_port(),
        spool_dir=tmp_path / "spool",
        drain_seconds=2,
        acse_timeout=5,
        tls_cert=pki.cert("node"),
        tls_key=pki.key("node"),
        tls_ca=pki.cert("ca"),
    )
    node = DicomNode(settings, lambda paths, prior: None, [CStoreDestination("PACS", "127.0.0.1", 9)])
    with serving(node):
        yield node


def echo(port: int, client: ssl.SSLContext | None) -> bool:
    ae = AE(ae_title=SENDER_AET)
    ae.add_requested_context(VERIFICATION)
    ae.acse_timeout = ae.network_timeout = 10
    tls_args = (client, "127.0.0.1") if client is not None else None
    assoc = ae.associate("127.0.0.1", port, ae_title=NODE_AET, tls_args=tls_args)
    if not assoc.is_established:
        return False
    answered = assoc.send_c_echo().Status == 0x0000
    assoc.release()
    return answered


def test_listener_needs_tls_and_a_client_certificate_from_the_ca(tls_node: DicomNode, pki: Pki) -> None:
    port = tls_node.settings.port
    assert echo(port, forward_context(pki.cert("ca"), pki.cert("modality"), pki.key("modality")))
    assert not echo(port, forward_context(pki.cert("ca")))  # no client certificate
    assert not echo(port, forward_context(pki.cert("ca"), pki.cert("intruder"), pki.key("intruder")))
    assert not echo(port, None)  # plain DICOM


def test_a_peer_that_connects_and_stays_silent_does_not_block_the_tls_listener(
    tls_node: DicomNode, pki: Pki
) -> None:
    client = forward_context(pki.cert("ca"), pki.cert("modality"), pki.key("modality"))
    with socket.create_connection(("127.0.0.1", tls_node.settings.port)):  # never sends a ClientHello
        time.sleep(0.2)
        started = time.monotonic()
        assert echo(tls_node.settings.port, client)
        assert time.monotonic() - started < 5


def test_forward_over_tls_checks_the_pacs_certificate_and_presents_the_nodes(pki: Pki, tmp_path) -> None:
    files = [capture(tmp_path / "sc.dcm", generate_uid())]
    port = free_port()
    pacs = StorageSCP(port, ssl_context=pki.server("pacs"))
    try:
        trusted = forward_context(pki.cert("ca"), pki.cert("node"), pki.key("node"))
        CStoreDestination("PACS", "127.0.0.1", port, tls=trusted).send(files)
        assert len(pacs.received) == 1
        for refused in (
            forward_context(pki.cert("ca")),  # the PACS requires a client certificate
            forward_context(pki.cert("rogue-ca"), pki.cert("node"), pki.key("node")),  # PACS not trusted
        ):
            with pytest.raises(DeliveryError, match="TLS handshake failed"):
                CStoreDestination("PACS", "127.0.0.1", port, tls=refused).send(files)
        assert len(pacs.received) == 1
    finally:
        pacs.close()
    elsewhere = StorageSCP(port := free_port(), ssl_context=pki.server("elsewhere"))
    try:
        with pytest.raises(DeliveryError, match="TLS handshake failed"):  # not the host it names
            CStoreDestination("PACS", "127.0.0.1", port, tls=trusted).send(files)
    finally:
        elsewhere.close()
    assert elsewhere.received == []


def test_tls_files_that_cannot_be_used_are_named(pki: Pki, tmp_path: Path) -> None:
    missing = tmp_path / "missing.pem"
    with pytest.raises(MuraError, match=f"tls_cert {missing}: cannot be loaded"):
        listener_context(missing, None, None, 30)
    with pytest.raises(MuraError, match=f"tls_cert {pki.cert('node')} \\(key {pki.key('pacs')}\\)"):
        listener_context(pki.cert("node"), pki.key("pacs"), None, 30)  # a key of another certificate
    with pytest.raises(MuraError, match=f"forward_tls_ca {pki.key('ca')}: cannot be loaded"):
        forward_context(pki.key("ca"))


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--tls-key", "k.pem"], "--tls-key 'k.pem': needs the node's own certificate (--tls-cert) as well"),
        (["--tls-cert", "missing.pem"], "--tls-cert missing.pem: cannot be loaded"),
        (["--forward-tls-cert", "c.pem"], "--forward-tls-cert/--forward-tls-key need --forward-tls-ca"),
    ],
)
def test_cli_names_the_tls_flag_at_fault(flags, named, pacs_checkpoint: Path, tmp_path: Path) -> None:
    args = ["dicom-node", "--checkpoint", str(pacs_checkpoint), "--spool", str(tmp_path / "spool")]
    args += ["--port", str(free_port()), "--ae-title", "MURA", "--forward", "PACS@127.0.0.1:9"]
    code, _, err = run_cli([*args, *flags])
    assert code == 2 and err.count("\n") == 1 and named in err, err


# --- end to end: storescu +tls -> the node -> TLS forward -------------------------------------------
def storescu_tls(port: int, files: list[Path], pki: Pki, identity: str | None) -> subprocess.CompletedProcess:
    tls = (
        ["+tls", str(pki.key(identity)), str(pki.cert(identity)), "+cf", str(pki.cert("ca"))]
        if identity
        else []
    )
    command = [STORESCU, *tls, "-aet", SENDER_AET, "-aec", NODE_AET, "127.0.0.1", str(port), *map(str, files)]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


@pytest.mark.slow
@pytest.mark.skipif(STORESCU is None, reason="needs dcmtk's storescu (Debian package dcmtk)")
def test_a_study_crosses_dicom_tls_from_the_modality_to_the_pacs(
    pki: Pki, tiny_checkpoint: Path, make_radiograph, tmp_path: Path
) -> None:
    pacs_port = free_port()
    pacs = StorageSCP(pacs_port, ssl_context=pki.server("pacs"))  # requires the node's certificate
    # A refused peer's association waits out the ACSE timeout (pynetdicom), which shutdown waits for.
    flags = [*tls_flags(pki), "--acse-timeout", "5"]
    try:
        node = launch_node(tmp_path / "node", tiny_checkpoint, f"PACS@127.0.0.1:{pacs_port}", *flags)
    except BaseException:
        pacs.close()
        raise
    try:
        study = make_study(tmp_path / "study", make_radiograph, views=2, with_bad=False)
        assert "TLS + client certificates" in node.text()
        for identity in (None, "intruder"):  # plain DICOM, and a certificate from another CA
            refused = storescu_tls(node.port, study.files, pki, identity)
            assert refused.returncode != 0
        sent = storescu_tls(node.port, study.files, pki, "modality")
        assert sent.returncode == 0, sent.stderr[-2000:]
        try:
            wait_for(lambda: len(pacs.received) >= 3, 120, "the SR and 2 SCs at the PACS over TLS", 0.2)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; the node said:\n{node.text()[-3000:]}") from None
        assert node.stop() == 0
        assert "delivery failed" not in node.text()
    finally:
        node.kill()
        pacs.close()
    assert len(pacs.received) == 3

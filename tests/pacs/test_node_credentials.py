"""STOW-RS credentials stay out of argv and logs: read from a private file or the environment, sent
only in the Authorization header, masked in every logged URL and error text.

Each test failed on the node as it was before issue 17, which took the password only as
`user:pass@` in the `--stow` URL and printed it in the start-up line and in every retry line.
"""

from __future__ import annotations

import base64
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from mura.errors import MuraError
from mura.pacs.credentials import BasicCredentials, redact, stow_credentials
from mura.pacs.delivery import StowDestination
from tests.factories.node import free_port
from tests.pacs.test_node import launch_node, make_study, needs_tools, storescu, wait_for
from tests.pacs.test_node_parts import StorageSCP
from tests.pacs.test_node_security import run_cli

PASSWORD = "pw-Wq8Zt3vK"


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
    tiny_checkpoint: Path, make_radiograph, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    RefusingStow.seen = []
    monkeypatch.setenv("MURA_STOW_USER", "mura")  # the node's environment, not its argv
    monkeypatch.setenv("MURA_STOW_PASSWORD", PASSWORD)
    web = ThreadingHTTPServer(("127.0.0.1", 0), RefusingStow)
    threading.Thread(target=web.serve_forever, daemon=True).start()
    stow = f"http://127.0.0.1:{web.server_address[1]}/dicom-web"
    pacs_port = free_port()
    pacs = StorageSCP(pacs_port)  # the C-STORE destination takes the results; STOW-RS keeps failing
    try:
        node = launch_node(tmp_path / "node", tiny_checkpoint, f"PACS@127.0.0.1:{pacs_port}", "--stow", stow)
        try:
            assert PASSWORD not in Path(f"/proc/{node.process.pid}/cmdline").read_text()
            study = make_study(tmp_path / "study", make_radiograph, views=1, with_bad=False)
            storescu(node.port, study.files)
            try:
                wait_for(lambda: node.text().count("STOW-RS failed") >= 3, 90, "three STOW-RS attempts", 0.2)
            except AssertionError as exc:
                raise AssertionError(f"{exc}; the node said:\n{node.text()[-3000:]}") from None
        finally:
            code = node.stop()
    finally:
        web.shutdown()
        pacs.close()
    assert code == 0
    expected = "Basic " + base64.b64encode(f"mura:{PASSWORD}".encode()).decode()
    assert len(RefusingStow.seen) >= 3 and set(RefusingStow.seen) == {expected}
    log = node.text()
    assert stow in log and "503" in log
    assert PASSWORD not in log and expected.split()[1] not in log

"""`mura serve` as an operator starts it: TLS end to end, the warnings, the flags that reach the server."""

from __future__ import annotations

import functools
import ssl
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from mura.cli import main
from mura.errors import MuraError
from mura.inference.predictor import Predictor
from mura.service.app import create_app
from mura.service.model_card import model_card
from mura.service.security import allowed_hosts
from mura.service.server import ConnectionLimits, GuardedH11Protocol, check_tls_files, uvicorn_options

TOKEN = "ward-3-viewer-token-0123456789"


def make_certificate(folder: Path, name: str) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost, and its key (openssl, as an operator would)."""
    cert, key = folder / f"{name}.crt", folder / f"{name}.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_certificate(tmp_path_factory.mktemp("tls"), "server")


@pytest.fixture(scope="module")
def predictor(tiny_checkpoint: Path) -> Predictor:
    return Predictor.from_checkpoints([tiny_checkpoint], device="cpu", runtime="torch")


def test_https_end_to_end_with_a_client_that_verifies_the_certificate(serve, predictor, certificate) -> None:
    cert, key = certificate
    hosts = allowed_hosts("127.0.0.1")
    app = create_app(predictor, model_info=model_card(predictor), auth_tokens=[TOKEN], allowed_hosts=hosts)
    options = uvicorn_options(ConnectionLimits(), request_slots=25, tls_cert=cert, tls_key=key)
    with serve(app, **options) as url:
        https = url.replace("http://", "https://")
        trusting = ssl.create_default_context(cafile=str(cert))
        with httpx.Client(base_url=https, verify=trusting, timeout=10) as http:
            assert http.get("/healthz").status_code == 200
            assert http.get("/v1/model").status_code == 401
            model = http.get("/v1/model", headers={"Authorization": f"Bearer {TOKEN}"})
            assert model.status_code == 200 and model.json()["architecture"] == "custom_cnn"
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            httpx.get(f"{https}/healthz", timeout=10)  # the system's trust store does not know it
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{url}/healthz", timeout=10)  # no plain HTTP on the TLS port


def test_a_certificate_and_key_that_do_not_match_are_one_line(certificate, tmp_path) -> None:
    cert, _ = certificate
    _, other_key = make_certificate(tmp_path, "other")
    with pytest.raises(MuraError, match="cannot be loaded.*matches it"):
        check_tls_files(cert, other_key)
    with pytest.raises(MuraError, match="not found"):
        check_tls_files(tmp_path / "missing.crt", None)


@pytest.fixture()
def started(monkeypatch) -> dict[str, Any]:
    """What `mura serve` would hand to uvicorn; uvicorn itself is not started."""
    import uvicorn

    handed: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: handed.update(app=app, **kwargs))
    return handed


def serve_args(checkpoint: Path, *flags: str) -> list[str]:
    return ["serve", "--checkpoint", str(checkpoint), "--device", "cpu", "--port", "8123", *flags]


def test_listening_beyond_loopback_without_token_or_tls_is_said_at_start(
    tiny_checkpoint, started, capsys
) -> None:
    assert main(serve_args(tiny_checkpoint, "--host", "0.0.0.0")) == 0
    stderr = capsys.readouterr().err
    assert "without --auth-token-file" in stderr and "without --tls-cert" in stderr
    assert "--allowed-host" in stderr
    assert started["host"] == "0.0.0.0" and started["ssl_certfile"] is None
    http = started["http"]
    assert isinstance(http, functools.partial) and http.func is GuardedH11Protocol
    assert started["limit_concurrency"] == 100 + (1 + 8 + 16) + 64
    assert started["timeout_keep_alive"] == 5 and started["h11_max_incomplete_event_size"] == 16 * 1024
    with TestClient(started["app"], base_url="http://localhost:8123") as client:
        assert client.get("/v1/model").status_code == 200  # no token asked: the operator was warned
        assert client.get("/docs").status_code == 404


def test_a_protected_server_with_its_host_name_and_tls_starts_silently(
    tiny_checkpoint, certificate, started, capsys, tmp_path
) -> None:
    cert, key = certificate
    tokens = tmp_path / "tokens"
    tokens.write_text(TOKEN + "\n")
    tokens.chmod(0o600)
    flags = ["--host", "10.0.0.5", "--auth-token-file", str(tokens), "--tls-cert", str(cert)]
    flags += ["--tls-key", str(key), "--allowed-host", "viewer.hospital.org", "--docs"]
    assert main(serve_args(tiny_checkpoint, *flags)) == 0
    out, err = capsys.readouterr()
    assert "warning" not in err and "https://10.0.0.5:8123/" in out
    assert started["ssl_certfile"] == str(cert) and started["ssl_keyfile"] == str(key)
    with TestClient(started["app"], base_url="https://viewer.hospital.org") as client:
        assert client.get("/v1/model").status_code == 401
        assert client.get("/v1/model", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
        assert client.get("/docs").status_code == 200
        assert client.get("/healthz", headers={"Host": "intranet.example"}).status_code == 400


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--head-timeout-s", "0"], "--head-timeout-s 0.0 is too low"),
        (["--max-idle-connections", "0"], "--max-idle-connections 0 is too low"),
        (["--tls-key", "server.key"], "without its certificate"),
    ],
)
def test_bad_serve_flags_are_one_line_naming_the_flag(
    tiny_checkpoint, started, capsys, flags, message
) -> None:
    assert main(serve_args(tiny_checkpoint, *flags)) == 2
    assert message in capsys.readouterr().err and not started


def test_a_token_file_readable_by_others_stops_the_start(tiny_checkpoint, started, capsys, tmp_path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text(TOKEN + "\n")
    tokens.chmod(0o644)
    assert main(serve_args(tiny_checkpoint, "--auth-token-file", str(tokens))) == 2
    err = capsys.readouterr().err
    assert f"chmod 600 {tokens}" in err and TOKEN not in err and not started

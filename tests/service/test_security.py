"""Tokens, Host names and response headers of the HTTP service (in process, through the ASGI app)."""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from mura.errors import MuraError
from mura.inference.predictor import Predictor
from mura.network import is_loopback
from mura.service.app import create_app
from mura.service.model_card import model_card
from mura.service.security import allowed_hosts, load_tokens

TOKENS = ("first-token-0123456789", "second-token-abcdefghij")


@pytest.fixture(scope="module")
def predictor(tiny_checkpoint: Path) -> Predictor:
    return Predictor.from_checkpoints([tiny_checkpoint], device="cpu", runtime="torch")


@pytest.fixture(scope="module")
def png(make_radiograph, encode_image) -> bytes:
    return encode_image(make_radiograph("WRIST"))


@pytest.fixture(scope="module")
def client(predictor: Predictor) -> TestClient:
    """As `mura serve --auth-token-file` on loopback builds it (TestClient's host name added)."""
    app = create_app(
        predictor,
        model_info=model_card(predictor),
        auth_tokens=TOKENS,
        allowed_hosts=allowed_hosts("127.0.0.1", ["testserver"]),
    )
    with TestClient(app) as test_client:
        yield test_client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def token_file(tmp_path: Path, text: str, mode: int = 0o600) -> Path:
    path = tmp_path / "tokens"
    path.write_text(text)
    path.chmod(mode)
    return path


# --- token file -----------------------------------------------------------------------------------------


def test_token_file_gives_one_token_per_line_without_blanks_or_comments(tmp_path) -> None:
    path = token_file(tmp_path, f"# ward 3 viewers\n{TOKENS[0]}\n\n  {TOKENS[1]}  \n")
    assert load_tokens(path) == TOKENS


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_a_token_file_others_can_read_is_refused_like_ssh_refuses_a_key(tmp_path, mode) -> None:
    path = token_file(tmp_path, TOKENS[0], mode)
    with pytest.raises(MuraError, match=f"{mode:04o}.*chmod 600 {re.escape(str(path))}"):
        load_tokens(path)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "holds no token"),
        ("# only a comment\n", "holds no token"),
        ("hunter2\n", "line 1: a token needs 16"),  # guessable
        (f"{TOKENS[0]}\nhunter2 and more words\n", "line 2: a token needs 16"),  # no header can carry it
    ],
)
def test_an_unusable_token_file_is_one_line_naming_the_fix_but_not_the_token(tmp_path, text, problem) -> None:
    with pytest.raises(MuraError, match=problem) as error:
        load_tokens(token_file(tmp_path, text))
    assert "secrets.token_urlsafe" in str(error.value) and "hunter2" not in str(error.value)


# --- authentication -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [{}, bearer("wrong-token-0123456789"), {"Authorization": f"Basic {TOKENS[0]}"}, bearer(TOKENS[0] + "x")],
)
def test_protected_routes_answer_401_with_the_bearer_challenge(client, png, headers) -> None:
    for response in (
        client.get("/v1/model", headers=headers),
        client.post("/v1/predict", files={"file": ("a.png", png)}, headers=headers),
        client.post("/v1/predict/study", files={"files": ("a.png", png)}, headers=headers),
    ):
        assert response.status_code == 401, response.text
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert response.json()["error"] == "unauthorized"
    assert client.get("/healthz").json()["reading"] == 0  # the refused uploads were not read


@pytest.mark.parametrize("token", TOKENS)
def test_every_token_of_the_file_is_accepted(client, png, token) -> None:
    assert client.get("/v1/model", headers=bearer(token)).json()["architecture"] == "custom_cnn"
    answer = client.post("/v1/predict", files={"file": ("a.png", png)}, headers=bearer(token))
    assert answer.status_code == 200 and answer.json()["path"] == "a.png"


def test_health_page_and_schema_stay_open_and_health_shows_only_load(client) -> None:
    health = client.get("/healthz")
    assert health.status_code == 200
    assert set(health.json()) == {"status", "in_flight", "capacity", "reading", "reading_capacity"}
    assert client.get("/").status_code == 200 and client.get("/openapi.json").status_code == 200


def test_the_schema_documents_401_and_the_bearer_scheme_on_every_protected_route(client) -> None:
    schema = client.get("/openapi.json").json()
    assert schema["components"]["securitySchemes"]["HTTPBearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "a token from the server's token file",
    }
    protected = [(p, m) for p, ops in schema["paths"].items() for m in ops if p.startswith("/v1/")]
    assert len(protected) == 3
    for path, method in protected:
        operation = schema["paths"][path][method]
        assert operation["security"] == [{"HTTPBearer": []}], path
        assert "WWW-Authenticate" in operation["responses"]["401"]["headers"], path
    assert "security" not in schema["paths"]["/healthz"]["get"]


def test_without_tokens_nothing_is_asked_and_no_401_is_documented(predictor) -> None:
    with TestClient(create_app(predictor)) as http:
        assert http.get("/v1/model").status_code == 200
        schema = http.get("/openapi.json").json()
    assert "securitySchemes" not in schema.get("components", {})
    assert "401" not in schema["paths"]["/v1/predict"]["post"]["responses"]


# --- Host names -----------------------------------------------------------------------------------------


def test_default_host_names_are_loopback_and_the_bind_address() -> None:
    assert allowed_hosts("127.0.0.1") == ["localhost", "127.0.0.1", "[::1]"]
    assert allowed_hosts("0.0.0.0", ["Viewer.Hospital.org"]) == [
        "localhost",
        "127.0.0.1",
        "[::1]",
        "viewer.hospital.org",
    ]
    assert allowed_hosts("::", ["fd00::5"]) == ["localhost", "127.0.0.1", "[::1]", "[fd00::5]"]
    assert allowed_hosts("10.1.2.3")[-1] == "10.1.2.3"


def test_loopback_binds_are_told_from_the_others() -> None:
    assert all(is_loopback(h) for h in ("127.0.0.1", "::1", "localhost", "127.0.0.2"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "10.1.2.3", "viewer.hospital.org"))


@pytest.mark.parametrize(
    ("host", "status"),
    [("127.0.0.1:8000", 200), ("localhost", 200), ("[::1]:8000", 200), ("rebound.attacker.example", 400)],
)
def test_a_request_for_another_host_name_is_refused(client, host, status) -> None:
    """A DNS-rebinding page reaches 127.0.0.1 under its own name: that name is not ours."""
    response = client.get("/v1/model", headers={"Host": host, **bearer(TOKENS[0])})
    assert response.status_code == status
    assert response.headers["x-frame-options"] == "DENY"


# --- headers and docs -----------------------------------------------------------------------------------


def test_every_answer_carries_the_security_headers(client, png) -> None:
    answers = [
        client.get("/healthz"),
        client.get("/v1/model"),  # 401
        client.get("/no/such/page"),  # 404
        client.post("/v1/predict", files={"file": ("a.png", png)}, headers=bearer(TOKENS[1])),
    ]
    for answer in answers:
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["x-frame-options"] == "DENY"
        assert "frame-ancestors 'none'" in answer.headers["content-security-policy"]
        assert answer.headers["referrer-policy"] == "no-referrer"
        assert answer.headers["cache-control"] == "no-store"
        assert "server" not in answer.headers


def test_the_page_may_run_its_own_inline_script_and_nothing_else(client) -> None:
    page = client.get("/")
    policy = dict(part.strip().split(" ", 1) for part in page.headers["content-security-policy"].split(";"))
    script = re.search(r"<script>(.*?)</script>", page.text, re.DOTALL).group(1)
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    assert policy["script-src"] == f"'sha256-{digest}'"
    assert policy["default-src"] == "'none'" and policy["connect-src"] == "'self'"
    assert policy["frame-ancestors"] == "'none'" and "http" not in page.headers["content-security-policy"]


def test_swagger_ui_is_off_unless_asked_for_and_the_schema_is_always_served(predictor) -> None:
    with TestClient(create_app(predictor)) as http:
        assert http.get("/docs").status_code == 404 and http.get("/redoc").status_code == 404
        assert http.get("/openapi.json").status_code == 200
    with TestClient(create_app(predictor, docs=True)) as http:
        docs = http.get("/docs")
    assert docs.status_code == 200 and "swagger-ui" in docs.text
    assert "script-src https://cdn.jsdelivr.net 'sha256-" in docs.headers["content-security-policy"]

"""The web page in a real browser: `mura serve` in a subprocess, Debian Chromium driven by Playwright."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
SCREENSHOT_ENV = "MURA_BROWSER_SCREENSHOT"  # set to a path to keep a screenshot of the page

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium not installed at /usr/bin/chromium"),
]


@pytest.fixture(scope="module")
def server(serve_cli, tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory):
    """`mura serve` as a user starts it, on a free loopback port; yields its base URL."""
    with serve_cli(tiny_checkpoint, tmp_path_factory.mktemp("serve") / "serve.log") as base:
        yield base


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory):
    from playwright.sync_api import sync_playwright

    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile), executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 900},
        )  # fmt: skip
        try:
            yield context
        finally:
            context.close()


def test_page_shows_probability_decision_body_part_and_heatmap(
    server: str, browser, tmp_path: Path, make_radiograph, encode_image
) -> None:
    radiograph = tmp_path / "wrist.png"
    radiograph.write_bytes(encode_image(make_radiograph("WRIST", abnormal=True, seed=5)))
    expected = httpx.post(
        f"{server}/v1/predict", files={"file": ("wrist.png", radiograph.read_bytes())}
    ).json()

    page = browser.new_page()
    page.goto(server + "/")
    page.wait_for_selector("#model:has-text('custom_cnn')")
    page.set_input_files("#file-input", str(radiograph))
    heatmap = page.wait_for_selector("[data-testid=heatmap]", timeout=60_000)
    image = page.wait_for_selector("[data-testid=image]")
    for element in (heatmap, image):
        assert element.evaluate("img => img.complete && img.naturalWidth > 0")
        assert element.is_visible()
    shown = page.inner_text("[data-testid=probability]")
    assert shown == f"{100 * expected['fracture_probability']:.1f}%"
    assert page.inner_text("[data-testid=decision]").lower() == expected["decision"]
    assert page.inner_text("[data-testid=body-part]").upper() == expected["body_part"]
    # image, heatmap and result sit side by side in one row
    boxes = [page.locator(sel).bounding_box() for sel in ("[data-testid=image]", "[data-testid=heatmap]")]
    assert boxes[0]["x"] + boxes[0]["width"] <= boxes[1]["x"] + 1
    if os.environ.get(SCREENSHOT_ENV):
        page.screenshot(path=os.environ[SCREENSHOT_ENV], full_page=True)
    page.close()


def test_page_analyses_several_views_as_one_study(
    server: str, browser, tmp_path: Path, make_radiograph, encode_image
):
    """A cut view is used with its warning shown; a file that is no image is skipped and listed."""
    views = [make_radiograph("ELBOW", abnormal=False, seed=7, view=view) for view in range(2)]
    whole = encode_image(views[1], "JPEG")
    contents = {
        "view0.png": encode_image(views[0]),
        "view1.jpg": whole[: len(whole) // 2],
        "notes.png": b"text",
    }
    paths = []
    for name, data in contents.items():
        (tmp_path / name).write_bytes(data)
        paths.append(str(tmp_path / name))
    page = browser.new_page()
    page.goto(server + "/")
    page.check("#as-study")
    page.set_input_files("#file-input", paths)
    study = page.wait_for_selector("[data-testid=study-card]", timeout=60_000)
    assert "study of 2 views" in study.inner_text()
    assert page.locator("[data-testid=heatmap]").count() == 2
    skipped = page.inner_text("[data-testid=study-card] [data-testid=skipped]")
    assert "notes.png" in skipped and "not a PNG, JPEG or DICOM" in skipped
    assert "truncated JPEG" in page.inner_text("[data-testid=result-card] [data-testid=warnings]")
    page.close()


def test_page_reports_a_refused_file(server: str, browser, tmp_path: Path) -> None:
    fake = tmp_path / "notes.png"
    fake.write_bytes(b"not an image at all")
    page = browser.new_page()
    page.goto(server + "/")
    page.set_input_files("#file-input", str(fake))
    error = page.wait_for_selector("[data-testid=error]", timeout=30_000)
    assert "415" in error.inner_text() and "notes.png" in error.inner_text()
    page.close()


def test_a_protected_server_asks_for_the_token_once_per_tab(
    serve_cli, tiny_checkpoint, browser, tmp_path: Path, make_radiograph, encode_image
) -> None:
    """The token goes in once, lives in the tab's sessionStorage, and appears in no URL and no log line."""
    token = "ward-3-viewer-token-0123456789"
    tokens = tmp_path / "tokens"
    tokens.write_text(token + "\n")
    tokens.chmod(0o600)
    radiograph = tmp_path / "wrist.png"
    radiograph.write_bytes(encode_image(make_radiograph("WRIST", abnormal=True, seed=5)))
    log = tmp_path / "serve.log"
    with serve_cli(tiny_checkpoint, log, "--auth-token-file", str(tokens)) as base:
        page = browser.new_page()
        refused = []  # anything the Content-Security-Policy blocked
        page.on(
            "console",
            lambda message: refused.append(message.text) if "Security Policy" in message.text else None,
        )
        page.goto(base + "/")
        page.wait_for_selector("#token-form", state="visible")
        page.fill("#token-input", token)
        page.click("#token-form button")
        page.wait_for_selector("#model:has-text('custom_cnn')")
        assert page.is_hidden("#token-form")
        page.set_input_files("#file-input", str(radiograph))
        page.wait_for_selector("[data-testid=heatmap]", timeout=60_000)
        assert page.inner_text("[data-testid=probability]").endswith("%")
        page.reload()  # the same tab keeps the token
        page.wait_for_selector("#model:has-text('custom_cnn')")
        assert page.is_hidden("#token-form") and token not in page.url
        assert page.evaluate("sessionStorage.getItem('mura-token')") == token
        page.close()
    assert not refused, refused
    served = log.read_text()
    assert "POST /v1/predict" in served and "/v1/model" in served and token not in served

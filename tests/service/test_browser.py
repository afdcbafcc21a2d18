"""The web page in a real browser: `mura serve` in a subprocess, Debian Chromium driven by Playwright.

The page is a reading aid: a FracAtlas film in a large viewer (zoom, pan, window/level, the overlay
over the film), the tier in words with what it was validated at, the DICOM patient above the film and
the model card one click away. Set MURA_BROWSER_SCREENSHOTS to a folder to keep screenshots.
"""

from __future__ import annotations

import base64
import io
import os
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from mura.checkpoint import update_checkpoint
from mura.decision import Decision, PointFigures

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
SCREENSHOTS_ENV = "MURA_BROWSER_SCREENSHOTS"
PATIENT = {"PatientName": "DOE^JANE^Q", "PatientID": "MRN-55501", "AccessionNumber": "ACC-0042"}

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium not installed at /usr/bin/chromium"),
]


def screenshot(page, name: str) -> None:
    if os.environ.get(SCREENSHOTS_ENV):
        page.screenshot(path=str(Path(os.environ[SCREENSHOTS_ENV]) / name), full_page=True)


@pytest.fixture(scope="module")
def fracture_model(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model labelled as a FracAtlas run leaves it: fracture labels, its regions' parts, and the
    figures of both operating points (test numbers, not a real validation)."""
    decision = Decision(
        thresholds={"default": 0.5, "suspicious": 0.3, "definite": 0.7},
        fitted_on="out-of-fold predictions of 5-fold cross-validation (2826 images)",
        figures={
            "suspicious": PointFigures(640, 1100, 900, 50),
            "definite": PointFigures(300, 60, 1940, 390),
        },
    )
    parts = ("ELBOW", "FINGER", "FOREARM", "HAND", "WRIST", "LEG", "KNEE", "ANKLE", "FOOT", "FEMUR", "HIP")
    out = tmp_path_factory.mktemp("fracture-model") / "fracatlas.pt"
    return update_checkpoint(
        tiny_checkpoint, out, decision=decision, positive_class="fracture", scope_parts=parts
    )


@pytest.fixture(scope="module")
def serve_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("serve") / "serve.log"


@pytest.fixture(scope="module")
def server(serve_cli, fracture_model: Path, serve_log: Path):
    """`mura serve` as a user starts it, on a free loopback port; yields its base URL."""
    with serve_cli(fracture_model, serve_log) as base:
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


@pytest.fixture(scope="module")
def film(server: str, fracatlas_dir: Path) -> tuple[Path, dict]:
    """A fractured FracAtlas film the model flags, whose Grad-CAM is not blank, with its answer."""
    for path in sorted((fracatlas_dir / "images" / "Fractured").glob("*.jpg"))[:12]:
        answer = httpx.post(
            f"{server}/v1/predict?cam=true", files={"file": (path.name, path.read_bytes())}, timeout=60
        ).json()
        heatmap = np.asarray(Image.open(io.BytesIO(base64.b64decode(answer.get("heatmap_png") or ""))))
        flagged = answer["decision"] != "not_assessed" and answer["tier"] != "no_fracture_seen"
        if flagged and heatmap.max() > 200 and heatmap.mean() > 10:
            return path, answer
    pytest.fail("no FracAtlas film among the first 12 has a visible heatmap")


def open_film(browser, server: str, path: Path):
    page = browser.new_page()
    page.goto(server + "/")
    page.wait_for_selector("#model:has-text('custom_cnn')")
    page.set_input_files("#file-input", str(path))
    page.wait_for_selector("[data-testid=viewer][data-ready=true]", timeout=60_000)
    return page


def next_frame(page) -> None:
    """Let the viewer draw what was asked of it (it draws, and updates its state, once per frame)."""
    page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")


def viewer_state(page) -> dict[str, str]:
    next_frame(page)
    return page.eval_on_selector("[data-testid=viewer]", "node => ({...node.dataset})")


def pan_of(page) -> tuple[float, float]:
    """Where the film's top-left corner is on the canvas, in CSS pixels."""
    x, y = viewer_state(page)["pan"].split(",")
    return float(x), float(y)


def canvas_rgb(page, points: list[tuple[float, float]]) -> np.ndarray:
    """RGB of the film canvas at CSS-pixel points."""
    script = """([points]) => {
      const canvas = document.querySelector("[data-testid=film]"), ctx = canvas.getContext("2d");
      const k = canvas.width / canvas.clientWidth;
      const at = ([x, y]) => ctx.getImageData(Math.round(x * k), Math.round(y * k), 1, 1).data;
      return points.map(point => Array.from(at(point).slice(0, 3)));
    }"""
    next_frame(page)
    return np.array(page.evaluate(script, [points]), dtype=float)


def film_grid(page) -> list[tuple[float, float]]:
    box = page.locator("[data-testid=film]").bounding_box()
    return [(box["width"] * i / 8, box["height"] * j / 8) for i in range(2, 7) for j in range(2, 7)]


def test_the_page_reads_a_fracatlas_film_with_its_tier_in_words(server: str, browser, film) -> None:
    path, expected = film
    page = open_film(browser, server, path)
    assert page.inner_text("[data-testid=tier]") == expected["tier_text"]
    figures = page.inner_text("[data-testid=tier-figures]")
    point = expected["tier_figures"]["operating_point"]
    assert point in figures and f"{100 * expected['tier_figures']['sensitivity']:.1f}%" in figures
    assert page.inner_text("[data-testid=probability]") == f"{100 * expected['fracture_probability']:.1f}%"
    assert page.inner_text("[data-testid=decision]").lower() == expected["decision"]
    shown_part = "not recognised" if expected["body_part"] == "UNKNOWN" else expected["body_part"].lower()
    assert page.inner_text("[data-testid=body-part]") == shown_part
    stage = page.locator("[data-testid=film]").bounding_box()
    assert stage["width"] > 750 and stage["height"] > 600  # a large view, not a thumbnail
    assert viewer_state(page)["overlay"] == "on"
    screenshot(page, "page.png")
    page.close()


def test_the_viewer_zooms_pans_windows_and_toggles_the_overlay(server: str, browser, film) -> None:
    page = open_film(browser, server, film[0])
    grid = film_grid(page)
    assert viewer_state(page)["zoom"] == "1.000"
    with_overlay = canvas_rgb(page, grid)
    page.click("[data-testid=overlay]")
    plain = canvas_rgb(page, grid)
    assert viewer_state(page)["overlay"] == "off"
    assert np.abs(with_overlay - plain).max() > 40  # the heatmap was drawn over the film
    assert np.abs(plain[:, 0] - plain[:, 2]).max() <= 1  # and without it the film is grey again
    page.click("[data-testid=overlay]")
    page.fill("[data-testid=opacity]", "100")
    assert np.abs(canvas_rgb(page, grid) - plain).sum() > np.abs(with_overlay - plain).sum()
    page.click("[data-testid=overlay]")

    page.click("[data-testid=zoom-in]")
    page.click("[data-testid=zoom-in]")
    assert viewer_state(page)["zoom"] == "1.563"
    stage = page.locator("[data-testid=film]").bounding_box()
    centre = (stage["x"] + stage["width"] / 2, stage["y"] + stage["height"] / 2)
    page.mouse.move(*centre)
    page.mouse.wheel(0, -400)
    page.wait_for_function("document.querySelector('[data-testid=viewer]').dataset.zoom > 2.5")
    zoomed = canvas_rgb(page, grid)
    assert np.abs(zoomed - plain).mean() > 2  # the picture changed, not only a number

    pan = pan_of(page)
    page.mouse.move(*centre)
    page.mouse.down()
    page.mouse.move(centre[0] + 120, centre[1] + 60, steps=5)
    page.mouse.up()
    assert pan_of(page) == pytest.approx((pan[0] + 120, pan[1] + 60))

    before = canvas_rgb(page, grid)
    level = int(np.median(before[:, 0]))  # centre a narrow window on what the view shows
    page.keyboard.down("Shift")  # shift+drag: left narrows the window, up lowers the level
    page.mouse.move(*centre)
    page.mouse.down()
    page.mouse.move(centre[0] - 175, centre[1] + level - 128, steps=5)
    page.mouse.up()
    page.keyboard.up("Shift")
    state = viewer_state(page)
    assert (state["window"], state["level"]) == ("80", str(level))
    assert page.input_value("[data-testid=window]") == "80"
    windowed = canvas_rgb(page, grid)
    assert windowed.std() > before.std()  # a narrower window stretches the contrast
    page.click("[data-testid=overlay]")
    page.fill("[data-testid=opacity]", "45")
    screenshot(page, "viewer_zoomed_windowed_overlay.png")

    page.click("[data-testid=reset]")
    state = viewer_state(page)
    assert (state["zoom"], state["window"], state["level"]) == ("1.000", "255", "128")
    assert np.abs(canvas_rgb(page, grid) - with_overlay).max() <= 2
    page.close()


def yellow_along_top_edge(page, box: list[float]) -> np.ndarray:
    """Whether the canvas is a finding's yellow at 51 points along the top side of `box` (film pixels)."""
    state = viewer_state(page)
    scale, (x, y) = float(state["scale"]), pan_of(page)
    left, right, top = x + box[0] * scale, x + box[2] * scale, y + box[1] * scale - 0.5
    rgb = canvas_rgb(page, [(left + (right - left) * i / 60, top) for i in range(5, 56)])
    return (rgb[:, 0] > 180) & (rgb[:, 1] > 150) & (rgb[:, 2] < 100)


def test_findings_are_boxes_over_the_film_dotted_when_suspicious(server: str, browser, film) -> None:
    """How each operating point is drawn: the page is given the film's answer with one box of each."""
    path, answer = film
    width, height = answer["image_size"]
    boxes = {"suspicious": [0.1 * width, 0.2 * height, 0.45 * width, 0.5 * height],
             "definite": [0.55 * width, 0.55 * height, 0.9 * width, 0.85 * height]}  # fmt: skip
    page = browser.new_page()
    findings = [{"box": box, "score": 0.8, "operating_point": op} for op, box in boxes.items()]
    page.route("**/v1/predict", lambda route: route.fulfill(json={**answer, "findings": findings}))
    page.goto(server + "/")
    page.set_input_files("#file-input", str(path))
    page.wait_for_selector("[data-testid=viewer][data-ready=true]", timeout=60_000)
    page.fill("[data-testid=opacity]", "0")  # the heatmap vanishes; the boxes stay readable
    assert yellow_along_top_edge(page, boxes["definite"]).all()
    assert 0.3 < yellow_along_top_edge(page, boxes["suspicious"]).mean() < 0.9
    screenshot(page, "findings.png")
    page.close()


@pytest.fixture(scope="module")
def map_server(serve_cli, make_checkpoint, tmp_path_factory: pytest.TempPathFactory):
    """`mura serve` with a model whose map head boxes every film's central cells, graded so that box is
    `definite` (`tests.factories.checkpoints.mark_central_cells`)."""
    checkpoint = make_checkpoint(
        "central.pt", "custom_cnn", 32, threshold={"suspicious": 0.01, "definite": 0.02}, central_map=True
    )
    with serve_cli(checkpoint, tmp_path_factory.mktemp("serve-map") / "serve.log") as base:
        yield base


def test_a_map_heads_finding_is_drawn_on_the_film_from_the_real_answer(
    map_server: str, browser, fracatlas_dir: Path
) -> None:
    path = sorted((fracatlas_dir / "images" / "Fractured").glob("*.jpg"))[0]
    answer = httpx.post(
        f"{map_server}/v1/predict", files={"file": (path.name, path.read_bytes())}, timeout=60
    )
    (finding,) = answer.json()["findings"]
    assert finding["operating_point"] == "definite"
    page = open_film(browser, map_server, path)  # the page's own request: nothing routed
    page.fill("[data-testid=opacity]", "0")
    assert yellow_along_top_edge(page, finding["box"]).all()  # solid, where the answer put it
    screenshot(page, "map_finding.png")
    page.close()


def test_the_model_card_is_one_click_away(server: str, browser) -> None:
    page = browser.new_page()
    page.goto(server + "/")
    page.wait_for_selector("#model:has-text('custom_cnn')")
    assert not page.is_visible("[data-testid=model-card]")
    page.click("[data-testid=model-card-button]")
    card = page.inner_text("[data-testid=model-card]")
    assert "not a medical device" in card and "Intended use" in card
    assert "fractures" in page.inner_text("[data-testid=intended-use]")
    assert "Possible fracture" in card and "suspicious" in card and "out-of-fold" in card
    assert "43.5%" in card and "97.0%" in card  # definite's sensitivity and specificity, from its counts
    screenshot(page, "model_card.png")
    page.click("#model-card-close")
    assert not page.is_visible("[data-testid=model-card]")
    page.close()


def test_a_dicom_names_its_patient_above_the_film_and_the_log_does_not(
    server: str, browser, serve_log: Path, tmp_path: Path, make_dicom, make_radiograph
) -> None:
    upload = tmp_path / "wrist.dcm"
    upload.write_bytes(
        make_dicom(make_radiograph("WRIST", abnormal=True, seed=5), StudyDate="20240131", **PATIENT)
    )
    page = open_film(browser, server, upload)
    identity = page.inner_text("[data-testid=identity]")
    assert identity.startswith("DOE, JANE Q")
    assert "ID MRN-55501" in identity and "accession ACC-0042" in identity and "2024-01-31" in identity
    # a heatmap always has a hot spot: over "no fracture seen" it starts hidden, else shown
    nothing_seen = page.inner_text("[data-testid=tier]") == "No fracture seen"
    assert viewer_state(page)["overlay"] == ("off" if nothing_seen else "on")
    screenshot(page, "dicom_identity.png")
    page.close()
    logged = serve_log.read_text()
    assert "POST /v1/predict" in logged
    assert not [value for value in (*PATIENT.values(), "DOE", "JANE") if value in logged]


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
    page.wait_for_function("document.querySelectorAll('[data-testid=viewer][data-ready=true]').length === 2")
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
        page.wait_for_selector("[data-testid=viewer][data-ready=true]", timeout=60_000)
        assert page.inner_text("[data-testid=probability]").endswith("%")
        page.click("[data-testid=model-card-button]")  # the card, fetched with the token, opens
        assert "not a medical device" in page.inner_text("[data-testid=model-card]")
        page.reload()  # the same tab keeps the token
        page.wait_for_selector("#model:has-text('custom_cnn')")
        assert page.is_hidden("#token-form") and token not in page.url
        assert page.evaluate("sessionStorage.getItem('mura-token')") == token
        page.close()
    assert not refused, refused
    served = log.read_text()
    assert "POST /v1/predict" in served and "/v1/model" in served and token not in served

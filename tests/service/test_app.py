"""The HTTP API through the app's test client, with a real (tiny, random) model behind it."""

from __future__ import annotations

import asyncio
import base64
import io
import logging
import tempfile
import threading
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from mura.constants import BODY_PARTS, body_part_index
from mura.inference.predictor import Predictor
from mura.prediction import Prediction, StudyPrediction
from mura.service.app import create_app
from mura.service.loading import make_explainer
from mura.service.model_card import model_card
from tests.factories.dicom import dicom_bytes, dicom_dataset, twelve_bit

MAX_UPLOAD = 3 * 1024 * 1024
MAX_PIXELS = 2_000_000


@pytest.fixture(scope="module")
def predictor(tiny_checkpoint: Path) -> Predictor:
    return Predictor.from_checkpoints([tiny_checkpoint], device="cpu", runtime="torch")


@pytest.fixture(scope="module")
def client(predictor: Predictor) -> TestClient:
    app = create_app(
        predictor,
        explainer=make_explainer(predictor),
        model_info=model_card(predictor),
        max_upload_bytes=MAX_UPLOAD,
        max_pixels=MAX_PIXELS,
    )
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def wrist(make_radiograph) -> np.ndarray:
    return make_radiograph("WRIST", abnormal=True)


def post_one(client: TestClient, name: str, data: bytes, **fields: str) -> httpx.Response:
    return client.post("/v1/predict", files={"file": (name, data, "application/octet-stream")}, data=fields)


def png_from_base64(text: str) -> np.ndarray:
    with Image.open(io.BytesIO(base64.b64decode(text))) as image:
        assert image.format == "PNG"
        return np.asarray(image)


def assert_error(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == code and body["detail"]
    return body


# --- answers --------------------------------------------------------------------------------------------


def test_predict_png_matches_the_predictor_and_mura_predict_fields(
    client, predictor, wrist, encode_image
) -> None:
    response = post_one(client, "wrist.png", encode_image(wrist))
    assert response.status_code == 200
    body = response.json()
    batch = predictor.predict_images([wrist], [-1])
    expected = batch.prediction(0, predictor.identity, path="wrist.png").model_dump(mode="json")
    for key, value in expected.items():
        assert body[key] == (pytest.approx(value) if isinstance(value, float | dict) else value), key
    assert body["body_part_origin"] == "predicted" and body["body_part"] in BODY_PARTS
    assert Prediction.model_validate(body)
    assert body["threshold"] == pytest.approx(0.47)  # tiny_checkpoint's "youden"
    assert body["decision"] == ("abnormal" if body["fracture_probability"] >= body["threshold"] else "normal")
    assert sum(body["body_part_probabilities"].values()) == pytest.approx(1.0)
    assert "image_png" not in body and "heatmap_png" not in body and body["path"] == "wrist.png"


def test_given_body_part_feeds_the_fracture_head(client, predictor, wrist, encode_image) -> None:
    body = post_one(client, "wrist.jpg", encode_image(wrist, "JPEG"), body_part="elbow").json()
    assert body["body_part"] == "ELBOW" and body["body_part_origin"] == "given"
    decoded = np.asarray(Image.open(io.BytesIO(encode_image(wrist, "JPEG"))).convert("L"))
    expected = predictor.predict_images([decoded], [body_part_index("ELBOW")]).fracture_prob[0]
    assert body["fracture_probability"] == pytest.approx(expected, abs=1e-6)


def test_dicom_body_part_comes_from_its_tags(client, wrist, make_dicom) -> None:
    body = post_one(client, "image.dcm", make_dicom(wrist, body_part="HAND")).json()
    assert body["body_part"] == "HAND" and body["body_part_origin"] == "dicom"


def test_a_dicom_without_its_preamble_is_read_like_the_cli_reads_it(client, wrist) -> None:
    bare = dicom_bytes(dicom_dataset(twelve_bit(wrist), body_part="ELBOW"), preamble=False)
    response = post_one(client, "bare.dcm", bare)
    assert response.status_code == 200, response.text
    assert response.json()["body_part"] == "ELBOW" and response.json()["body_part_origin"] == "dicom"


def test_cam_returns_the_film_and_its_heatmap_as_separate_grey_layers(
    client, predictor, wrist, encode_image
) -> None:
    """The film as the model read it (the viewer zooms into its pixels) and a heatmap the page colours."""
    response = client.post(
        "/v1/predict?cam=true",
        files={"file": ("wrist.png", encode_image(wrist))},
        data={"body_part": "WRIST"},
    )
    assert response.status_code == 200
    body = response.json()
    film, heatmap = png_from_base64(body["image_png"]), png_from_base64(body["heatmap_png"])
    np.testing.assert_array_equal(film, wrist)
    h, w = wrist.shape
    assert body["image_size"] == [w, h]
    expected = make_explainer(predictor).heatmap(wrist, body_part_index("WRIST"))
    assert heatmap.shape == (h, w)  # under 512 px: the film's own size
    np.testing.assert_allclose(heatmap, np.round(expected * 255), atol=1)


def test_study_probability_is_the_mean_of_its_views(client, encode_image, make_radiograph) -> None:
    views = [make_radiograph("ELBOW", abnormal=False, seed=3, view=v) for v in range(3)]
    files = [("files", (f"view{v}.png", encode_image(img))) for v, img in enumerate(views)]
    response = client.post("/v1/predict/study", files=files)
    assert response.status_code == 200
    study = response.json()
    assert study["views"] == 3 and len(study["images"]) == 3
    assert [r["path"] for r in study["images"]] == ["view0.png", "view1.png", "view2.png"]
    mean = np.mean([r["fracture_probability"] for r in study["images"]])
    assert study["fracture_probability"] == pytest.approx(mean)
    assert study["decision"] == ("abnormal" if mean >= study["threshold"] else "normal")
    assert study["body_part"] in BODY_PARTS and study["body_part_origin"] == "predicted"
    summary = {k: v for k, v in study.items() if k not in ("images", "skipped")}
    assert StudyPrediction.model_validate(summary).kind == "study"  # the one typed record, as the CLI writes


def test_study_skips_bad_views_and_lists_them(client, encode_image, make_radiograph) -> None:
    """As `mura predict --study` does: the study is the mean of the views that could be used."""
    views = [make_radiograph("HAND", abnormal=True, seed=5, view=v) for v in range(2)]
    files = [
        ("files", ("view0.png", encode_image(views[0]))),
        ("files", ("notes.txt", b"not an image at all, whatever the name says")),
        ("files", ("view1.jpg", encode_image(views[1], "JPEG"))),
        ("files", ("tiny.png", encode_image(np.full((8, 8), 99, np.uint8)))),
    ]
    response = client.post("/v1/predict/study", files=files)
    assert response.status_code == 200, response.text
    study = response.json()
    assert study["views"] == 2 and study["views_failed"] == 2
    assert [r["path"] for r in study["images"]] == ["view0.png", "view1.jpg"]
    mean = np.mean([r["fracture_probability"] for r in study["images"]])
    assert study["fracture_probability"] == pytest.approx(mean)
    skipped = {view["filename"]: view for view in study["skipped"]}
    assert set(skipped) == {"notes.txt", "tiny.png"}
    assert skipped["notes.txt"]["error"] == "unsupported_media_type"
    assert skipped["tiny.png"]["error"] == "undecodable_image" and "8x8 px" in skipped["tiny.png"]["detail"]


def test_study_of_only_bad_views_is_422_with_the_list(client, encode_image) -> None:
    files = [
        ("files", ("a.txt", b"plain text" * 20)),
        ("files", ("b.png", b"\x89PNG\r\n\x1a\n" + bytes(300))),
    ]
    body = assert_error(client.post("/v1/predict/study", files=files), 422, "no_usable_view")
    assert [(v["filename"], v["error"]) for v in body["skipped"]] == [
        ("a.txt", "unsupported_media_type"),
        ("b.png", "undecodable_image"),
    ]


def test_a_cut_jpeg_is_answered_with_its_warning(client, wrist, encode_image) -> None:
    whole = encode_image(wrist, "JPEG")
    good = post_one(client, "whole.jpg", whole).json()
    assert good["warnings"] == []
    response = post_one(client, "half.jpg", whole[: len(whole) // 2])
    assert response.status_code == 200, response.text
    (warning,) = response.json()["warnings"]
    assert warning.startswith("truncated JPEG:") and "rows decoded" in warning
    study = client.post("/v1/predict/study", files=[("files", ("half.jpg", whole[: len(whole) // 2]))]).json()
    assert study["images"][0]["warnings"] == [warning]


def test_an_image_too_small_to_judge_is_refused(client, encode_image) -> None:
    body = assert_error(
        post_one(client, "dot.png", encode_image(np.full((1, 1), 200, np.uint8))), 422, "undecodable_image"
    )
    assert body["detail"] == "dot.png: image is 1x1 px, smaller than the minimum 32x32"


def test_every_refusal_is_documented_with_its_body(client) -> None:
    schema = client.get("/openapi.json").json()
    for path in ("/v1/predict", "/v1/predict/study"):
        responses = schema["paths"][path]["post"]["responses"]
        assert {"200", "400", "408", "413", "415", "422", "503"} <= set(responses), path
        for status in ("400", "408", "413", "415", "422", "503"):
            assert "$ref" in str(responses[status]["content"]["application/json"]["schema"])
    study_files = schema["paths"]["/v1/predict/study"]["post"]["requestBody"]["content"][
        "multipart/form-data"
    ]
    assert study_files["schema"]["properties"]["files"]["minItems"] == 1
    assert "files" in study_files["schema"]["required"]


def test_model_description_comes_from_the_checkpoint(client, tiny_checkpoint) -> None:
    info = client.get("/v1/model").json()
    assert info["architecture"] == "custom_cnn" and info["ensemble_size"] == 1
    assert info["threshold"] == pytest.approx(0.47)
    member = info["members"][0]
    assert member["checkpoint"] == tiny_checkpoint.name and str(tiny_checkpoint.parent) not in str(info)
    assert member["val_metrics"]["auc"] == pytest.approx(0.61) and member["epochs_trained"] == 3
    assert member["test_metrics"]["image"]["default"]["roc_auc"] == pytest.approx(0.58)
    assert member["preprocessing"]["size"] == 32


def test_health_page_and_openapi_docs(client) -> None:
    assert client.get("/healthz").json()["status"] == "ok"
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert 'type="file"' in page.text and "/v1/predict" in page.text
    schema = client.get("/openapi.json").json()
    assert {"/v1/predict", "/v1/predict/study", "/v1/model", "/healthz"} <= set(schema["paths"])
    body = schema["paths"]["/v1/predict"]["post"]["requestBody"]["content"]["multipart/form-data"]
    assert "file" in body["schema"]["properties"]


# --- refusals -------------------------------------------------------------------------------------------


def test_413_when_content_length_announces_too_much(client) -> None:
    assert_error(
        post_one(client, "big.png", b"\x89PNG\r\n\x1a\n" + bytes(MAX_UPLOAD)), 413, "payload_too_large"
    )


def test_413_enforced_while_reading_a_chunked_body(client, encode_image) -> None:
    """No Content-Length to trust: the limit must still stop the read."""
    boundary = "xyzzy"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n\r\n'
    ).encode() + b"\x89PNG\r\n\x1a\n"

    def body():
        yield head
        for _ in range(8):
            yield bytes(1024 * 1024)
        yield f"\r\n--{boundary}--\r\n".encode()

    response = client.post(
        "/v1/predict", content=body(), headers={"content-type": f"multipart/form-data; boundary={boundary}"}
    )
    assert "content-length" not in response.request.headers
    assert_error(response, 413, "payload_too_large")


@pytest.mark.parametrize(
    "name, data",
    [
        ("notes.png", b"this is text, whatever the name says" * 4),
        ("anim.gif", b"GIF89a" + bytes(200)),
        ("scan.dcm", bytes(128) + b"NOPE" + bytes(64)),
    ],
)
def test_415_by_content_not_by_name(client, name, data) -> None:
    assert_error(post_one(client, name, data), 415, "unsupported_media_type")


def test_415_when_not_multipart(client) -> None:
    response = client.post("/v1/predict", content=b"\x89PNG", headers={"content-type": "image/png"})
    assert_error(response, 415, "unsupported_media_type")


def test_422_undecodable_image(client, wrist, encode_image, make_dicom) -> None:
    assert_error(post_one(client, "broken.png", b"\x89PNG\r\n\x1a\n" + bytes(300)), 422, "undecodable_image")
    assert_error(post_one(client, "cut.jpg", encode_image(wrist, "JPEG")[:40]), 422, "undecodable_image")
    no_pixels = make_dicom(wrist)
    body = post_one(client, "empty.dcm", no_pixels[: len(no_pixels) - wrist.size * 2 - 12])
    assert_error(body, 422, "undecodable_image")


def test_422_decompression_bomb_is_refused_before_decoding(client, encode_image, make_dicom) -> None:
    bomb = encode_image(np.zeros((3000, 3000), np.uint8))  # 9 MP of zeros: a few kB on the wire
    assert len(bomb) < 100_000
    detail = assert_error(post_one(client, "bomb.png", bomb), 422, "image_too_large")["detail"]
    assert "bomb.png" in detail and "9000000" in detail
    liar = make_dicom(np.zeros((8, 8), np.uint8), rows_cols=(40_000, 40_000))
    assert_error(post_one(client, "liar.dcm", liar), 422, "image_too_large")


def test_400_for_bad_parameters(client, wrist, encode_image) -> None:
    data = encode_image(wrist)
    assert_error(post_one(client, "a.png", data, body_part="knee"), 400, "bad_request")
    assert_error(post_one(client, "a.png", data, cam="maybe"), 400, "bad_request")
    assert_error(client.post("/v1/predict", files={"body_part": (None, "WRIST")}), 400, "bad_request")
    two = [("file", ("a.png", data)), ("file", ("b.png", data))]
    assert_error(client.post("/v1/predict", files=two), 400, "bad_request")


def test_server_keeps_serving_after_bad_requests(client, wrist, encode_image) -> None:
    for name, data in [("x.png", b"junk"), ("y.png", b"\x89PNG\r\n\x1a\n"), ("z.dcm", bytes(132))]:
        assert post_one(client, name, data).status_code in (415, 422)
    assert post_one(client, "ok.png", encode_image(wrist)).status_code == 200
    assert client.get("/healthz").json()["in_flight"] == 0


class HeldPredictor:
    """The real predictor, made to wait for the test's signal so the queue can be filled on purpose."""

    def __init__(self, inner: Predictor) -> None:
        self.inner = inner
        self.threshold, self.identity = inner.threshold, inner.identity
        self.threshold_name, self.members = inner.threshold_name, inner.members
        self.body_parts = inner.body_parts
        self.entered = threading.Event()
        self.release = threading.Event()

    def predict_images(self, images, body_parts):
        self.entered.set()
        assert self.release.wait(30)
        return self.inner.predict_images(images, body_parts)


def test_503_with_retry_after_when_every_slot_is_taken(predictor, wrist, encode_image) -> None:
    held = HeldPredictor(predictor)
    app = create_app(held, workers=1, max_queue=1)
    engine = app.state.engine
    data = encode_image(wrist)

    async def scenario():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            post = lambda: http.post("/v1/predict", files={"file": ("a.png", data)})  # noqa: E731
            running = asyncio.create_task(post())
            while not held.entered.is_set():
                await asyncio.sleep(0.01)
            queued = asyncio.create_task(post())
            while engine.admitted < 2:
                await asyncio.sleep(0.01)
            refused = await post()
            health = await http.get("/healthz")
            held.release.set()
            return refused, health, await running, await queued

    refused, health, first, second = asyncio.run(scenario())
    assert_error(refused, 503, "busy")
    assert int(refused.headers["retry-after"]) >= 1
    assert health.status_code == 200 and health.json()["in_flight"] == 2  # the loop stayed responsive
    assert first.status_code == 200 and second.status_code == 200
    assert first.json()["fracture_probability"] == pytest.approx(second.json()["fracture_probability"])
    assert engine.admitted == 0


def test_uploads_are_neither_written_to_disk_nor_logged(
    client, wrist, tmp_path, monkeypatch, caplog, encode_image
) -> None:
    """Bigger than Starlette's 1 MB spooling threshold, so a spooled temp file would be made if any."""
    noisy = np.random.default_rng(0).integers(0, 256, (1100, 1100), dtype=np.uint8)
    data = encode_image(noisy)
    assert 1024 * 1024 < len(data) < MAX_UPLOAD
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.chdir(scratch)
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))

    def refuse(*args, **kwargs):
        raise AssertionError("an upload was about to be written to a temporary file")

    for name in ("SpooledTemporaryFile", "NamedTemporaryFile", "TemporaryFile", "mkstemp", "mkdtemp"):
        monkeypatch.setattr(tempfile, name, refuse)
    caplog.set_level(logging.DEBUG)
    marker = "patient-jane-doe-1234.png"
    response = client.post("/v1/predict?cam=true", files={"file": (marker, data)})
    assert response.status_code == 200
    assert list(scratch.iterdir()) == []
    assert all(marker not in record.getMessage() for record in caplog.records)


class FailingPredictor:
    """A model that breaks with a message quoting what it was given (as real exceptions can)."""

    threshold, threshold_name, members, body_parts = 0.5, "default", (), ("HAND",)

    def predict_images(self, images, body_parts):
        raise RuntimeError("failed on patient-jane-doe-1234")


def test_a_failure_in_model_work_is_500_and_one_log_line_without_its_message(
    wrist, encode_image, caplog
) -> None:
    caplog.set_level(logging.INFO)
    with TestClient(create_app(FailingPredictor())) as http:  # re-raised exceptions would raise here
        assert_error(post_one(http, "a.png", encode_image(wrist)), 500, "internal_error")
        assert http.get("/healthz").json()["in_flight"] == 0
    errors = [record for record in caplog.records if record.levelno >= logging.ERROR]
    assert len(errors) == 1 and not errors[0].exc_info
    message = errors[0].getMessage()
    assert message.startswith("prediction failed with RuntimeError at ") and "jane" not in message


def test_grad_cam_gets_the_model_to_itself() -> None:
    """CAM hooks the shared model: it must wait for running predictions and block new ones."""
    from mura.service.engine import ModelGate

    gate = ModelGate()
    cam_inside = threading.Event()

    def cam() -> None:
        with gate.exclusive():
            cam_inside.set()

    with gate.shared():
        writer = threading.Thread(target=cam)
        writer.start()
        assert not cam_inside.wait(0.2)  # a prediction is running: the CAM waits
    assert cam_inside.wait(10)
    writer.join()
    with gate.shared():  # and the gate is free again afterwards
        pass

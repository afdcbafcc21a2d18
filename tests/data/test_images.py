"""Decoding every kind of file real data sets contain, to the same 8-bit grey pixels."""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from mura.data import images
from mura.data.images import load_grayscale
from mura.errors import ImageDecodeError, MuraError
from mura.preprocessing import resize_image


def _gradient(h: int = 40, w: int = 60) -> np.ndarray:
    return (np.arange(h * w, dtype=np.float64).reshape(h, w) / (h * w - 1) * 255).astype(np.uint8)


def test_png_grey_roundtrip_from_path_and_bytes(tmp_path: Path) -> None:
    grey = _gradient()
    Image.fromarray(grey).save(tmp_path / "a.png")
    assert np.array_equal(load_grayscale(tmp_path / "a.png"), grey)
    assert np.array_equal(load_grayscale((tmp_path / "a.png").read_bytes()), grey)


def test_16bit_png_scaled_by_its_actual_range(tmp_path: Path) -> None:
    twelve_bit = _gradient().astype(np.uint16) * 16  # 0..4080: a 12-bit detector in a 16-bit file
    Image.fromarray(twelve_bit).save(tmp_path / "deep.png")
    out = load_grayscale(tmp_path / "deep.png")
    assert out.dtype == np.uint8 and out.shape == twelve_bit.shape
    assert out.min() == 0 and out.max() == 255  # not 4080/257 = 15, a black image
    assert np.abs(out.astype(int) - _gradient().astype(int)).max() <= 1


def test_rgb_rgba_and_palette_become_grey(tmp_path: Path) -> None:
    grey = _gradient()
    Image.fromarray(np.stack([grey] * 3, -1)).save(tmp_path / "rgb.png")
    assert np.abs(load_grayscale(tmp_path / "rgb.png").astype(int) - grey).max() <= 1
    rgba = np.dstack([grey, grey, grey, np.full_like(grey, 255)])
    rgba[:, :10, 3] = 0  # transparent strip -> black
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "rgba.png")
    out = load_grayscale(tmp_path / "rgba.png")
    assert out[:, :10].max() == 0 and np.abs(out[:, 10:].astype(int) - grey[:, 10:]).max() <= 1
    Image.fromarray(grey).convert("P", palette=Image.ADAPTIVE, colors=256).save(tmp_path / "p.png")
    assert np.abs(load_grayscale(tmp_path / "p.png").astype(int) - grey).mean() < 3


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    grey = _gradient(40, 64)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to view"
    Image.fromarray(grey).save(tmp_path / "rot.jpg", exif=exif, quality=95)
    out = load_grayscale(tmp_path / "rot.jpg")
    assert out.shape == (64, 40)
    expected = np.rot90(grey, k=-1)
    assert np.abs(out.astype(int) - expected.astype(int)).mean() < 4


def _jpeg(image: np.ndarray, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", **options)
    return buffer.getvalue()


def _rows(warning: str) -> tuple[int, int]:
    decoded, total = re.search(r"(\d+) of (\d+) rows decoded", warning).groups()
    return int(decoded), int(total)


FRACATLAS_CUT = "Non_fractured/IMG0004028.jpg"  # one of the 49 files that end without an end marker


def test_half_a_real_jpeg_decodes_with_a_warning_that_says_how_much(
    fracatlas_dir: Path, tmp_path: Path
) -> None:
    whole = fracatlas_dir / "images" / "Fractured" / "IMG0000019.jpg"
    data = whole.read_bytes()
    (tmp_path / "half.jpg").write_bytes(data[: len(data) // 2])
    complete, half = images.read_image(whole), images.read_image(tmp_path / "half.jpg")
    assert complete.warnings == ()
    assert len(half.warnings) == 1 and half.warnings[0].startswith("truncated JPEG:")
    decoded, total = _rows(half.warnings[0])
    assert total == complete.pixels.shape[0] and 0.3 * total < decoded < 0.8 * total
    assert np.array_equal(half.pixels[:decoded], complete.pixels[:decoded])  # the rows it counts are real
    assert (half.pixels[decoded + 16 :] == 128).all()  # past the cut's block row: grey filler
    assert np.array_equal(images.load_grayscale(tmp_path / "half.jpg"), half.pixels)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False  # PIL's process-wide switch is never turned on


def test_fracatlas_files_without_end_marker_are_cut_short_and_flagged(fracatlas_dir: Path) -> None:
    """They lack more than the marker: PIL's tolerant decode paints their last rows grey."""
    path = fracatlas_dir / "images" / FRACATLAS_CUT
    assert not path.read_bytes().endswith(b"\xff\xd9")
    decoded = images.read_image(path)
    rows, total = _rows(decoded.warnings[0])
    assert total == 454 and 400 < rows < 454
    ImageFile.LOAD_TRUNCATED_IMAGES = True
    try:
        with Image.open(path) as tolerant:
            expected = np.asarray(tolerant.convert("L"))
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = False
    assert np.array_equal(decoded.pixels, expected)  # the same pixels as before: caches do not change
    assert (expected[-8:] == 128).all()


def test_jpeg_missing_only_its_end_marker_is_whole(tmp_path: Path) -> None:
    grey = _gradient(200, 120)
    data = _jpeg(grey, quality=90)
    complete = images.read_image(data).pixels
    for cut in (data[:-2], data[:-1]):
        decoded = images.read_image(cut)
        assert decoded.warnings == ("truncated JPEG: end-of-image marker missing (all 200 rows decoded)",)
        assert np.array_equal(decoded.pixels, complete)


def test_progressive_and_png_truncation_are_flagged() -> None:
    grey = np.random.default_rng(0).integers(0, 256, (160, 120), dtype=np.uint8)
    progressive = _jpeg(grey, progressive=True)
    warnings = images.read_image(progressive[: len(progressive) * 2 // 3]).warnings
    assert len(warnings) == 1 and warnings[0].startswith("truncated progressive JPEG")
    buffer = io.BytesIO()
    Image.fromarray(grey).save(buffer, format="PNG")
    png = buffer.getvalue()
    cut = images.read_image(png[: len(png) // 2])
    decoded, total = _rows(cut.warnings[0])
    assert cut.warnings[0].startswith("truncated PNG") and total == 160 and 60 < decoded < 100
    assert np.array_equal(cut.pixels[:decoded], grey[:decoded]) and cut.pixels[decoded:].max() == 0


def test_a_file_cut_before_any_pixel_is_an_error() -> None:
    data = _jpeg(_gradient(200, 120))
    with pytest.raises(ImageDecodeError, match="<bytes>: "):
        images.read_image(data[:300])


@pytest.mark.parametrize("side", [1, 8, 31])
def test_images_below_the_minimum_size_are_refused(side: int) -> None:
    buffer = io.BytesIO()
    Image.new("L", (side, side + 40), 90).save(buffer, format="PNG")
    with pytest.raises(ImageDecodeError) as info:
        images.read_image(buffer.getvalue(), name="tiny.png")
    assert str(info.value) == f"tiny.png: image is {side}x{side + 40} px, smaller than the minimum 32x32"
    buffer = io.BytesIO()
    Image.new("L", (32, 32), 90).save(buffer, format="PNG")
    assert images.read_image(buffer.getvalue()).pixels.shape == (32, 32)


def test_bad_inputs_raise_decode_error_naming_the_file(tmp_path: Path) -> None:
    (tmp_path / "junk.png").write_bytes(b"not a png at all")
    with pytest.raises(ImageDecodeError, match="junk.png"):
        load_grayscale(tmp_path / "junk.png")
    with pytest.raises(ImageDecodeError, match="not found"):
        load_grayscale(tmp_path / "absent.png")
    with pytest.raises(ImageDecodeError, match="<bytes>"):
        load_grayscale(b"\x89PNG\r\n\x1a\n garbage")


def test_pixel_budget_is_configurable_per_call(tmp_path: Path) -> None:
    Image.fromarray(_gradient(100, 100)).save(tmp_path / "big.png")
    with pytest.raises(ImageDecodeError, match=r"big.png: header declares 100x100 = 10,000 pixels.*5,000"):
        images.read_image(tmp_path / "big.png", max_pixels=5_000)
    assert images.read_image(tmp_path / "big.png", max_pixels=10_000).pixels.shape == (100, 100)


def test_dicom_bytes_are_sent_to_the_dicom_reader(monkeypatch: pytest.MonkeyPatch) -> None:
    dicom = pytest.importorskip("mura.data.dicom.read")
    pixels = _gradient()

    class Result:
        def __init__(self) -> None:
            self.pixels, self.body_part, self.warnings, self.metadata = pixels, "WRIST", (), {}

    seen = []
    monkeypatch.setattr(dicom, "read_dicom", lambda source, name, max_pixels: seen.append(source) or Result())
    fake = b"\x00" * 128 + b"DICM" + b"\x00" * 16
    assert np.array_equal(load_grayscale(fake), pixels) and seen == [fake]


def test_resize_stretch_and_letterbox() -> None:
    image = np.full((100, 50), 200, np.uint8)
    stretched = resize_image(image, 32, "stretch")
    assert stretched.shape == (32, 32) and stretched.min() == 200
    boxed = resize_image(image, 32, "letterbox")
    assert boxed.shape == (32, 32)
    assert boxed[:, :7].max() == 0 and boxed[:, -7:].max() == 0  # black bars keep the aspect ratio
    assert boxed[:, 9:23].min() == 200
    with pytest.raises(MuraError, match="resize mode"):
        resize_image(image, 32, "crop")


def test_resize_is_antialiased() -> None:
    stripes = np.zeros((256, 256), np.uint8)
    stripes[:, ::2] = 255  # finest possible detail: must average to grey, not alias to black/white
    small = resize_image(stripes, 32)
    assert 100 < small.mean() < 155 and small.std() < 20

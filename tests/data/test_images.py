"""Decoding every kind of file real data sets contain, to the same 8-bit grey pixels."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mura.data import images
from mura.data.images import load_grayscale
from mura.errors import ImageDecodeError
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
    grey = _gradient(30, 50)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to view"
    Image.fromarray(grey).save(tmp_path / "rot.jpg", exif=exif, quality=95)
    out = load_grayscale(tmp_path / "rot.jpg")
    assert out.shape == (50, 30)
    expected = np.rot90(grey, k=-1)
    assert np.abs(out.astype(int) - expected.astype(int)).mean() < 4


def test_truncated_jpeg_decodes_and_strict_mode_is_restored(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    Image.fromarray(_gradient(200, 200)).save(buffer, format="JPEG", quality=90)
    data = buffer.getvalue()[: int(len(buffer.getvalue()) * 0.7)]  # no end-of-image marker
    (tmp_path / "cut.jpg").write_bytes(data)
    with pytest.raises(OSError), Image.open(tmp_path / "cut.jpg") as strict:
        strict.load()  # PIL's strict default fails ...
    out = load_grayscale(tmp_path / "cut.jpg")  # ... ours does not, and leaves the default strict
    assert out.shape == (200, 200)
    from PIL import ImageFile

    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_bad_inputs_raise_decode_error_naming_the_file(tmp_path: Path) -> None:
    (tmp_path / "junk.png").write_bytes(b"not a png at all")
    with pytest.raises(ImageDecodeError, match="junk.png"):
        load_grayscale(tmp_path / "junk.png")
    with pytest.raises(ImageDecodeError, match="not found"):
        load_grayscale(tmp_path / "absent.png")
    with pytest.raises(ImageDecodeError, match="<bytes>"):
        load_grayscale(b"\x89PNG\r\n\x1a\n garbage")


def test_decompression_bomb_guard(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    Image.fromarray(_gradient(100, 100)).save(tmp_path / "big.png")
    monkeypatch.setattr(images, "MAX_PIXELS", 5_000)
    with pytest.raises(ImageDecodeError, match="decompression bomb"):
        load_grayscale(tmp_path / "big.png")


def test_dicom_bytes_are_sent_to_the_dicom_reader(monkeypatch: pytest.MonkeyPatch) -> None:
    dicom = pytest.importorskip("mura.data.dicom")
    pixels = _gradient()

    class Result:
        def __init__(self) -> None:
            self.pixels, self.body_part = pixels, "WRIST"

    seen = []
    monkeypatch.setattr(dicom, "read_dicom", lambda source: seen.append(source) or Result())
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
    with pytest.raises(ValueError):
        resize_image(image, 32, "crop")


def test_resize_is_antialiased() -> None:
    stripes = np.zeros((256, 256), np.uint8)
    stripes[:, ::2] = 255  # finest possible detail: must average to grey, not alias to black/white
    small = resize_image(stripes, 32)
    assert 100 < small.mean() < 155 and small.std() < 20

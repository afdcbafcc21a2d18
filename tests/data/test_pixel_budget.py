"""The pixel budget: an image is refused from what its header declares, before any pixel is decoded, and
a large image that is allowed costs a few bytes a pixel, through `read_image` and through `mura predict`."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mura.data.budget import DeclaredSize, PixelBudgetError
from mura.data.dicom.display import BLOCK_PIXELS
from mura.data.images import declared_size, read_image
from tests.data.oversized import jpeg_frame_bomb, rgba_png, rle_bomb, run_with_peak
from tests.factories.dicom import dicom_bytes, dicom_dataset, twelve_bit

# What the interpreter with numpy, Pillow and pydicom takes before any image (about 60 MiB), with room.
INTERPRETER_MIB = 120


def test_rle_bomb_is_refused_from_its_header(tmp_path: Path) -> None:
    bomb = rle_bomb()
    assert len(bomb) < 1500
    (tmp_path / "bomb.dcm").write_bytes(bomb)
    with pytest.raises(PixelBudgetError) as refused:
        read_image(tmp_path / "bomb.dcm")
    assert str(refused.value) == (
        f"{tmp_path / 'bomb.dcm'}: header declares 40000x40000 = 1,600,000,000 pixels, over the limit of "
        "100,000,000 (decompression bomb?); raise max_pixels if such images are real"
    )
    assert declared_size(bomb) == DeclaredSize(40_000, 40_000)


def test_a_jpeg_frame_declaring_more_than_the_dicom_header_is_refused() -> None:
    with pytest.raises(
        PixelBudgetError, match=r"upload.dcm \(compressed frame\): header declares 30000x30000"
    ):
        read_image(jpeg_frame_bomb(), name="upload.dcm")


def test_the_budget_is_per_call_and_counts_one_frame(make_radiograph) -> None:
    image = make_radiograph()
    data = dicom_bytes(dicom_dataset(twelve_bit(image)))
    with pytest.raises(PixelBudgetError, match=f"{image.shape[1]}x{image.shape[0]}"):
        read_image(data, max_pixels=image.size - 1)
    assert read_image(data, max_pixels=image.size).pixels.shape == image.shape


def test_multi_frame_dicom_gives_frame_1_with_a_warning(make_radiograph) -> None:
    frames = np.stack([make_radiograph(seed=i)[:200, :160] for i in range(3)])
    ds = dicom_dataset(frames[0], bits_stored=8)
    ds.NumberOfFrames, ds.PixelData = 3, frames.tobytes()
    decoded = read_image(dicom_bytes(ds))
    assert decoded.warnings == ("multi-frame: 3 frames, frame 1 used",)
    np.testing.assert_array_equal(
        decoded.pixels, read_image(dicom_bytes(dicom_dataset(frames[0], bits_stored=8))).pixels
    )
    assert declared_size(dicom_bytes(ds)) == DeclaredSize(frames.shape[2], frames.shape[1], 3)


def test_multi_page_tiff_gives_page_1_with_a_warning(tmp_path: Path, make_radiograph) -> None:
    pages = [Image.fromarray(make_radiograph(seed=i)[:200, :160]) for i in range(2)]
    pages[0].save(tmp_path / "two.tif", save_all=True, append_images=pages[1:])
    decoded = read_image(tmp_path / "two.tif")
    assert decoded.warnings == ("multi-frame: 2 frames, frame 1 used",)
    np.testing.assert_array_equal(decoded.pixels, np.asarray(pages[0]))


def test_a_dicom_larger_than_one_block_is_displayed_as_a_whole(make_radiograph) -> None:
    """The display pipeline runs by blocks of rows: the stretch still spans the whole image."""
    image = np.tile(make_radiograph(), (4, 4))[: BLOCK_PIXELS // 512 + 300, :1024]
    stored = image.astype(np.uint16) * 15 + 100  # 12 bits, 100..3925: stretched onto 0..255 as one range
    pixels = read_image(dicom_bytes(dicom_dataset(stored))).pixels
    expected = np.round((stored - float(stored.min())) / float(np.ptp(stored)) * 255)
    np.testing.assert_array_equal(pixels, expected.astype(np.uint8))


def test_rgba_png_of_64_megapixels_decodes_in_a_few_bytes_a_pixel(tmp_path: Path) -> None:
    """Before: a float32 RGBA copy, 2.2 GB at peak for this 300 KB file; now 8-bit grey by Pillow."""
    (tmp_path / "big.png").write_bytes(rgba_png())
    script = (
        "import sys; from mura.data.images import read_image; print(read_image(sys.argv[1]).pixels.shape)"
    )
    code, output, peak = run_with_peak([sys.executable, "-c", script, str(tmp_path / "big.png")])
    assert code == 0 and "(7990, 7990)" in output, output
    assert peak < INTERPRETER_MIB + 16 * 7990 * 7990 / 2**20, f"peak RSS {peak} MiB"


@pytest.mark.slow
def test_mura_predict_refuses_the_bomb_without_allocating_it(tmp_path: Path, tiny_checkpoint: Path) -> None:
    """The probe: `mura predict` on a 1 KB RLE file declaring 40,000 x 40,000 peaked at 2.57 GB."""
    (tmp_path / "bomb.dcm").write_bytes(rle_bomb())
    command = [sys.executable, "-m", "mura", "predict", str(tmp_path / "bomb.dcm")]
    code, output, peak = run_with_peak([*command, "--checkpoint", str(tiny_checkpoint), "--device", "cpu"])
    assert "header declares 40000x40000" in output, output
    # The CLI with torch and the model peaks at 1.0-1.3 GiB on any file; the frame alone is 1,526 MiB
    # more (2.5 GiB measured before the budget was read from the header).
    assert peak < 1800, f"peak RSS {peak} MiB"

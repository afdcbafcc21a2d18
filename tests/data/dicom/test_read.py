"""DICOM round trips: files written with pydicom must read back as the pixels a viewer would show."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian as EXPLICIT_LE
from pydicom.uid import JPEGLSLossless, RLELossless

from mura.constants import BODY_PARTS
from mura.data.dicom.read import body_part_from_text, read_dicom
from mura.errors import ImageDecodeError
from tests.factories.dicom import dicom_dataset, write_dicom


def ramp(height: int = 8, width: int = 16, high: int = 4095) -> np.ndarray:
    return np.tile(np.linspace(0, high, width).round().astype(np.uint16), (height, 1))


def test_monochrome2_12_bit_without_window_is_stretched_to_full_range(tmp_path: Path) -> None:
    pixels = ramp(high=4095)
    image = read_dicom(write_dicom(dicom_dataset(pixels), tmp_path / "a.dcm"))
    assert image.pixels.dtype == np.uint8 and image.pixels.shape == (8, 16)
    assert image.pixels[0, 0] == 0 and image.pixels[0, -1] == 255
    expected = np.round(pixels / 4095 * 255).astype(np.uint8)
    assert np.abs(image.pixels.astype(int) - expected).max() <= 1


def test_monochrome1_is_inverted_so_bone_stays_bright(tmp_path: Path) -> None:
    pixels = ramp(high=4095)
    mono2 = read_dicom(write_dicom(dicom_dataset(pixels), tmp_path / "m2.dcm")).pixels
    mono1 = read_dicom(
        write_dicom(dicom_dataset(pixels, photometric="MONOCHROME1"), tmp_path / "m1.dcm")
    ).pixels
    np.testing.assert_array_equal(mono1.astype(int), 255 - mono2.astype(int))
    assert mono1[0, 0] == 255 and mono1[0, -1] == 0


def test_full_16_bit_values_survive(tmp_path: Path) -> None:
    pixels = ramp(high=65535)
    image = read_dicom(write_dicom(dicom_dataset(pixels, bits_stored=16), tmp_path / "b16.dcm"))
    assert image.pixels[0, 0] == 0 and image.pixels[0, -1] == 255
    assert np.all(np.diff(image.pixels[0].astype(int)) > 0)  # 16 levels stay 16 distinct levels


def test_window_centre_width_after_rescale_slope_intercept(tmp_path: Path) -> None:
    # Stored 0..4000, real values = 2 * stored - 1000 (-1000..7000); window [0, 2000] in real units.
    pixels = ramp(width=41, high=4000)
    ds = dicom_dataset(pixels, RescaleSlope=2, RescaleIntercept=-1000, WindowCenter=1000, WindowWidth=2000)
    image = read_dicom(write_dicom(ds, tmp_path / "w.dcm")).pixels[0].astype(int)
    real = pixels[0].astype(float) * 2 - 1000
    assert np.all(image[real <= 0] == 0)
    assert np.all(image[real >= 2000] == 255)
    inside = (real > 100) & (real < 1900)
    expected = np.clip((real[inside] - 999.5) / 1999 + 0.5, 0, 1) * 255  # DICOM LINEAR window
    assert np.abs(image[inside] - expected).max() <= 1.0


def test_rescale_only_maps_real_values_not_stored_ones(tmp_path: Path) -> None:
    pixels = ramp(high=1000)  # negative slope: stored high = real low
    image = read_dicom(
        write_dicom(dicom_dataset(pixels, RescaleSlope=-1, RescaleIntercept=1000), tmp_path / "r.dcm")
    )
    assert image.pixels[0, 0] == 255 and image.pixels[0, -1] == 0


def test_voi_lut_sequence_is_preferred_over_window(tmp_path: Path) -> None:
    # LUT: inputs 100..355 -> a step: below 228 -> 0, from 228 on -> 4095 (12-bit output).
    lut = np.where(np.arange(256) < 128, 0, 4095).astype(np.uint16)
    item = Dataset()
    item.LUTDescriptor = [256, 100, 12]
    item.LUTData = lut.tolist()
    pixels = np.array([[0, 150, 227, 228, 300, 1000]], dtype=np.uint16)
    ds = dicom_dataset(pixels, WindowCenter=2000, WindowWidth=10)
    ds.VOILUTSequence = [item]
    ds["VOILUTSequence"][0]["LUTData"].VR = "US"
    out = read_dicom(write_dicom(ds, tmp_path / "lut.dcm")).pixels[0]
    np.testing.assert_array_equal(out, [0, 0, 0, 255, 255, 255])


def test_rle_compressed_pixels_round_trip(tmp_path: Path) -> None:
    pixels = ramp(high=4095)
    ds = dicom_dataset(pixels, transfer_syntax=RLELossless)
    image = read_dicom(write_dicom(ds, tmp_path / "rle.dcm"))
    assert image.pixels[0, 0] == 0 and image.pixels[0, -1] == 255


def test_bytes_source_and_metadata(tmp_path: Path) -> None:
    ds = dicom_dataset(ramp(), BodyPartExamined="WRIST", StudyDescription="XR WRIST 3V LT", ViewPosition="PA")
    path = write_dicom(ds, tmp_path / "m.dcm")
    image = read_dicom(path.read_bytes())
    assert image.body_part == "WRIST"
    assert image.metadata["Modality"] == "DX" and image.metadata["ViewPosition"] == "PA"
    assert image.metadata["Rows"] == 8 and image.metadata["TransferSyntaxUID"] == str(EXPLICIT_LE)


@pytest.mark.parametrize(
    ("tags", "expected"),
    [
        ({"BodyPartExamined": "HAND"}, "HAND"),
        ({"BodyPartExamined": "ELBOW"}, "ELBOW"),
        ({"BodyPartExamined": "SHOULDER"}, "SHOULDER"),
        ({"BodyPartExamined": "CHEST"}, None),
        ({"BodyPartExamined": "SKULL", "StudyDescription": "XR HUMERUS"}, "HUMERUS"),
        ({"BodyPartExamined": "KNEE", "StudyDescription": "XR HUMERUS"}, "LEG"),
        ({"BodyPartExamined": "PELVIS"}, "HIP"),
        ({"StudyDescription": "XR FINGER(S) 2+ VIEWS"}, "FINGER"),
        ({"SeriesDescription": "Forearm AP"}, "FOREARM"),
        ({}, None),
    ],
)
def test_body_part_mapping(tmp_path: Path, tags: dict, expected: str | None) -> None:
    assert read_dicom(write_dicom(dicom_dataset(ramp(), **tags), tmp_path / "bp.dcm")).body_part == expected


def test_body_part_text_rules() -> None:
    assert body_part_from_text("DIGIT") == "FINGER"
    assert body_part_from_text("wrist and hand") == "WRIST"  # first named part wins
    assert body_part_from_text("Left upper arm") == "HUMERUS"
    assert body_part_from_text("METACARPAL") == "HAND"  # a whole word, not the CARPAL inside it
    assert body_part_from_text("XR lower leg") == body_part_from_text("ANKLE") == "LEG"  # FracAtlas's leg
    assert body_part_from_text("CHEST") is None and body_part_from_text(None) is None
    assert {body_part_from_text(p) for p in BODY_PARTS} == set(BODY_PARTS)


def test_no_pixel_data_is_a_one_line_error(tmp_path: Path) -> None:
    ds = dicom_dataset(ramp())
    del ds.PixelData
    path = write_dicom(ds, tmp_path / "nopix.dcm")
    with pytest.raises(ImageDecodeError) as info:
        read_dicom(path)
    assert str(path) in str(info.value) and "no pixel data" in str(info.value)
    assert "\n" not in str(info.value)


def test_undecodable_transfer_syntax_is_a_one_line_error(tmp_path: Path) -> None:
    ds = dicom_dataset(ramp())
    ds.file_meta.TransferSyntaxUID = JPEGLSLossless  # a JPEG-LS stream no decoder accepts
    ds.PixelData = b"\xfe\xff\x00\xe0\x00\x00\x00\x00\xfe\xff\x00\xe0\x04\x00\x00\x00\xff\xd8\xff\xd9"
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    path = write_dicom(ds, tmp_path / "jls.dcm")
    with pytest.raises(ImageDecodeError) as info:
        read_dicom(path)
    message = str(info.value)
    assert message.startswith(str(path)) and "JPEG-LS" in message and "\n" not in message


def test_not_a_dicom_file(tmp_path: Path) -> None:
    path = tmp_path / "fake.dcm"
    path.write_bytes(b"hello" * 100)
    with pytest.raises(ImageDecodeError, match="not a DICOM file"):
        read_dicom(path)


def test_load_grayscale_dispatches_dicom(tmp_path: Path) -> None:
    from mura.data.images import load_grayscale

    path = write_dicom(dicom_dataset(ramp(32, 48)), tmp_path / "x.dcm")
    np.testing.assert_array_equal(load_grayscale(path), read_dicom(path).pixels)

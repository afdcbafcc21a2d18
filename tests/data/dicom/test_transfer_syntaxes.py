"""Every transfer syntax a PACS sends decodes, and files without the 128-byte preamble are read.

pydicom bundles the test files used here (written by dcmtk, GDCM and others); the JPEG Lossless,
JPEG-LS and 12-bit JPEG files of a synthetic radiograph are made with dcmtk, the toolkit most PACS
gateways use. Only a missing Debian tool skips a test.
"""

from __future__ import annotations

import io
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import ImplicitVRLittleEndian, JPEGExtended12Bit, JPEGLosslessSV1, JPEGLSLossless

from mura.data.dicom.read import first_frame, read_dataset, read_dicom
from mura.data.images import is_dicom, load_grayscale
from mura.data.synth import render_image
from mura.errors import ImageDecodeError
from tests.factories.dicom import dicom_dataset, write_dicom


def bundled(name: str) -> Path:
    """A test file bundled with pydicom (never downloaded: `download=False`)."""
    path = get_testdata_file(name, download=False)
    assert path is not None, f"{name} is not bundled with pydicom"
    return Path(path)


def stored_pixels(path: Path) -> np.ndarray:
    return first_frame(read_dataset(path))


# (file, its transfer syntax keyword, the uncompressed file holding the same pixels or None)
BUNDLED = [
    ("MR_small_jpeg_ls_lossless.dcm", "JPEGLSLossless", "MR_small.dcm"),
    ("JPEGLSNearLossless_16.dcm", "JPEGLSNearLossless", None),
    ("JPEG-lossy.dcm", "JPEGExtended12Bit", None),
    ("JPGExtended.dcm", "JPEGExtended12Bit", None),
    ("SC_rgb_jpeg_gdcm.dcm", "JPEGLosslessSV1", None),
    ("SC_rgb_jpeg_dcmtk.dcm", "JPEGBaseline8Bit", None),
    ("MR_small_jp2klossless.dcm", "JPEG2000Lossless", "MR_small.dcm"),
    ("JPEG2000.dcm", "JPEG2000", None),
    ("MR_small_RLE.dcm", "RLELossless", "MR_small.dcm"),
    ("image_dfl.dcm", "DeflatedExplicitVRLittleEndian", None),
    ("MR_small_bigendian.dcm", "ExplicitVRBigEndian", "MR_small.dcm"),
    ("MR_small_implicit.dcm", "ImplicitVRLittleEndian", "MR_small.dcm"),
]


@pytest.mark.parametrize(("name", "syntax", "reference"), BUNDLED, ids=[b[0] for b in BUNDLED])
def test_bundled_transfer_syntax_decodes(name: str, syntax: str, reference: str | None) -> None:
    path = bundled(name)
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    assert ds.file_meta.TransferSyntaxUID == getattr(pydicom.uid, syntax)
    image = read_dicom(path)
    assert image.pixels.shape == (ds.Rows, ds.Columns)
    assert image.pixels.std() > 5  # a real picture, not a blank or constant array
    if reference is not None:
        np.testing.assert_array_equal(stored_pixels(path), stored_pixels(bundled(reference)))


def test_jpeg_with_bad_scan_header_decodes_like_dcmtk(tmp_path: Path) -> None:
    """JPEG-lossy.dcm's scan header has Ss/Se values libjpeg refuses; IJG (dcmtk) ignores them."""
    if shutil.which("dcmdjpeg") is None:
        pytest.skip("dcmtk's dcmdjpeg is not installed (Debian package dcmtk)")
    decoded = tmp_path / "dcmtk.dcm"
    subprocess.run(
        ["dcmdjpeg", str(bundled("JPEG-lossy.dcm")), str(decoded)], check=True, capture_output=True
    )
    ours, theirs = stored_pixels(bundled("JPEG-lossy.dcm")).astype(int), stored_pixels(decoded).astype(int)
    assert ours.std() > 5
    assert np.abs(ours - theirs).max() <= 1  # lossy JPEG: decoders may round the inverse DCT differently


def test_source_dataset_is_not_changed_by_the_scan_repair() -> None:
    path = bundled("JPEG-lossy.dcm")
    ds = read_dataset(path)
    before = ds.PixelData
    from mura.data.dicom.read import dataset_image

    dataset_image(ds, str(path))
    assert ds.PixelData == before


def test_no_meta_file_without_preamble_reads_as_ct_small(tmp_path: Path) -> None:
    path = bundled("no_meta.dcm")
    np.testing.assert_array_equal(stored_pixels(path), stored_pixels(bundled("CT_small.dcm")))
    suffixless = tmp_path / "no_meta"
    suffixless.write_bytes(path.read_bytes())
    assert is_dicom(suffixless) and is_dicom(path.read_bytes())
    np.testing.assert_array_equal(load_grayscale(suffixless), read_dicom(path).pixels)


def synthetic_radiograph() -> np.ndarray:
    """A 12-bit radiograph: a synthetic MURA wrist scaled to 0..4095 with detector noise."""
    grey = render_image("WRIST", True, [3, 1], 0).astype(np.float64)
    noise = np.random.default_rng(0).normal(0, 6, grey.shape)
    return np.clip(grey * 16 + noise, 0, 4095).astype(np.uint16)


@pytest.fixture(scope="module")
def uncompressed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("dx") / "source.dcm"
    ds = dicom_dataset(
        synthetic_radiograph(), body_part="WRIST", patient_id="SYN1", PatientName="Synthetic^Patient"
    )
    return write_dicom(ds, path)


def dcmtk(tool: str, *args: str) -> None:
    if shutil.which(tool) is None:
        pytest.skip(f"dcmtk's {tool} is not installed (Debian package dcmtk)")
    subprocess.run([tool, *args], check=True, capture_output=True)


@pytest.mark.parametrize(
    ("tool", "options", "syntax"),
    [("dcmcjpeg", ("+e1",), JPEGLosslessSV1), ("dcmcjpls", ("+el",), JPEGLSLossless)],
    ids=["jpeg-lossless-sv1", "jpeg-ls-lossless"],
)
def test_dcmtk_lossless_file_decodes_to_the_source_pixels(
    uncompressed: Path, tmp_path: Path, tool: str, options: tuple[str, ...], syntax: str
) -> None:
    compressed = tmp_path / "compressed.dcm"
    dcmtk(tool, *options, str(uncompressed), str(compressed))
    assert pydicom.dcmread(compressed, stop_before_pixels=True).file_meta.TransferSyntaxUID == syntax
    assert compressed.stat().st_size < uncompressed.stat().st_size  # really compressed
    np.testing.assert_array_equal(stored_pixels(compressed), stored_pixels(uncompressed))
    np.testing.assert_array_equal(read_dicom(compressed).pixels, read_dicom(uncompressed).pixels)


def test_dcmtk_12_bit_lossy_jpeg_shows_the_same_picture(uncompressed: Path, tmp_path: Path) -> None:
    compressed = tmp_path / "extended.dcm"
    dcmtk("dcmcjpeg", "+ee", "+q", "95", str(uncompressed), str(compressed))
    assert (
        pydicom.dcmread(compressed, stop_before_pixels=True).file_meta.TransferSyntaxUID == JPEGExtended12Bit
    )
    shown = read_dicom(compressed).pixels.astype(int)
    source = read_dicom(uncompressed).pixels.astype(int)
    assert np.abs(shown - source).mean() < 2.0  # grey levels of 255


def bare_dataset(ds: Dataset, target: Path) -> Path:
    """The data set alone, Implicit VR Little Endian, no preamble and no file meta (as old archives);
    written by hand because `write_dicom` always writes the file meta."""
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, True
    write_dataset(buffer, ds)
    target.write_bytes(buffer.getvalue())
    return target


def test_preamble_less_files_read_and_are_recognised(uncompressed: Path, tmp_path: Path) -> None:
    expected = read_dicom(uncompressed).pixels
    ds = pydicom.dcmread(uncompressed)
    meta_only = write_dicom(ds, tmp_path / "meta_only", preamble=False)  # file meta kept
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    bare = bare_dataset(ds, tmp_path / "bare")
    for path in (meta_only, bare):
        assert path.read_bytes()[128:132] != b"DICM"
        assert is_dicom(path) and is_dicom(path.read_bytes())
        np.testing.assert_array_equal(read_dicom(path).pixels, expected)
        np.testing.assert_array_equal(load_grayscale(path.read_bytes()), expected)
        assert read_dicom(path).body_part == "WRIST"


def png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize(
    "content",
    [b"hello world\n" * 100, png_bytes(), np.random.default_rng(0).bytes(4096), b"", b"\x08\x00" * 600],
    ids=["text", "png", "random", "empty", "group-8-repeated"],
)
def test_other_files_are_still_not_dicom(tmp_path: Path, content: bytes) -> None:
    suffixless = tmp_path / "file"
    suffixless.write_bytes(content)
    assert not is_dicom(suffixless) and not is_dicom(content)
    named = tmp_path / "file.dcm"
    named.write_bytes(content)
    with pytest.raises(ImageDecodeError, match="not a DICOM file") as info:
        read_dicom(named)
    assert str(named) in str(info.value) and "\n" not in str(info.value)


def test_random_bytes_are_never_taken_for_dicom() -> None:
    rng = np.random.default_rng(1)
    assert not any(is_dicom(rng.bytes(1024)) for _ in range(3000))

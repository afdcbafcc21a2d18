"""DICOM instances for tests: one data set factory and one writer, instead of a builder per test file.

`dicom_dataset` makes an instance as a modality sends it (file meta, SOP class and instance, patient,
study and series, the image pixel module); `dicom_bytes` / `write_dicom` give its file, with or without
the 128-byte preamble. A test that needs a malformed file changes the data set it gets back.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    UID,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    generate_uid,
)

DX = DigitalXRayImageStorageForPresentation


def twelve_bit(image: np.ndarray) -> np.ndarray:
    """A uint8 radiograph as the 12-bit stored values a detector writes (0..4080)."""
    return image.astype(np.uint16) * 16


def dicom_dataset(
    pixels: np.ndarray | None,
    *,
    modality: str = "DX",
    sop_class: str = DX,
    body_part: str | None = None,
    patient_id: str | None = None,
    study_uid: str | None = None,
    series_uid: str | None = None,
    sop_uid: str | None = None,
    photometric: str = "MONOCHROME2",
    bits_stored: int = 12,
    signed: bool = False,
    transfer_syntax: str = ExplicitVRLittleEndian,
    rows_cols: tuple[int, int] | None = None,
    **tags: object,
) -> Dataset:
    """An instance holding `pixels` as its stored values (16 bits allocated above 8 stored), or no image
    at all (`None`: an SR, a PDF); UIDs are new unless given, `rows_cols` declares another size than the
    pixels have (a lie), `tags` are set last. A compressed `transfer_syntax` compresses the pixels."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, sop_uid or generate_uid()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid or generate_uid(), series_uid or generate_uid()
    ds.Modality = modality
    if patient_id is not None:
        ds.PatientID = patient_id
    if body_part is not None:
        ds.BodyPartExamined = body_part
    stored = None
    if pixels is not None:
        allocated = 8 if bits_stored <= 8 else 16
        stored = pixels.astype(f"{'i' if signed else 'u'}{allocated // 8}")
        ds.Rows, ds.Columns = rows_cols or pixels.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = allocated, bits_stored, bits_stored - 1
        ds.PixelRepresentation = int(signed)
        ds.PixelData = stored.tobytes()
    for key, value in tags.items():
        setattr(ds, key, value)
    if UID(transfer_syntax).is_compressed:
        ds.compress(transfer_syntax, stored)
    else:
        ds.file_meta.TransferSyntaxUID = transfer_syntax
    return ds


def dicom_bytes(ds: Dataset, *, preamble: bool = True) -> bytes:
    """The file of `ds`; without `preamble`, its first 132 bytes (preamble and `DICM`) cut off."""
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    data = buffer.getvalue()
    return data if preamble else data[132:]


def write_dicom(ds: Dataset, path: Path, *, preamble: bool = True) -> Path:
    """`dicom_bytes(ds)` written to `path`."""
    path.write_bytes(dicom_bytes(ds, preamble=preamble))
    return path

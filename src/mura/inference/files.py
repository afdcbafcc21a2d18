"""Files and folders -> predictions, with decoding overlapped with inference.

Decoding a JPEG/DICOM and resizing it costs a few milliseconds, about as much as running a small model
on it, so doing both in turn would nearly halve throughput. Decode + resize run on a thread pool (PIL,
pydicom's numpy work and the resize release the GIL) while the main thread runs the model on the
previous batch; results still come out in input order.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mura.constants import BODY_PARTS, UNKNOWN_BODY_PART, body_part_index, given_body_part
from mura.data.images import is_dicom, read_image
from mura.errors import ImageDecodeError, MuraError

if TYPE_CHECKING:
    from mura.inference.predictor import InputSpec, Predictor

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm", ".dicom")


@dataclass
class DecodedFile:
    path: Path
    pixels: np.ndarray  # full-size uint8 [H, W] (kept for Grad-CAM overlays)
    prepared: dict[InputSpec, np.ndarray]
    body_part: int  # -1 unless given or read from DICOM tags
    body_part_origin: str  # argument | dicom | none
    warnings: tuple[str, ...] = ()  # from decoding, e.g. a truncated JPEG decoded with grey filler


@dataclass
class FileResult:
    path: Path
    error: str | None = None  # one line, naming the file, when it could not be predicted
    record: dict[str, Any] = field(default_factory=dict)  # PredictionBatch.record fields
    pixels: np.ndarray | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def expand_paths(paths: Iterable[str | Path]) -> list[Path]:
    """Files as given; folders recursively (image and DICOM suffixes, or suffix-less DICOM), sorted."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found += sorted(
                p
                for p in path.rglob("*")
                if p.is_file()
                and not p.name.startswith(".")
                and (p.suffix.lower() in IMAGE_SUFFIXES or (not p.suffix and is_dicom(p)))
            )
        else:
            found.append(path)
    return found


def decode_file(path: Path, body_part: int, predictor: Predictor) -> DecodedFile:
    """Pixels, resized inputs and body part (the argument wins over DICOM tags); ImageDecodeError."""
    origin = "argument" if body_part != UNKNOWN_BODY_PART else "none"
    decoded = read_image(path)
    if body_part == UNKNOWN_BODY_PART and decoded.body_part is not None:
        body_part, origin = body_part_index(decoded.body_part), "dicom"
    return DecodedFile(
        path, decoded.pixels, predictor.prepare(decoded.pixels), body_part, origin, decoded.warnings
    )


def _decode_or_error(path: Path, body_part: int, predictor: Predictor) -> DecodedFile | str:
    try:
        return decode_file(path, body_part, predictor)
    except ImageDecodeError as exc:
        return str(exc)
    except MemoryError:
        return f"{path}: out of memory while decoding"


def iter_file_predictions(
    predictor: Predictor,
    paths: Sequence[Path],
    body_part: str | None = None,
    *,
    workers: int = 2,
    keep_pixels: bool = False,
) -> Iterator[FileResult]:
    """Predict files batch by batch, decoding the next batch while the model runs on this one."""
    try:
        given = given_body_part(body_part)
    except ValueError as exc:
        raise MuraError(str(exc)) from None
    batch = predictor.batch_size
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="mura-decode") as pool:

        def submit(start: int) -> list[Future]:
            return [pool.submit(_decode_or_error, p, given, predictor) for p in paths[start : start + batch]]

        pending = submit(0)
        for start in range(0, len(paths), batch):
            current = pending
            pending = submit(start + batch)  # queued now, decoded while the model runs below
            yield from _predict_batch(
                predictor, [f.result() for f in current], paths[start : start + batch], keep_pixels
            )


def _predict_batch(
    predictor: Predictor, decoded: list[DecodedFile | str], paths: Sequence[Path], keep_pixels: bool
) -> Iterator[FileResult]:
    good = [d for d in decoded if isinstance(d, DecodedFile)]
    prediction = (
        predictor.predict_prepared([d.prepared for d in good], [d.body_part for d in good]) if good else None
    )
    index = 0
    for path, item in zip(paths, decoded, strict=True):
        if isinstance(item, str):
            yield FileResult(path, error=item)
            continue
        assert prediction is not None
        record = prediction.record(index)
        record["body_part_source"] = item.body_part_origin if item.body_part >= 0 else "predicted"
        record["warnings"] = list(item.warnings)
        index += 1
        yield FileResult(path, record=record, pixels=item.pixels if keep_pixels else None)


def study_record(
    folder: Path, results: Sequence[FileResult], threshold: float, operating_point: str
) -> dict[str, Any]:
    """A study (a folder of views): mean probability of its predicted views, decided at the same threshold."""
    records = [r.record for r in results if r.ok]
    probability = float(np.mean([r["fracture_probability"] for r in records]))
    part_probs = {n: float(np.mean([r["body_part_probabilities"][n] for r in records])) for n in BODY_PARTS}
    given = {r["body_part"] for r in records if r["body_part_used"] == "given"}
    if len(given) == 1 and all(r["body_part_used"] == "given" for r in records):
        part, used = given.pop(), "given"
    else:
        part, used = max(part_probs, key=part_probs.__getitem__), "predicted"
    return {
        "kind": "study",
        "path": str(folder),
        "fracture_probability": probability,
        "decision": "abnormal" if probability >= threshold else "normal",
        "operating_point": operating_point,
        "threshold": threshold,
        "body_part": part,
        "body_part_used": used,
        "body_part_probabilities": part_probs,
        "views": len(records),
        "views_failed": len(results) - len(records),
    }

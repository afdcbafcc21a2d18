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
from typing import TYPE_CHECKING

import numpy as np

from mura.constants import UNKNOWN_BODY_PART, UNSURE_BODY_PART, body_part_index, given_body_part
from mura.data.images import is_dicom, read_image
from mura.errors import ImageDecodeError, MuraError
from mura.inference.scope import ModelScope, scope_reasons, scored_anyway
from mura.prediction import NOT_ASSESSED, BodyPartOrigin, Prediction, StudyPrediction, decide

if TYPE_CHECKING:
    from mura.inference.predictor import InputSpec, Predictor
    from mura.tiers import TierScale

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm", ".dicom")


@dataclass
class DecodedFile:
    path: Path
    pixels: np.ndarray  # full-size uint8 [H, W] (kept for Grad-CAM overlays)
    prepared: dict[InputSpec, np.ndarray]  # empty when the file is refused and will not be scored
    body_part: int  # -1 unless given or read from DICOM tags
    body_part_origin: BodyPartOrigin  # given (argument) or dicom; ignored while body_part is -1
    warnings: tuple[str, ...] = ()  # from decoding, e.g. a truncated JPEG decoded with grey filler
    reasons: tuple[str, ...] = ()  # why the scope gate refuses it (mura.inference.scope); () = in scope


@dataclass
class FileResult:
    """One file's outcome: a `Prediction`, or a one-line `error` naming the file (never both)."""

    path: Path
    error: str | None = None
    prediction: Prediction | None = None
    pixels: np.ndarray | None = None  # full-size uint8, when asked for (captures, overlays)

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


@dataclass(frozen=True)
class InMemoryFile:
    """A file's bytes and name (an upload): decoded like a file on disk, without ever being written."""

    name: str
    data: bytes = field(repr=False)


FileSource = Path | InMemoryFile


def source_path(source: FileSource) -> Path:
    """The path a result names: the file's own, or the upload's name."""
    return Path(source.name) if isinstance(source, InMemoryFile) else source


def decode_file(
    source: FileSource, body_part: int, predictor: Predictor, scope: ModelScope, score_all: bool = False
) -> DecodedFile:
    """Pixels, the scope gate's reasons, resized inputs (unless refused and not `score_all`) and body
    part (the argument wins over DICOM tags); ImageDecodeError."""
    origin: BodyPartOrigin = "given"
    path = source_path(source)
    decoded = (
        read_image(source.data, name=source.name) if isinstance(source, InMemoryFile) else read_image(path)
    )
    if body_part == UNKNOWN_BODY_PART and decoded.body_part is not None:
        body_part, origin = body_part_index(decoded.body_part), "dicom"
    reasons = tuple(scope_reasons(decoded, scope))
    prepared = predictor.prepare(decoded.pixels) if score_all or not reasons else {}
    return DecodedFile(path, decoded.pixels, prepared, body_part, origin, decoded.warnings, reasons)


def _decode_or_error(
    source: FileSource, body_part: int, predictor: Predictor, scope: ModelScope, score_all: bool
) -> DecodedFile | str:
    try:
        return decode_file(source, body_part, predictor, scope, score_all)
    except ImageDecodeError as exc:
        return str(exc)
    except MemoryError:
        return f"{source_path(source)}: out of memory while decoding"


def iter_file_predictions(
    predictor: Predictor,
    paths: Sequence[FileSource],
    body_part: str | None = None,
    *,
    workers: int = 2,
    keep_pixels: bool = False,
    score_all: bool = False,
) -> Iterator[FileResult]:
    """Predict files batch by batch, decoding the next batch while the model runs on this one.

    A file the scope gate refuses is answered `not_assessed` with its reasons, unless `score_all`
    (a researcher's choice): then it is scored and the reasons are among its warnings.
    """
    try:
        given = given_body_part(body_part)
    except ValueError as exc:
        raise MuraError(str(exc)) from None
    batch = predictor.batch_size
    scope = ModelScope.of_members(predictor.members)
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="mura-decode") as pool:

        def submit(start: int) -> list[Future]:
            return [
                pool.submit(_decode_or_error, p, given, predictor, scope, score_all)
                for p in paths[start : start + batch]
            ]

        pending = submit(0)
        for start in range(0, len(paths), batch):
            current = pending
            pending = submit(start + batch)  # queued now, decoded while the model runs below
            decoded = [f.result() for f in current]
            yield from _predict_batch(
                predictor, decoded, paths[start : start + batch], keep_pixels, score_all
            )


def _predict_batch(
    predictor: Predictor,
    decoded: list[DecodedFile | str],
    paths: Sequence[FileSource],
    keep_pixels: bool,
    score_all: bool,
) -> Iterator[FileResult]:
    good = [d for d in decoded if isinstance(d, DecodedFile) and d.prepared]
    sizes = [(int(d.pixels.shape[1]), int(d.pixels.shape[0])) for d in good]  # where findings go
    prediction = (
        predictor.predict_prepared([d.prepared for d in good], [d.body_part for d in good], sizes)
        if good
        else None
    )
    index = 0
    for source, item in zip(paths, decoded, strict=True):
        path = source_path(source)
        if isinstance(item, str):
            yield FileResult(path, error=item)
            continue
        pixels = item.pixels if keep_pixels else None
        if not item.prepared:
            record = not_assessed(predictor, str(path), item.reasons, item.warnings)
            yield FileResult(path, prediction=record, pixels=pixels)
            continue
        assert prediction is not None
        record = prediction.prediction(
            index,
            predictor.identity,
            path=str(path),
            given_origin=item.body_part_origin,
            warnings=(*item.warnings, *scored_anyway(item.reasons)),
            score_all=score_all,  # layer 3 (features) decides here, from the prediction's own pass
        )
        index += 1
        yield FileResult(path, prediction=record, pixels=pixels)


def not_assessed(
    predictor: Predictor, path: str | None, reasons: Sequence[str], warnings: Sequence[str] = ()
) -> Prediction:
    """The answer for an input the scope gate refused: its reasons, no probability, no body part."""
    return Prediction.refused(
        path,
        reasons,
        operating_point=predictor.threshold_name,
        threshold=predictor.threshold,
        model=predictor.identity,
        warnings=warnings,
    )


def study_prediction(path: str | None, results: Sequence[FileResult], tiers: TierScale) -> StudyPrediction:
    """MURA's study rule over the views that were read: the mean probability of the assessed ones, decided
    at the views' (shared) threshold and restated in the model's `tiers` (`Predictor.tiers`; their
    figures are the image-level ones the points were validated at). A study whose views were all refused
    is `not_assessed`."""
    views = [r.prediction for r in results if r.prediction is not None]
    if not views:
        raise MuraError(f"{path or 'study'}: no view could be read")
    first = views[0]
    assessed = [v for v in views if v.assessed]
    common = {
        "path": path,
        "operating_point": first.operating_point,
        "threshold": first.threshold,
        "model": first.model,
        "views": len(assessed),
        "views_failed": sum(1 for r in results if r.prediction is None),
        "views_not_assessed": len(views) - len(assessed),
        "warnings": [f"{Path(v.path or '').name}: {w}" for v in views for w in v.warnings],
    }
    if not assessed:
        why = [f"{Path(v.path or '').name}: {r}" for v in views for r in v.reasons]
        return StudyPrediction(
            fracture_probability=None,
            decision=NOT_ASSESSED,
            body_part=None,
            body_part_origin="predicted",
            body_part_probabilities={},
            reasons=why,
            **common,
        )
    probability = float(np.mean([v.fracture_probability for v in assessed]))
    names = assessed[0].body_part_probabilities
    part_probs = {n: float(np.mean([v.body_part_probabilities[n] for v in assessed])) for n in names}
    given = {(v.body_part, v.body_part_origin) for v in assessed if v.body_part_origin != "predicted"}
    if len(given) == 1 and all(v.body_part_origin != "predicted" for v in assessed):
        part, origin = next(iter(given))
    else:
        # The most probable part, if a view was sure of it (reached the confidence floor), else UNKNOWN.
        likeliest = max(part_probs, key=part_probs.__getitem__)
        part = likeliest if any(v.body_part == likeliest for v in assessed) else UNSURE_BODY_PART
        origin = "predicted"
    return StudyPrediction(
        fracture_probability=probability,
        decision=decide(probability, first.threshold),
        body_part=part,
        body_part_origin=origin,
        body_part_probabilities=part_probs,
        **tiers.assign(probability)._asdict(),
        **common,
    )

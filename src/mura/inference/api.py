"""`mura.load(...)`: a trained model as a Python object, the same path as `mura predict` and `mura serve`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mura.constants import given_body_part
from mura.errors import MuraError
from mura.inference.files import FileResult, expand_paths, iter_file_predictions, study_record
from mura.inference.predictor import Predictor


class Model:
    """One checkpoint or an ensemble; every answer is the JSON record `mura predict` prints."""

    def __init__(self, predictor: Predictor) -> None:
        self.predictor = predictor

    def predict(self, image: str | Path | np.ndarray, body_part: str | None = None) -> dict[str, Any]:
        """One file (PNG/JPEG/DICOM) or a decoded uint8 [H, W] array; MuraError names a bad file."""
        if isinstance(image, np.ndarray):
            part = _part(body_part)
            batch = self.predictor.predict_images([image], [part])
            record = batch.record(0)
            record["body_part_source"] = "argument" if part >= 0 else "predicted"
            return record
        (result,) = self.predict_files([image], body_part)
        if not result.ok:
            raise MuraError(result.error)
        return result.record

    def predict_files(self, paths: Sequence[str | Path], body_part: str | None = None) -> list[FileResult]:
        """Files and folders (recursive); a file that cannot be read gets a result with `error` set."""
        return list(iter_file_predictions(self.predictor, expand_paths(paths), body_part))

    def predict_study(self, paths: Sequence[str | Path], body_part: str | None = None) -> dict[str, Any]:
        """The views of one study: the mean of the good views' probabilities (the MURA paper's rule)."""
        results = self.predict_files(paths, body_part)
        if not any(r.ok for r in results):
            raise MuraError("no view of the study could be read: " + "; ".join(str(r.error) for r in results))
        folder = Path(paths[0]).parent if len(paths) else Path(".")
        return study_record(folder, results, self.predictor.threshold, self.predictor.threshold_name)


def _part(name: str | None) -> int:
    try:
        return given_body_part(name)
    except ValueError as exc:
        raise MuraError(str(exc)) from None


def load(
    checkpoints: str | Path | Sequence[str | Path],
    *,
    device: str = "auto",
    runtime: str = "auto",
    tta: bool = False,
    threshold: str | float | None = None,
) -> Model:
    """Load checkpoint(s) (`.pt` or exported `.onnx`; several = an ensemble) for prediction."""
    return Model(
        Predictor.from_checkpoints(checkpoints, device=device, runtime=runtime, tta=tta, threshold=threshold)
    )

"""A run's trace: one JSON saying exactly what produced a prediction run's answers (`--trace`, `trace=`).

Why: an answer read months later (an audit, an incident review, a paper's methods) must name what made
it, beyond the one-line identity every `Prediction` carries (users of peer tools ask for this:
Project-MONAI/MONAI#8208). A trace holds:

- inputs: each file's path, size and SHA-256 (an array: its shape and the SHA-256 of its bytes), with
  its decision and probability, or why it could not be read;
- the model: each checkpoint's path, SHA-256, runtime, architecture, preprocessing (size, resize mode,
  normalisation) and decision (calibration, thresholds, targets, where it was fitted: `fitted_on` and a
  site fit's `origin`); the operating point and threshold the run decided at;
- the scope: the layers applied (`features` only where a member has a detector, with each detector's
  threshold, refusal rate and where it was fitted, and the members it does not gate), the body parts the
  gate lets in and whether out-of-scope inputs were scored anyway;
- versions (mura, Python, numpy, torch, timm, onnxruntime, pydicom, highdicom), the run's settings
  as the caller gives them, start and end times, and a summary of the outputs (decisions counted,
  not-assessed reasons counted, unreadable files).

A trace is recognised by its `mura_trace` key: an existing file without it is never replaced.
"""

from __future__ import annotations

import hashlib
import json
import platform
from collections import Counter
from collections.abc import Mapping
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from mura.atomic import write_text
from mura.checkpoint import file_sha256
from mura.errors import MuraError
from mura.inference.predictor import Predictor
from mura.inference.scope import DICOM_LAYER, PIXEL_LAYER, ModelScope
from mura.inference.scope_features import FEATURE_LAYER
from mura.prediction import Prediction

TRACE_FORMAT = 1
TRACED_PACKAGES = ("numpy", "torch", "timm", "onnxruntime", "pydicom", "highdicom")


def software_versions() -> dict[str, str | None]:
    """mura, Python and the packages a prediction depends on (None: not installed)."""
    from mura import __version__

    found: dict[str, str | None] = {"mura": str(__version__), "python": platform.python_version()}
    for name in TRACED_PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def is_trace(path: Path) -> bool:
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("mura_trace") == TRACE_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def check_trace_target(path: str | Path) -> Path:
    """The trace file, if one may be written there (nothing is written): new, or an earlier trace."""
    path = Path(path)
    if path.is_dir():
        raise MuraError(f"{path}: is a folder; trace= names the JSON file to write")
    if path.exists() and not is_trace(path):
        raise MuraError(f"{path}: exists and is not a trace mura wrote; choose another trace= file")
    return path


def _now() -> str:
    return datetime.now().astimezone().isoformat(timespec="seconds")


class RunTrace:
    """Collects a run's inputs and answers (`add_file`, `add_array`, `add_study`), then `write`s them."""

    def __init__(
        self, predictor: Predictor, settings: Mapping[str, Any] | None = None, score_all: bool = False
    ) -> None:
        self.predictor = predictor
        self.settings = dict(settings or {})
        self.score_all = score_all
        self.started = _now()
        self.inputs: list[dict[str, Any]] = []
        self.studies: list[dict[str, Any]] = []

    def add_file(self, path: str | Path, prediction: Prediction | None, error: str | None = None) -> None:
        """A file and its answer (or the error that kept it from one)."""
        path = Path(path)
        entry: dict[str, Any] = {"path": str(path)}
        try:
            entry |= {"bytes": path.stat().st_size, "sha256": file_sha256(path)}
        except OSError as exc:
            entry["unreadable"] = exc.strerror or type(exc).__name__
        self.inputs.append(entry | _answer(prediction, error))

    def add_array(self, array: np.ndarray, prediction: Prediction) -> None:
        """An in-memory image: its shape, dtype and the SHA-256 of its bytes."""
        data = np.ascontiguousarray(array)
        digest = hashlib.sha256(data.tobytes()).hexdigest()
        entry = {"array": list(data.shape), "dtype": str(data.dtype), "sha256": digest}
        self.inputs.append(entry | _answer(prediction, None))

    def add_study(self, prediction: Prediction) -> None:
        self.studies.append({"path": prediction.path, **_answer(prediction, None)})

    def to_dict(self) -> dict[str, Any]:
        predictor = self.predictor
        identity = predictor.identity
        return {
            "mura_trace": TRACE_FORMAT,
            "started": self.started,
            "finished": _now(),
            "versions": software_versions(),
            "model": identity.model_dump(),
            "operating_point": {"name": predictor.threshold_name, "threshold": predictor.threshold},
            "checkpoints": [
                {
                    "path": str(m.source),
                    "sha256": file_sha256(m.source),
                    "runtime": m.runtime,
                    "model": m.model_name,
                    "preprocessing": m.preprocessing.to_dict(),
                    "decision": m.decision.to_dict(),
                }
                for m in predictor.members
            ],
            "tta": predictor.tta,
            "scope": {
                "layers": [DICOM_LAYER, PIXEL_LAYER]
                + ([FEATURE_LAYER] if predictor.feature_gate.active else []),
                "parts": sorted(ModelScope.of_members(predictor.members).parts),
                "features": predictor.feature_gate.status(),
                "score_all": self.score_all,
            },
            "settings": self.settings,
            "summary": self.summary(),
            "inputs": self.inputs,
            "studies": self.studies,
        }

    def summary(self) -> dict[str, Any]:
        """Decisions counted (images and studies), not-assessed reasons counted, unreadable files."""
        images = Counter(i["decision"] for i in self.inputs if "decision" in i)
        reasons = Counter(r for i in self.inputs for r in i.get("reasons", ()))
        return {
            "inputs": len(self.inputs),
            "failed": sum(1 for i in self.inputs if "error" in i),
            "decisions": dict(images),
            "not_assessed_reasons": dict(reasons),
            "study_decisions": dict(Counter(s["decision"] for s in self.studies)),
        }

    def write(self, path: str | Path) -> Path:
        """Write the trace (atomically); an existing file is replaced only if it is an earlier trace."""
        target = check_trace_target(path)
        write_text(target, json.dumps(self.to_dict(), indent=1) + "\n")
        return target


def _answer(prediction: Prediction | None, error: str | None) -> dict[str, Any]:
    if prediction is None:
        return {"error": str(error)}
    answer: dict[str, Any] = {
        "decision": prediction.decision,
        "fracture_probability": prediction.fracture_probability,
    }
    if prediction.reasons:
        answer["reasons"] = list(prediction.reasons)
    if prediction.warnings:
        answer["warnings"] = list(prediction.warnings)
    return answer

"""`Predictor`: checkpoint(s) -> probabilities; the one object evaluate, predict, explain and serve use.

- Preprocessing is each checkpoint's own (size, resize mode, mean/std), so a model sees at serving time
  exactly the pixels it saw in training; members with different sizes each get their own input.
- Ensembles average member probabilities (not logits: members may be calibrated differently).
- Flip TTA averages the probabilities of the image and its mirror (training augments with flips).
- Probabilities are the raw softmax, the scale the stored thresholds were chosen on; `calibrated=True`
  divides logits by the stored temperature and maps the threshold the same way, so decisions agree.
- Threshold: by default the validation Youden threshold where every member stores one, else 0.5;
  an ensemble decides at the mean of its members' thresholds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy.special import expit, logit, softmax

from mura.constants import BODY_PARTS, UNKNOWN_BODY_PART, body_part_index
from mura.data.images import resize_image
from mura.errors import MuraError
from mura.inference.members import Member, load_member, resolve_device

PREFERRED_THRESHOLDS = ("youden", "default")
BODY_PART_MODES = ("given", "predicted")

InputSpec = tuple[int, str]  # (size, resize mode)


@dataclass
class PredictionBatch:
    fracture_prob: np.ndarray  # [N] probability of fracture/abnormality
    decision: np.ndarray  # [N] bool, fracture_prob >= threshold
    threshold: float
    body_part_probs: np.ndarray  # [N, 7] in BODY_PARTS order
    body_part: np.ndarray  # [N] index of the body part the fracture head used
    body_part_used: list[str]  # "given" | "predicted"
    runtime: str  # torch | onnx | torch+onnx

    def __len__(self) -> int:
        return len(self.fracture_prob)

    def record(self, i: int) -> dict[str, Any]:
        """Image `i` as the JSON fields `mura predict` and the web service write."""
        return {
            "fracture_probability": float(self.fracture_prob[i]),
            "decision": "abnormal" if self.decision[i] else "normal",
            "threshold": float(self.threshold),
            "body_part": BODY_PARTS[int(self.body_part[i])],
            "body_part_used": self.body_part_used[i],
            "body_part_probabilities": dict(
                zip(BODY_PARTS, map(float, self.body_part_probs[i]), strict=True)
            ),
        }


class Predictor:
    def __init__(
        self,
        members: Sequence[Member],
        *,
        tta: bool = False,
        threshold: str | float | None = None,
        calibrated: bool = False,
        batch_size: int = 32,
    ) -> None:
        if not members:
            raise MuraError("no checkpoint given")
        self.members = list(members)
        self.tta = tta
        self.calibrated = calibrated
        self.batch_size = max(1, int(batch_size))
        self.threshold_name, self.threshold = self._choose_threshold(threshold)

    @classmethod
    def from_checkpoints(
        cls,
        paths: Sequence[str | Path] | str | Path,
        device: str = "auto",
        runtime: str = "auto",
        tta: bool = False,
        **kwargs: Any,
    ) -> Predictor:
        """Load each checkpoint (`.pt`, or an exported `.onnx` that carries its own metadata)."""
        paths = [paths] if isinstance(paths, str | Path) else list(paths)
        resolved = resolve_device(device)
        return cls([load_member(p, resolved, runtime) for p in paths], tta=tta, **kwargs)

    @property
    def runtime(self) -> str:
        return "+".join(sorted({m.runtime for m in self.members}))

    @property
    def input_specs(self) -> list[InputSpec]:
        """The distinct (size, resize mode) inputs the members need, in member order."""
        specs = [(m.preprocessing.size, m.preprocessing.resize_mode) for m in self.members]
        return list(dict.fromkeys(specs))

    def _choose_threshold(self, wanted: str | float | None) -> tuple[str, float]:
        if isinstance(wanted, int | float):
            return "custom", float(wanted)
        if wanted is None:
            wanted = next(
                n
                for n in PREFERRED_THRESHOLDS
                if all(n in m.threshold for m in self.members) or n == "default"
            )
        values = []
        for member in self.members:
            if wanted not in member.threshold and wanted != "default":
                known = ", ".join(sorted(member.threshold)) or "none"
                raise MuraError(f"{member.source}: no stored threshold {wanted!r} (stored: {known})")
            value = member.threshold.get(wanted, 0.5)
            if self.calibrated:
                value = float(expit(logit(np.clip(value, 1e-7, 1 - 1e-7)) / member.temperature))
            values.append(value)
        return str(wanted), float(np.mean(values))

    # --- images -> probabilities -------------------------------------------------------------------
    def prepare(self, image: np.ndarray) -> dict[InputSpec, np.ndarray]:
        """Resize one uint8 [H, W] image for every input spec (thread-safe; decode pools call this)."""
        return {spec: resize_image(image, spec[0], spec[1]) for spec in self.input_specs}

    def predict_images(
        self, images: Sequence[np.ndarray], body_parts: Sequence[int] | None = None
    ) -> PredictionBatch:
        """Full-size uint8 [H, W] images -> predictions; body part -1 (or None) means predict it."""
        return self.predict_prepared([self.prepare(image) for image in images], body_parts)

    def predict_prepared(
        self, prepared: Sequence[dict[InputSpec, np.ndarray]], body_parts: Sequence[int] | None = None
    ) -> PredictionBatch:
        arrays = {
            spec: np.stack([p[spec] for p in prepared])
            if prepared
            else np.zeros((0, spec[0], spec[0]), np.uint8)
            for spec in self.input_specs
        }
        parts = np.full(len(prepared), UNKNOWN_BODY_PART) if body_parts is None else np.asarray(body_parts)
        return self.predict_arrays(arrays, parts)

    def predict_arrays(self, arrays: dict[InputSpec, np.ndarray], body_parts: np.ndarray) -> PredictionBatch:
        """uint8 [N, S, S] per input spec (any S: resized like training when it differs) -> predictions."""
        parts = np.asarray(body_parts, dtype=np.int64).reshape(-1)
        if np.any(parts >= len(BODY_PARTS)) or np.any(parts < UNKNOWN_BODY_PART):
            raise MuraError(f"body part indices must be -1..{len(BODY_PARTS) - 1}")
        if np.any(parts < 0):
            for member in self.members:
                if not member.has_body_part_head:
                    raise MuraError(
                        f"{member.source}: model has no body-part head; give the body part of "
                        "every image (--body-part, DICOM BodyPartExamined)"
                    )
        fracture = np.zeros(len(parts))
        body = np.zeros((len(parts), len(BODY_PARTS)))
        for member in self.members:
            spec = (member.preprocessing.size, member.preprocessing.resize_mode)
            member_fracture, member_body = self._member_probs(member, arrays[spec], parts)
            fracture += member_fracture / len(self.members)
            body += member_body / len(self.members)
        used_index = np.where(parts >= 0, parts, body.argmax(axis=1) if len(parts) else parts)
        return PredictionBatch(
            fracture_prob=fracture,
            decision=fracture >= self.threshold,
            threshold=self.threshold,
            body_part_probs=body,
            body_part=used_index,
            body_part_used=["given" if p >= 0 else "predicted" for p in parts],
            runtime=self.runtime,
        )

    def _member_probs(
        self, member: Member, images: np.ndarray, parts: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        fracture, body = [], []
        for start in range(0, len(parts), self.batch_size):
            x = self._model_input(member, images[start : start + self.batch_size])
            p = parts[start : start + self.batch_size]
            views = [x, x[..., ::-1].copy()] if self.tta else [x]
            outputs = [member.run(view, p) for view in views]
            temperature = member.temperature if self.calibrated else 1.0
            fracture.append(np.mean([expit((f[:, 1] - f[:, 0]) / temperature) for f, _ in outputs], axis=0))
            body.append(np.mean([softmax(b.astype(np.float64), axis=1) for _, b in outputs], axis=0))
        if not fracture:
            return np.zeros(0), np.zeros((0, len(BODY_PARTS)))
        return np.concatenate(fracture).astype(np.float64), np.concatenate(body)

    @staticmethod
    def _model_input(member: Member, images: np.ndarray) -> np.ndarray:
        """uint8 [B, S, S] -> float32 [B, 1, size, size] normalised with the member's mean/std."""
        pre = member.preprocessing
        if images.shape[-1] != pre.size or images.shape[-2] != pre.size:
            return pre.to_input(torch.from_numpy(np.ascontiguousarray(images))[:, None]).numpy()
        x = images[:, None].astype(np.float32) / np.float32(255.0)
        return (x - np.float32(pre.mean)) / np.float32(pre.std)

    # --- files and caches ---------------------------------------------------------------------------
    def predict_paths(self, paths: Sequence[str | Path], body_part: str | None = None) -> list[Any]:
        """Decode files (PNG/JPEG/DICOM) and predict; a file that fails gets a result with `error` set."""
        from mura.inference.files import iter_file_predictions

        return list(iter_file_predictions(self, [Path(p) for p in paths], body_part))

    def predict_cache(
        self, cache: Any, split: str | None = "test", body_part_mode: str = "given", progress: bool = False
    ) -> pd.DataFrame:
        """Predict every cached image of `split` (None = all); rows keep the cache index's order and labels.

        `given` feeds each row's body part (unknown rows fall back to predicted); `predicted` ignores it.
        """
        from mura.data.cache import open_cache

        if body_part_mode not in BODY_PART_MODES:
            raise MuraError(f"body_part_mode must be one of {BODY_PART_MODES}, not {body_part_mode!r}")
        cache = open_cache(cache) if isinstance(cache, str | Path) else cache
        rows = cache.index if split is None else cache.index[cache.index["split"] == split]
        cache_mode = str(cache.settings.get("resize", cache.settings.get("resize_mode", "stretch")))
        for member in self.members:
            trained = member.preprocessing.resize_mode
            if trained != cache_mode:
                raise MuraError(
                    f"{member.source}: trained on {trained!r} resizing but the cache was prepared with "
                    f"{cache_mode!r}; prepare a matching cache"
                )
        if body_part_mode == "given":
            parts = np.array([body_part_index(v) if isinstance(v, str) else -1 for v in rows["body_part"]])
        else:
            parts = np.full(len(rows), UNKNOWN_BODY_PART)
        if "cache_row" in rows.columns:
            positions = rows["cache_row"].to_numpy(dtype=np.int64)
        else:
            positions = np.flatnonzero(cache.index.index.isin(rows.index))
        chunk = self.batch_size * 8
        starts = range(0, len(rows), chunk)
        if progress:
            from tqdm import tqdm

            starts = tqdm(starts, desc=f"predict {split or 'all'}", unit="chunk")
        batches = []
        for start in starts:
            images = np.asarray(cache.images[positions[start : start + chunk]])
            arrays = dict.fromkeys(self.input_specs, images)
            batches.append(self.predict_arrays(arrays, parts[start : start + chunk]))
        return _cache_frame(rows, batches)


def _cache_frame(rows: pd.DataFrame, batches: list[PredictionBatch]) -> pd.DataFrame:
    """The split's index rows plus prediction columns, the contract's columns first."""
    out = rows.copy()
    out["fracture_prob"] = np.concatenate([b.fracture_prob for b in batches]) if batches else np.zeros(0)
    out["decision"] = (
        np.concatenate([b.decision for b in batches]).astype(int) if batches else np.zeros(0, int)
    )
    body_probs = np.concatenate([b.body_part_probs for b in batches]) if batches else np.zeros((0, 7))
    out["body_part_pred"] = [BODY_PARTS[i] for i in body_probs.argmax(axis=1)]
    out["body_part_used"] = [u for b in batches for u in b.body_part_used]
    first = ["path", "study_id", "body_part", "label", "fracture_prob", "body_part_pred", "body_part_used"]
    first = [c for c in first if c in out.columns]
    return out[first + [c for c in out.columns if c not in first]]

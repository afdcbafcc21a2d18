"""`Predictor`: checkpoint(s) -> probabilities; the one object evaluate, predict, explain and serve use.

- Preprocessing is each checkpoint's own (`mura.preprocessing`): a file is resized once per distinct
  (size, resize mode) exactly as `mura prepare` resizes it for the cache, so `evaluate` (cache rows),
  `predict` and `serve` (files, uploads) feed a model the same pixels. A cache of another size is
  refused, never resized a second time.
- Probabilities are the deployed ones: each member's stored calibration (`mura.decision`) applied to
  its margin. Ensembles average member probabilities; flip TTA averages image and mirror.
- Decisions are made at a named operating point: by default `suspicious` (high sensitivity) where
  every member stores it, else `youden`, else 0.5; an ensemble decides at the mean of its members'
  thresholds for that point. Every answer says which point and threshold it used.
- Body parts: the answer's vocabulary is the widest member's (each is a prefix of `BODY_PARTS`); a
  part none was given for is the body-part head's argmax when its probability reaches the members'
  (mean) confidence floor, else UNKNOWN (index -1), and then each member feeds its fracture head its
  unknown-part embedding (`mura.models.heads`; a given part outside a member's classes counts as none).
- Members with a scope detector score layer 3 of the scope gate from the same forward pass
  (`mura.inference.scope_features`); the batch carries each image's reasons.
- Members with a map head add their fracture maps to the batch (flip TTA flipped back), from which each
  answer's findings come (`mura.inference.findings`), graded at the stored suspicious / definite points.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import expit, softmax

from mura import __version__
from mura.checkpoint import file_sha256
from mura.constants import BODY_PARTS, UNKNOWN_BODY_PART, body_part_index
from mura.decision import POINT_PREFERENCE
from mura.devices import resolve_device
from mura.errors import MuraError
from mura.inference.batch import PredictionBatch, cache_frame
from mura.inference.findings import FINDING_POINTS, MemberMaps, finding_thresholds, map_probabilities
from mura.inference.members import Member, load_member
from mura.inference.scope_features import FeatureGate
from mura.prediction import ModelIdentity
from mura.tiers import TierScale

BODY_PART_MODES = ("given", "predicted")

InputSpec = tuple[int, str]  # (size, resize mode)


def member_body_parts(member: Member) -> tuple[str, ...]:
    """A member's body-part classes, as its checkpoint records them."""
    return tuple(member.info.get("body_parts") or BODY_PARTS)


class Predictor:
    """One model or an ensemble of checkpoints, answering with deployed probabilities and decisions.

    The single object every surface predicts through (evaluate, predict, explain, export, serve, the
    API, `mura cv`, the DICOM paths), so they cannot drift apart: each member keeps its own
    preprocessing and calibration, members' probabilities are averaged, and the decision is taken at
    one named operating point (`operating_point`) that every answer reports with its threshold.
    """

    def __init__(
        self,
        members: Sequence[Member],
        *,
        tta: bool = False,
        threshold: str | float | None = None,
        batch_size: int = 32,
    ) -> None:
        if not members:
            raise MuraError("no checkpoint given")
        self.members = list(members)
        self.tta = tta
        self.batch_size = max(1, int(batch_size))
        self.threshold_name, self.threshold = self.operating_point(threshold)

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

    @functools.cached_property
    def identity(self) -> ModelIdentity:
        """Names, mura version, one SHA-256 over the member files and the decision origin: what every
        answer says produced it."""
        return ModelIdentity.of(
            [m.model_name for m in self.members],
            [file_sha256(m.source) for m in self.members],
            __version__,
            decision_origin=self.decision_origin,
        )

    @property
    def decision_origin(self) -> str:
        """Where the members' calibration and operating points were fitted (one line; `; ` between
        members fitted in different places)."""
        return "; ".join(dict.fromkeys(m.decision.fitted_on for m in self.members))

    @functools.cached_property
    def body_parts(self) -> tuple[str, ...]:
        """The body-part vocabulary of the answers: the widest member's (all are prefixes of one)."""
        return max((member_body_parts(m) for m in self.members), key=len)

    @functools.cached_property
    def body_part_floor(self) -> float:
        """The top body-part probability a predicted part must reach to be reported (members' mean;
        0 for old members, which trust every guess)."""
        return float(np.mean([m.info.get("body_part_floor") or 0.0 for m in self.members]))

    @functools.cached_property
    def tiers(self) -> TierScale:
        """The three tiers every answer is restated in, from the members' stored operating points."""
        return TierScale.of([m.decision for m in self.members], [m.positive_class for m in self.members])

    @functools.cached_property
    def feature_gate(self) -> FeatureGate:
        """Layer 3 of the scope gate: the members' feature-space detectors, scored in the same pass."""
        return FeatureGate.of_members(self.members)

    @functools.cached_property
    def finding_thresholds(self) -> dict[str, float]:
        """The points findings are graded at: suspicious / definite where every member stores them."""
        stored = [n for n in FINDING_POINTS if all(n in m.decision.thresholds for m in self.members)]
        points = {name: self.operating_point(name)[1] for name in stored}
        return finding_thresholds(points, self.threshold_name, self.threshold)

    @property
    def input_specs(self) -> list[InputSpec]:
        """The distinct (size, resize mode) inputs the members need, in member order."""
        specs = [(m.preprocessing.size, m.preprocessing.resize_mode) for m in self.members]
        return list(dict.fromkeys(specs))

    def operating_point(self, wanted: str | float | None) -> tuple[str, float]:
        """(operating point name, threshold): a number as given, else a stored point (mean over members)."""
        if isinstance(wanted, int | float):
            if not 0.0 <= float(wanted) <= 1.0:
                raise MuraError(f"threshold {wanted} is not a probability between 0 and 1")
            return "custom", float(wanted)
        if wanted is None:
            wanted = next(
                name
                for name in POINT_PREFERENCE
                if all(name in m.decision.thresholds for m in self.members) or name == "default"
            )
        values = []
        for member in self.members:
            if wanted not in member.decision.thresholds and wanted != "default":
                known = ", ".join(sorted(member.decision.thresholds)) or "none"
                raise MuraError(f"{member.source}: no stored operating point {wanted!r} (stored: {known})")
            values.append(member.decision.thresholds.get(wanted, 0.5))
        return str(wanted), float(np.mean(values))

    # --- images -> probabilities -------------------------------------------------------------------
    def prepare(self, image: np.ndarray) -> dict[InputSpec, np.ndarray]:
        """Resize one uint8 [H, W] image for every input spec (thread-safe; decode pools call this)."""
        steps = {(m.preprocessing.size, m.preprocessing.resize_mode): m.preprocessing for m in self.members}
        return {spec: pre.resize(image) for spec, pre in steps.items()}

    def predict_images(
        self, images: Sequence[np.ndarray], body_parts: Sequence[int] | None = None
    ) -> PredictionBatch:
        """Full-size uint8 [H, W] images -> predictions; body part -1 (or None) means predict it."""
        sizes = [(int(image.shape[1]), int(image.shape[0])) for image in images]
        return self.predict_prepared([self.prepare(image) for image in images], body_parts, sizes)

    def predict_prepared(
        self,
        prepared: Sequence[dict[InputSpec, np.ndarray]],
        body_parts: Sequence[int] | None = None,
        image_sizes: Sequence[tuple[int, int]] | None = None,
    ) -> PredictionBatch:
        """Resized inputs -> predictions; `image_sizes` (width, height of each original) place findings."""
        arrays = {
            spec: np.stack([p[spec] for p in prepared])
            if prepared
            else np.zeros((0, spec[0], spec[0]), np.uint8)
            for spec in self.input_specs
        }
        parts = np.full(len(prepared), UNKNOWN_BODY_PART) if body_parts is None else np.asarray(body_parts)
        return self.predict_arrays(arrays, parts, image_sizes)

    def predict_arrays(
        self,
        arrays: dict[InputSpec, np.ndarray],
        body_parts: np.ndarray,
        image_sizes: Sequence[tuple[int, int]] | None = None,
    ) -> PredictionBatch:
        """uint8 [N, size, size] per input spec (exactly the prepared/cached pixels) -> predictions.

        Without `image_sizes` (cache rows) findings are in the first input spec's square frame, where a
        cache's boxes are; members of mixed resize modes share no such frame, so they give no map."""
        parts = np.asarray(body_parts, dtype=np.int64).reshape(-1)
        if np.any(parts >= len(BODY_PARTS)) or np.any(parts < UNKNOWN_BODY_PART):
            raise MuraError(f"body part indices must be -1..{len(BODY_PARTS) - 1}")
        if np.any(parts < 0):
            for member in self.members:
                if not member.has_body_part_head:
                    raise MuraError(
                        f"{member.source}: model has no body-part head; give the body part of "
                        "every image (body_part=..., or the DICOM BodyPartExamined tag)"
                    )
        fracture = np.zeros(len(parts))
        uncalibrated = np.zeros(len(parts))
        body = np.zeros((len(parts), len(self.body_parts)))
        maps: list[MemberMaps] = []
        scope_scores: list[np.ndarray | None] = []
        for member in self.members:
            spec = (member.preprocessing.size, member.preprocessing.resize_mode)
            width = len(member_body_parts(member))
            member_fracture, member_raw, member_body, member_map, member_scores = self._member_probs(
                member, arrays[spec], np.where(parts < width, parts, UNKNOWN_BODY_PART)
            )
            fracture += member_fracture / len(self.members)
            uncalibrated += member_raw / len(self.members)
            body[:, : member_body.shape[1]] += member_body / len(self.members)
            if member_map is not None:
                maps.append(MemberMaps(member.preprocessing, member_map))
            scope_scores.append(member_scores)
        if image_sizes is None:
            side = self.input_specs[0][0]
            image_sizes = [(side, side)] * len(parts)
            maps = maps if len({mode for _, mode in self.input_specs}) == 1 else []
        trusted = body.max(axis=1, initial=0.0) >= self.body_part_floor
        guessed = np.where(trusted, body.argmax(axis=1), UNKNOWN_BODY_PART) if len(parts) else parts
        used_index = np.where(parts >= 0, parts, guessed)
        return PredictionBatch(
            fracture_prob=fracture,
            uncalibrated_prob=uncalibrated,
            decision=fracture >= self.threshold,
            threshold=self.threshold,
            operating_point=self.threshold_name,
            body_part_probs=body,
            body_part=used_index,
            body_part_used=["given" if p >= 0 else "predicted" for p in parts],
            runtime=self.runtime,
            tiers=self.tiers,
            body_parts=self.body_parts,
            member_maps=maps,
            image_sizes=list(image_sizes),
            finding_thresholds=self.finding_thresholds,
            feature_reasons=self.feature_gate.reasons(scope_scores),
        )

    def _member_probs(
        self, member: Member, images: np.ndarray, parts: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
        """(calibrated fracture probability, uncalibrated, body-part probabilities, map probabilities
        [N, h, w] or None without a map head, layer 3's scores of the unflipped view or None without a
        detector) of one member."""
        fracture, raw, body, maps, scores = [], [], [], [], []
        for start in range(0, len(parts), self.batch_size):
            x = np.asarray(member.preprocessing.normalize(images[start : start + self.batch_size, None]))
            p = parts[start : start + self.batch_size]
            views = [x, x[..., ::-1].copy()] if self.tta else [x]
            outputs = [member.run(view, p) for view in views]
            margins = [
                (o.fracture_logits[:, 1] - o.fracture_logits[:, 0]).astype(np.float64) for o in outputs
            ]
            fracture.append(np.mean([member.decision.probabilities(m) for m in margins], axis=0))
            raw.append(np.mean([expit(m) for m in margins], axis=0))
            body.append(
                np.mean([softmax(o.body_part_logits.astype(np.float64), axis=1) for o in outputs], axis=0)
            )
            if outputs[0].fracture_map is not None:
                maps.append(map_probabilities([o.fracture_map for o in outputs], [False, True][: len(views)]))
            if outputs[0].scope_scores is not None:
                scores.append(outputs[0].scope_scores)
        if not fracture:
            none = np.zeros(0) if member.scope_detector is not None else None
            return np.zeros(0), np.zeros(0), np.zeros((0, len(member_body_parts(member)))), None, none
        combined = np.concatenate(maps) if maps else None
        found = np.concatenate(scores) if scores else None
        return np.concatenate(fracture), np.concatenate(raw), np.concatenate(body), combined, found

    # --- caches ---------------------------------------------------------------------------
    def caches_for_members(self, caches: Sequence[Any]) -> dict[InputSpec, Any]:
        """For each input spec the cache prepared at that size and resize mode; one line naming the fix."""
        from mura.data.cache import open_cache

        opened = [open_cache(c) if isinstance(c, str | Path) else c for c in caches]
        by_spec: dict[InputSpec, Any] = {}
        for cache in opened:
            by_spec.setdefault(cache.settings.input_spec, cache)
        for member in self.members:
            spec = (member.preprocessing.size, member.preprocessing.resize_mode)
            if spec not in by_spec:
                have = ", ".join(f"{c.directory} ({size} px {mode})" for (size, mode), c in by_spec.items())
                raise MuraError(
                    f"{member.source}: takes {spec[0]} px {spec[1]} images but no cache given is prepared "
                    f"that way (given: {have}); run `mura prepare INDEX --size {spec[0]} --resize {spec[1]} "
                    "--out DIR` and give that cache too"
                )
        return {spec: by_spec[spec] for spec in self.input_specs}

    def predict_cache(
        self,
        cache: Any,
        split: str | None = "test",
        body_part_mode: str = "given",
        progress: bool = False,
        paths: Sequence[str] | None = None,
    ) -> pd.DataFrame:
        """Predict every cached image of `split` (None = all); rows keep the first cache's order and labels.

        `cache` is one cache (directory or opened) or a list of them, one per input size of the members
        (an ensemble of 224 and 288 px models needs a 224 and a 288 px cache of the same index).
        `given` feeds each row's body part (unknown rows fall back to predicted); `predicted` ignores it.
        `paths` restricts the rows to these images (e.g. one cross-validation fold).
        """
        if body_part_mode not in BODY_PART_MODES:
            raise MuraError(f"body_part_mode must be one of {BODY_PART_MODES}, not {body_part_mode!r}")
        caches = self.caches_for_members(cache if isinstance(cache, list | tuple) else [cache])
        first = next(iter(caches.values()))
        rows = first.index if split is None else first.index[first.index["split"] == split]
        if paths is not None:
            rows = rows[rows["path"].astype(str).isin(set(map(str, paths)))]
        paths = rows["path"].astype(str).tolist()
        positions: dict[InputSpec, np.ndarray] = {}
        for spec, each in caches.items():
            lookup = pd.Series(each.index["cache_row"].to_numpy(), index=each.index["path"].astype(str))
            missing = [p for p in paths if p not in lookup.index]
            if missing:
                raise MuraError(
                    f"{each.directory}: holds no row for {missing[0]} (and {len(missing) - 1} more) that "
                    f"{first.directory} has: prepare both caches from the same index"
                )
            positions[spec] = lookup.loc[paths].to_numpy(dtype=np.int64)
        if body_part_mode == "given":
            parts = np.array([body_part_index(v) if isinstance(v, str) else -1 for v in rows["body_part"]])
        else:
            parts = np.full(len(rows), UNKNOWN_BODY_PART)
        chunk = self.batch_size * 8
        starts = range(0, len(rows), chunk)
        if progress:
            from tqdm import tqdm

            starts = tqdm(starts, desc=f"predict {split or 'all'}", unit="chunk")
        batches = []
        for start in starts:
            arrays = {
                spec: np.asarray(caches[spec].images[positions[spec][start : start + chunk]])
                for spec in caches
            }
            batches.append(self.predict_arrays(arrays, parts[start : start + chunk]))
        return cache_frame(rows, batches)

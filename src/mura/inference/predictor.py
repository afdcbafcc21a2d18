"""`Predictor`: checkpoint(s) -> probabilities; the one object evaluate, predict, explain and serve use.

- Preprocessing is each checkpoint's own (`mura.preprocessing`): a file is resized once per distinct
  (size, resize mode) exactly as `mura prepare` resizes it for the cache, so `evaluate` (cache rows),
  `predict` and `serve` (files, uploads) feed a model the same pixels. A cache of another size is
  refused, never resized a second time (cache rows: `mura.inference.cache_predictions`).
- Probabilities are the deployed ones: each member's stored calibration (`mura.decision`) applied to
  its margin (`mura.inference.member_probabilities`). Ensembles average member probabilities; flip TTA
  averages image and mirror.
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

from mura import __version__
from mura.checkpoint import file_sha256
from mura.constants import BODY_PARTS, UNKNOWN_BODY_PART
from mura.decision import POINT_PREFERENCE
from mura.devices import resolve_device
from mura.errors import MuraError
from mura.inference.batch import PredictionBatch
from mura.inference.findings import FINDING_POINTS, MemberMaps, finding_thresholds
from mura.inference.member_probabilities import member_body_parts, member_probabilities
from mura.inference.members import Member, load_member
from mura.inference.scope_features import FeatureGate
from mura.prediction import ModelIdentity
from mura.tiers import TierScale

InputSpec = tuple[int, str]  # (size, resize mode)


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
            member_probs = member_probabilities(
                member,
                arrays[spec],
                np.where(parts < width, parts, UNKNOWN_BODY_PART),
                batch_size=self.batch_size,
                tta=self.tta,
            )
            fracture += member_probs.fracture / len(self.members)
            uncalibrated += member_probs.uncalibrated / len(self.members)
            body[:, : member_probs.body_parts.shape[1]] += member_probs.body_parts / len(self.members)
            if member_probs.maps is not None:
                maps.append(MemberMaps(member.preprocessing, member_probs.maps))
            scope_scores.append(member_probs.scope_scores)
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

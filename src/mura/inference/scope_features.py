"""Layer 3 of the scope gate, `features`: is an input's position in the model's feature space like the
training films'?

Why: layers 1-2 (`mura.inference.scope`) read headers and pixel statistics, so a chest film or a CT slice
exported as PNG, a grey photograph or smooth noise pass them. Their features do not look like the
training films' (`mura.scope_detector`: Mahalanobis distance at three depths, fitted at training time;
plain rather than relative, as measured in docs/benchmarks/scope.md). The features come from the
prediction's own forward pass (the member's hooks, `mura.models.feature_depths`), so the layer adds no
second pass.

An ensemble refuses an input when the mean of its members' margins (score minus the member's threshold)
is positive: each member's threshold was set for the same refusal rate on films it had not seen, and the
mean is steadier than any one member's verdict (a choice, not yet measured against "any member
refuses"). Members without a detector (older checkpoints, the ONNX runtime, which does not export the
depths' features) are not gated by this layer; `FeatureGate.status` says which, for the run trace.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mura.inference.scope import layer_reason
from mura.models.feature_depths import tapped_depths
from mura.scope_detector import ScopeDetector

FEATURE_LAYER = "features"


def member_scores(model: Any, detector: ScopeDetector, run: Any) -> tuple[Any, np.ndarray]:
    """Run `run()` (one forward pass of `model`) with the detector's depths tapped: (its output, [N]
    scores)."""
    with tapped_depths(model, detector.depth_names) as found:
        output = run()
    return output, detector.scores({name: np.concatenate(parts) for name, parts in found.items()})


def feature_reasons(score: float, threshold: float, target_rate: float, members: int = 1) -> list[str]:
    """Layer 3's reason for one input: [] when its score is within the threshold."""
    if not score > threshold:
        return []
    averaged = f", mean of {members} members" if members > 1 else ""
    why = (
        f"unlike the training films (distance {score:.1f} > {threshold:.1f}{averaged}, set for "
        f"{100 * target_rate:g}% refusals of held-out in-scope films)"
    )
    return [layer_reason(FEATURE_LAYER, why)]


@dataclass(frozen=True)
class FeatureGate:
    """The members' detectors (None where a member has none) and how their scores combine."""

    detectors: tuple[ScopeDetector | None, ...]
    skipped: tuple[str, ...] = ()  # per member without a detector: why (for the trace)

    @classmethod
    def of_members(cls, members: Sequence[Any]) -> FeatureGate:
        detectors = tuple(getattr(m, "scope_detector", None) for m in members)
        skipped = tuple(
            f"{m.source}: {m.info.get('scope_features') or 'no scope detector in this checkpoint'}"
            for m, d in zip(members, detectors, strict=True)
            if d is None
        )
        return cls(detectors, skipped)

    @property
    def active(self) -> bool:
        return any(d is not None for d in self.detectors)

    def reasons(self, scores: Sequence[np.ndarray | None]) -> list[list[str]]:
        """Per input, layer 3's reasons from each member's [N] scores (None for members without one)."""
        used = [
            (d, s) for d, s in zip(self.detectors, scores, strict=True) if d is not None and s is not None
        ]
        if not used:
            return []
        score = np.mean([s for _, s in used], axis=0)
        threshold = float(np.mean([d.threshold for d, _ in used]))
        rate = float(np.mean([d.target_rate for d, _ in used]))
        return [feature_reasons(float(v), threshold, rate, len(used)) for v in score]

    def status(self) -> dict[str, Any]:
        """What the trace records of layer 3: applied or not, by how many members, and how it was set."""
        fitted = [d for d in self.detectors if d is not None]
        return {
            "applied": bool(fitted),
            "members_gated": len(fitted),
            "members_not_gated": list(self.skipped),
            "detectors": [
                {
                    "variant": d.variant,
                    "depths": list(d.depth_names),
                    "threshold": d.threshold,
                    "target_rate": d.target_rate,
                    "rate_reached": d.rate_reached,
                    "fitted_on": d.fitted_on,
                }
                for d in fitted
            ],
        }

"""Three tiers in plain words: what a reader is told instead of "ABNORMAL at threshold 0.075".

A probability alone means nothing to a radiologist, and one decision hides that the model stores two
operating points made for different jobs. So every assessed answer also carries a tier:

    fracture_likely     probability >= the `definite` point (chosen at a target specificity)
    possible_fracture   probability >= the `suspicious` point (chosen at a target sensitivity)
    no_fracture_seen    below both

each with what its point was validated at (sensitivity, specificity, PPV / NPV at the validation
prevalence, how many images, where; `mura.decision.PointFigures`). `no_fracture_seen` carries the
figures of the lowest point: its NPV is what "nothing seen" is worth. Where `definite` lies below
`suspicious` the middle tier is empty (the model separates well enough that no doubt band is left).

A checkpoint that stores only one of the two points (format-1 files, models saved by hand) gets two
tiers: `fracture_likely` / `no_fracture_seen` around `definite` when that is the one, else
`possible_fracture` / `no_fracture_seen` around its default point (`suspicious`, `youden` or 0.5);
`tier_figures.operating_point` names the point either way.

The words follow what the labels meant (`PositiveClass`): "Fracture likely" for fracture labels,
"Abnormality likely" for MURA's abnormality labels; the tier codes stay the same for machines.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from mura.decision import DEFAULT_THRESHOLD, DEFINITE, POINT_PREFERENCE, SUSPICIOUS, Decision, PointFigures
from mura.prediction import PositiveClass, Tier, TierFigures

TIER_WORDS: dict[str, dict[str, str]] = {
    "fracture": {
        "fracture_likely": "Fracture likely",
        "possible_fracture": "Possible fracture",
        "no_fracture_seen": "No fracture seen",
    },
    "abnormality": {
        "fracture_likely": "Abnormality likely",
        "possible_fracture": "Possible abnormality",
        "no_fracture_seen": "No abnormality seen",
    },
}


class TierAssignment(NamedTuple):
    """The tier fields of a `Prediction`, named as there (`Prediction(**assignment._asdict())`)."""

    tier: Tier
    tier_text: str
    tier_figures: TierFigures


@dataclass(frozen=True)
class TierLevel:
    """One lower bound of the scale: at or above `figures.threshold` the answer is `tier`."""

    tier: Tier
    figures: TierFigures


def _figures(point: str, threshold: float, counts: PointFigures | None, where: str | None) -> TierFigures:
    return TierFigures(
        operating_point=point,
        threshold=threshold,
        sensitivity=counts.sensitivity if counts else None,
        specificity=counts.specificity if counts else None,
        ppv=counts.ppv if counts else None,
        npv=counts.npv if counts else None,
        prevalence=counts.prevalence if counts else None,
        images=counts.images if counts else None,
        validated_on=where if counts else None,
    )


def _shared_figures(decisions: Sequence[Decision], point: str) -> tuple[PointFigures | None, str | None]:
    """The point's counts when every member recorded the same ones on the same data (a cross-validation
    or `mura ensemble` model), else none: an ensemble of unrelated models was never validated as one."""
    counts = {d.figures.get(point) for d in decisions}
    where = {d.fitted_on for d in decisions}
    if len(counts) == 1 and len(where) == 1 and None not in counts:
        return next(iter(counts)), next(iter(where))
    return None, None


@dataclass(frozen=True)
class TierScale:
    """The tiers of one model (or ensemble): its levels and the words for them."""

    positive_class: PositiveClass
    levels: tuple[TierLevel, ...]  # checked in order: definite's level first, then suspicious's

    @classmethod
    def of(cls, decisions: Sequence[Decision], positive_classes: Sequence[str]) -> TierScale:
        """The scale of an ensemble whose members decide with `decisions`: each point's threshold is the
        members' mean (as `Predictor.operating_point` takes it); "fracture" only when every member was
        trained on fracture labels."""
        if not decisions:
            raise ValueError("a tier scale needs at least one decision")
        shared = set.intersection(*(set(d.thresholds) for d in decisions))
        wanted = [(DEFINITE, "fracture_likely"), (SUSPICIOUS, "possible_fracture")]
        chosen = [(point, tier) for point, tier in wanted if point in shared]
        if not chosen:  # one stored point: two tiers around the point predict decides at
            chosen = [
                (next(p for p in POINT_PREFERENCE if p in shared or p == "default"), "possible_fracture")
            ]
        levels = []
        for point, tier in chosen:
            threshold = float(np.mean([d.thresholds.get(point, DEFAULT_THRESHOLD) for d in decisions]))
            levels.append(TierLevel(tier, _figures(point, threshold, *_shared_figures(decisions, point))))
        kind: PositiveClass = "fracture" if set(positive_classes) == {"fracture"} else "abnormality"
        return cls(kind, tuple(levels))

    def words(self, tier: Tier) -> str:
        return TIER_WORDS[self.positive_class][tier]

    def assign(self, probability: float) -> TierAssignment:
        """The tier of a deployed probability (same rule as decisions: at or above a threshold)."""
        for level in self.levels:
            if probability >= level.figures.threshold:
                return TierAssignment(level.tier, self.words(level.tier), level.figures)
        lowest = min(self.levels, key=lambda level: level.figures.threshold)
        return TierAssignment("no_fracture_seen", self.words("no_fracture_seen"), lowest.figures)

    def describe(self) -> str:
        """One line for a model card: e.g. "Fracture likely >= 0.62 (definite); Possible fracture >= 0.08
        (suspicious); No fracture seen below"."""
        bounds = [
            f"{self.words(level.tier)} >= {level.figures.threshold:.3g} ({level.figures.operating_point})"
            for level in self.levels
        ]
        return "; ".join([*bounds, f"{self.words('no_fracture_seen')} below"])

"""`PredictionBatch`: what the predictor computes for N images at once, arrays first, records on demand.

Evaluation reads the arrays (thousands of cached rows become a table: `cache_frame`); every per-image
surface asks for `prediction(i)`, the typed `mura.prediction.Prediction`, so the decision rule, the tiers
and the field names live in one place. Members with a map head add their fracture maps
(`mura.inference.findings`): `prediction(i)` then carries the image's findings, in its original pixels.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from mura.constants import BODY_PARTS, UNSURE_BODY_PART
from mura.inference.findings import (
    MapGeometry,
    MemberMaps,
    combined_map,
    findings_from_map,
    map_peak_point,
    map_regions,
)
from mura.inference.scope import scored_anyway
from mura.prediction import BodyPartOrigin, Finding, ModelIdentity, Prediction, decide
from mura.tiers import TierScale


@dataclass
class PredictionBatch:
    """N images' deployed probabilities and body parts, decided at one operating point."""

    fracture_prob: np.ndarray  # [N] deployed (calibrated) probability of fracture/abnormality
    uncalibrated_prob: np.ndarray  # [N] sigmoid of the margin before calibration (for reports)
    decision: np.ndarray  # [N] bool, fracture_prob >= threshold
    threshold: float
    operating_point: str
    body_part_probs: np.ndarray  # [N, parts] in `body_parts` order
    body_part: np.ndarray  # [N] BODY_PARTS index the fracture head used; -1: unsure, reported UNKNOWN
    body_part_used: list[str]  # "given" | "predicted"
    runtime: str  # torch | onnx | torch+onnx
    tiers: TierScale  # the model's three tiers (`mura.tiers`)
    body_parts: tuple[str, ...]  # the model's body-part vocabulary (a prefix of BODY_PARTS)
    member_maps: list[MemberMaps] = field(default_factory=list)  # members with a map head; [] = no maps
    image_sizes: list[tuple[int, int]] = field(default_factory=list)  # (width, height) of each original
    finding_thresholds: dict[str, float] = field(default_factory=dict)  # points findings are graded at
    # Per image, layer 3's reasons (`mura.inference.scope_features`): [] = in scope; empty = no detector
    feature_reasons: list[list[str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.fracture_prob)

    def fracture_map(self, i: int) -> tuple[np.ndarray, MapGeometry] | None:
        """Image `i`'s fracture map (members combined in its original frame) and where it sits; None
        without a map head."""
        if not self.member_maps:
            return None
        width, height = self.image_sizes[i]
        return combined_map([(m.probability[i], m.preprocessing) for m in self.member_maps], width, height)

    def findings(self, i: int) -> list[Finding]:
        """Image `i`'s findings in its original pixels ([] without a map head)."""
        found = self.fracture_map(i)
        if found is None:
            return []
        return findings_from_map(*found, float(self.fracture_prob[i]), self.finding_thresholds)

    def localisation_columns(self) -> dict[str, list[object]]:
        """Per image, for evaluation: every candidate box of the map with its score (image probability x
        region peak, JSON [[x0, y0, x1, y1, score], ...], before the operating-point rule) and the map's
        peak point; {} without a map head."""
        if not self.member_maps:
            return {}
        boxes, peaks_x, peaks_y = [], [], []
        for i in range(len(self)):
            probability_map, geometry = self.fracture_map(i)  # type: ignore[misc]
            regions, region_peaks = map_regions(probability_map, geometry)
            scores = float(self.fracture_prob[i]) * region_peaks
            boxes.append(
                json.dumps([[*map(float, b), float(s)] for b, s in zip(regions, scores, strict=True)])
            )
            x, y = map_peak_point(probability_map, geometry)
            peaks_x.append(x)
            peaks_y.append(y)
        return {"map_boxes": boxes, "map_peak_x": peaks_x, "map_peak_y": peaks_y}

    def prediction(
        self,
        i: int,
        model: ModelIdentity,
        *,
        path: str | None = None,
        given_origin: BodyPartOrigin = "given",
        warnings: Sequence[str] = (),
        score_all: bool = False,
    ) -> Prediction:
        """Image `i` as the typed record every surface returns; `given_origin` says where a given part came
        from (`given` by the caller, or read from `dicom` tags). An image layer 3 of the scope gate refuses
        is `not_assessed` with its reasons, unless `score_all` (then they are among its warnings)."""
        refused = self.feature_reasons[i] if self.feature_reasons else []
        if refused and not score_all:
            return Prediction.refused(
                path,
                refused,
                operating_point=self.operating_point,
                threshold=self.threshold,
                model=model,
                warnings=warnings,
            )
        warnings = [*warnings, *scored_anyway(refused)]
        used = self.body_part_used[i]
        probability = float(self.fracture_prob[i])
        return Prediction(
            path=path,
            fracture_probability=probability,
            decision=decide(probability, self.threshold),
            operating_point=self.operating_point,
            threshold=float(self.threshold),
            body_part=body_part_name(int(self.body_part[i])),
            body_part_origin=given_origin if used == "given" else "predicted",
            body_part_probabilities=dict(
                zip(self.body_parts, map(float, self.body_part_probs[i]), strict=True)
            ),
            warnings=list(warnings),
            findings=self.findings(i),
            **self.tiers.assign(probability)._asdict(),
            model=model,
        )


def body_part_name(index: int) -> str:
    """The name an answer reports for a BODY_PARTS index; -1 (unsure, nothing given) is UNKNOWN."""
    return BODY_PARTS[index] if index >= 0 else UNSURE_BODY_PART


def cache_frame(rows: pd.DataFrame, batches: list[PredictionBatch]) -> pd.DataFrame:
    """The split's index rows plus prediction columns, the contract's columns first: `body_part_pred`
    is the head's argmax and `body_part_prob` its probability (what a confidence floor is fitted on),
    `body_part_fed` the part the fracture head used (UNKNOWN below the floor)."""
    out = rows.copy()
    out["fracture_prob"] = np.concatenate([b.fracture_prob for b in batches]) if batches else np.zeros(0)
    out["uncalibrated_prob"] = (
        np.concatenate([b.uncalibrated_prob for b in batches]) if batches else np.zeros(0)
    )
    out["decision"] = (
        np.concatenate([b.decision for b in batches]).astype(int) if batches else np.zeros(0, int)
    )
    body_probs = np.concatenate([b.body_part_probs for b in batches]) if batches else np.zeros((0, 1))
    out["body_part_pred"] = [BODY_PARTS[i] for i in body_probs.argmax(axis=1)]
    out["body_part_prob"] = body_probs.max(axis=1)
    out["body_part_fed"] = [body_part_name(int(i)) for b in batches for i in b.body_part]
    out["body_part_used"] = [u for b in batches for u in b.body_part_used]
    if batches and all(b.feature_reasons for b in batches):  # layer 3's refusals, for evaluation
        out["scope_reasons"] = ["; ".join(r) for b in batches for r in b.feature_reasons]
    columns = [b.localisation_columns() for b in batches]
    if columns and all(columns):  # the map's boxes and peak per row, for localisation metrics
        out = out.assign(**{name: [v for c in columns for v in c[name]] for name in columns[0]})
    first = ["path", "study_id", "body_part", "label", "fracture_prob", "body_part_pred", "body_part_used"]
    first = [c for c in first if c in out.columns]
    return out[first + [c for c in out.columns if c not in first]]

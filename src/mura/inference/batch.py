"""`PredictionBatch`: what the predictor computes for N images at once, arrays first, records on demand.

Evaluation reads the arrays (thousands of cached rows become a table); every per-image surface asks for
`prediction(i)`, the typed `mura.prediction.Prediction`, so the decision rule, the tiers and the field
names live in one place.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mura.constants import BODY_PARTS
from mura.prediction import BodyPartOrigin, ModelIdentity, Prediction, decide
from mura.tiers import TierScale


@dataclass
class PredictionBatch:
    """N images' deployed probabilities and body parts, decided at one operating point."""

    fracture_prob: np.ndarray  # [N] deployed (calibrated) probability of fracture/abnormality
    uncalibrated_prob: np.ndarray  # [N] sigmoid of the margin before calibration (for reports)
    decision: np.ndarray  # [N] bool, fracture_prob >= threshold
    threshold: float
    operating_point: str
    body_part_probs: np.ndarray  # [N, 7] in BODY_PARTS order
    body_part: np.ndarray  # [N] index of the body part the fracture head used
    body_part_used: list[str]  # "given" | "predicted"
    runtime: str  # torch | onnx | torch+onnx
    tiers: TierScale  # the model's three tiers (`mura.tiers`)

    def __len__(self) -> int:
        return len(self.fracture_prob)

    def prediction(
        self,
        i: int,
        model: ModelIdentity,
        *,
        path: str | None = None,
        given_origin: BodyPartOrigin = "given",
        warnings: Sequence[str] = (),
    ) -> Prediction:
        """Image `i` as the typed record every surface returns; `given_origin` says where a given part came
        from (`given` by the caller, or read from `dicom` tags)."""
        used = self.body_part_used[i]
        probability = float(self.fracture_prob[i])
        return Prediction(
            path=path,
            fracture_probability=probability,
            decision=decide(probability, self.threshold),
            operating_point=self.operating_point,
            threshold=float(self.threshold),
            body_part=BODY_PARTS[int(self.body_part[i])],
            body_part_origin=given_origin if used == "given" else "predicted",
            body_part_probabilities=dict(zip(BODY_PARTS, map(float, self.body_part_probs[i]), strict=True)),
            warnings=list(warnings),
            **self.tiers.assign(probability)._asdict(),
            model=model,
        )

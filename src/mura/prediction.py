"""`Prediction`: the one record every surface returns for an image or a study.

`mura predict` (JSON lines and CSV), `mura.load(...).predict`, the HTTP service (its OpenAPI schema
derives from these classes) and the DICOM results are all made from this type, so a field means the
same thing everywhere and a new one (a finding, a refusal reason) is added once.

- `decision` is `abnormal` / `normal` at the named operating point, or `not_assessed`: the input is
  outside what the model can judge (`reasons` says why) and it carries no probability and no finding.
- `body_part_origin` is one vocabulary for where the body part came from: `given` by the caller (an
  argument, a form field, an index column), read from `dicom` tags, or `predicted` by the model.
- `model` names what answered: architecture(s), mura version and one SHA-256 for the whole ensemble.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from mura.constants import BODY_PARTS

Decision = Literal["abnormal", "normal", "not_assessed"]
DECISIONS: tuple[str, ...] = ("abnormal", "normal", "not_assessed")
NOT_ASSESSED = "not_assessed"
BodyPartOrigin = Literal["given", "dicom", "predicted"]
BodyPart = Literal[BODY_PARTS]  # type: ignore[valid-type]


def decide(probability: float, threshold: float) -> Decision:
    """The one rule: abnormal when the deployed probability reaches the threshold."""
    return "abnormal" if probability >= threshold else "normal"


class ModelIdentity(BaseModel):
    """What produced an answer: stable for one set of checkpoint files, different for any other."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(description="architecture, e.g. tf_efficientnet_lite2, or 'A + B' for an ensemble")
    version: str = Field(description="the mura version that answered")
    sha256: str = Field(description="SHA-256 of the checkpoint, or of the members' hashes for an ensemble")
    members: int = Field(ge=1, description="checkpoints in the ensemble")

    @classmethod
    def of(cls, names: Sequence[str], hashes: Sequence[str], version: str) -> ModelIdentity:
        """One identity for checkpoints `names` with file hashes `hashes` (order-independent)."""
        ordered = sorted(hashes)
        digest = ordered[0] if len(ordered) == 1 else hashlib.sha256("\n".join(ordered).encode()).hexdigest()
        return cls(name=" + ".join(dict.fromkeys(names)), version=version, sha256=digest, members=len(hashes))


class Finding(BaseModel):
    """A localised suspicion on one image, in the original (EXIF-upright) pixels."""

    box: tuple[float, float, float, float] = Field(description="x0, y0, x1, y1 in original pixels")
    score: float = Field(ge=0, le=1)
    operating_point: str = Field(description="the strictest named operating point the finding passes")


class Prediction(BaseModel):
    """One radiograph's answer."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["image", "study"] = "image"
    path: str | None = Field(None, description="the file (CLI, API) or upload name (service)")
    fracture_probability: float | None = Field(
        ge=0, le=1, description="calibrated probability of fracture/abnormality; null when not assessed"
    )
    decision: Decision
    operating_point: str = Field(description="the named threshold used, e.g. suspicious")
    threshold: float = Field(ge=0, le=1)
    body_part: BodyPart | None = Field(
        description="the body part the fracture head used; null if not assessed"
    )
    body_part_origin: BodyPartOrigin
    body_part_probabilities: dict[str, float] = Field(description="the body-part head's softmax, by name")
    warnings: list[str] = Field(default_factory=list, description="decoded, but not cleanly (one line each)")
    reasons: list[str] = Field(default_factory=list, description="why the input was not assessed")
    findings: list[Finding] = Field(default_factory=list, description="localised suspicions (boxes)")
    model: ModelIdentity

    @model_validator(mode="after")
    def _consistent(self) -> Prediction:
        if self.decision == NOT_ASSESSED:
            if not self.reasons:
                raise ValueError("a not_assessed prediction needs at least one reason")
            if self.fracture_probability is not None or self.findings:
                raise ValueError("a not_assessed prediction carries no probability and no finding")
        elif self.fracture_probability is None or self.body_part is None:
            raise ValueError(f"a {self.decision} prediction needs a probability and a body part")
        return self

    @property
    def assessed(self) -> bool:
        return self.decision != NOT_ASSESSED

    def flat(self) -> dict[str, object]:
        """One CSV row: lists joined with "; ", body-part probabilities as prob_<PART>, model_* columns."""
        row: dict[str, object] = self.model_dump(exclude={"body_part_probabilities", "model", "findings"})
        row["warnings"] = "; ".join(self.warnings)
        row["reasons"] = "; ".join(self.reasons)
        row["findings"] = len(self.findings)
        row.update({f"prob_{k}": v for k, v in self.body_part_probabilities.items()})
        row.update({f"model_{k}": v for k, v in self.model.model_dump().items()})
        return row


class StudyPrediction(Prediction):
    """A study: MURA's rule, the mean probability of its assessed views, decided at the same threshold."""

    kind: Literal["study"] = "study"
    views: int = Field(ge=0, description="views whose probability entered the mean")
    views_failed: int = Field(ge=0, description="views that could not be read")
    views_not_assessed: int = Field(0, ge=0, description="views read but out of the model's scope")


def csv_fields() -> list[str]:
    """The columns of `Prediction.flat` / a study's, in a fixed order (CSV header)."""
    names = [n for n in StudyPrediction.model_fields if n not in ("body_part_probabilities", "model")]
    names += [f"prob_{p}" for p in BODY_PARTS]
    return names + [f"model_{k}" for k in ModelIdentity.model_fields]

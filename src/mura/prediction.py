"""`Prediction`: the one record every surface returns for an image or a study.

`mura predict` (JSON lines and CSV), `mura.load(...).predict`, the HTTP service (its OpenAPI schema
derives from these classes) and the DICOM results are all made from this type, so a field means the
same thing everywhere and a new one (a finding, a refusal reason) is added once.

- `decision` is `abnormal` / `normal` at the named operating point, or `not_assessed`: the input is
  outside what the model can judge (`reasons` says why) and it carries no probability and no finding.
- `body_part_origin` is one vocabulary for where the body part came from: `given` by the caller (an
  argument, a form field, an index column), read from `dicom` tags, or `predicted` by the model;
  a predicted part below the head's confidence floor is `UNKNOWN` (the fracture head was not fed it).
- `tier` restates the probability in the words a reader acts on: `fracture_likely` (at or above the
  `definite` point), `possible_fracture` (at or above `suspicious`), `no_fracture_seen`; `tier_text`
  says it in plain words ("Abnormality likely" ... when the model's labels were abnormality labels)
  and `tier_figures` what the tier's operating point was validated at. The rule is `mura.tiers`.
- `model` names what answered: architecture(s), mura version, one SHA-256 for the whole ensemble and
  the decision origin (where its calibration and operating points were fitted: training or a site).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from mura.constants import BODY_PARTS, UNSURE_BODY_PART

Decision = Literal["abnormal", "normal", "not_assessed"]
DECISIONS: tuple[str, ...] = ("abnormal", "normal", "not_assessed")
NOT_ASSESSED = "not_assessed"
BodyPartOrigin = Literal["given", "dicom", "predicted"]
BodyPart = Literal[(*BODY_PARTS, UNSURE_BODY_PART)]  # type: ignore[valid-type]
# What label 1 meant in the data a model was trained on: fracture labels (FracAtlas, folder data sets)
# or abnormality labels (MURA: fractures, hardware, degenerative disease, ...).
PositiveClass = Literal["fracture", "abnormality"]
POSITIVE_CLASSES: tuple[str, ...] = ("fracture", "abnormality")
Tier = Literal["fracture_likely", "possible_fracture", "no_fracture_seen"]


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
    decision_origin: str | None = Field(
        None, description="where the calibration and operating points were fitted (training data or a site)"
    )

    @classmethod
    def of(
        cls, names: Sequence[str], hashes: Sequence[str], version: str, decision_origin: str | None = None
    ) -> ModelIdentity:
        """One identity for checkpoints `names` with file hashes `hashes` (order-independent)."""
        ordered = sorted(hashes)
        digest = ordered[0] if len(ordered) == 1 else hashlib.sha256("\n".join(ordered).encode()).hexdigest()
        return cls(
            name=" + ".join(dict.fromkeys(names)),
            version=version,
            sha256=digest,
            members=len(hashes),
            decision_origin=decision_origin,
        )


class Finding(BaseModel):
    """A localised suspicion on one image, in the original (EXIF-upright) pixels."""

    box: tuple[float, float, float, float] = Field(description="x0, y0, x1, y1 in original pixels")
    score: float = Field(ge=0, le=1)
    operating_point: str = Field(description="the strictest named operating point the finding passes")


class TierFigures(BaseModel):
    """What a tier's operating point was validated at: the figures a reader weighs the tier with."""

    model_config = ConfigDict(frozen=True)

    operating_point: str = Field(description="the stored point bounding the tier, e.g. definite")
    threshold: float = Field(ge=0, le=1, description="its threshold on the probability")
    sensitivity: float | None = Field(ge=0, le=1, description="null where the model does not record it")
    specificity: float | None = Field(ge=0, le=1)
    ppv: float | None = Field(ge=0, le=1, description="positive predictive value at `prevalence`")
    npv: float | None = Field(ge=0, le=1, description="negative predictive value at `prevalence`")
    prevalence: float | None = Field(ge=0, le=1, description="share of positives in the validation images")
    images: int | None = Field(ge=0, description="how many images the figures were measured on")
    validated_on: str | None = Field(
        description="where, e.g. out-of-fold predictions of 5-fold cross-validation (2826 images)"
    )


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
        description="the body part the fracture head used (UNKNOWN: none given and the body-part head "
        "was not confident); null if not assessed"
    )
    body_part_origin: BodyPartOrigin
    body_part_probabilities: dict[str, float] = Field(description="the body-part head's softmax, by name")
    warnings: list[str] = Field(default_factory=list, description="decoded, but not cleanly (one line each)")
    reasons: list[str] = Field(default_factory=list, description="why the input was not assessed")
    findings: list[Finding] = Field(default_factory=list, description="localised suspicions (boxes)")
    tier: Tier | None = Field(None, description="the probability in three tiers; null when not assessed")
    tier_text: str | None = Field(None, description='the tier in plain words, e.g. "Possible fracture"')
    tier_figures: TierFigures | None = Field(None, description="what the tier's point was validated at")
    model: ModelIdentity

    @model_validator(mode="after")
    def _consistent(self) -> Prediction:
        if self.decision == NOT_ASSESSED:
            if not self.reasons:
                raise ValueError("a not_assessed prediction needs at least one reason")
            if self.fracture_probability is not None or self.findings or self.tier is not None:
                raise ValueError("a not_assessed prediction carries no probability, finding or tier")
            if self.tier_text is not None or self.tier_figures is not None:
                raise ValueError("a not_assessed prediction carries no tier text or figures")
        elif self.fracture_probability is None or self.body_part is None:
            raise ValueError(f"a {self.decision} prediction needs a probability and a body part")
        elif self.tier is None or self.tier_text is None or self.tier_figures is None:
            raise ValueError(f"a {self.decision} prediction needs a tier, its text and its figures")
        return self

    @classmethod
    def refused(
        cls,
        path: str | None,
        reasons: Sequence[str],
        *,
        operating_point: str,
        threshold: float,
        model: ModelIdentity,
        warnings: Sequence[str] = (),
    ) -> Prediction:
        """The answer for an input the scope gate refused (any layer): its reasons, no probability, no
        body part, no finding."""
        return cls(
            path=path,
            fracture_probability=None,
            decision=NOT_ASSESSED,
            operating_point=operating_point,
            threshold=float(threshold),
            body_part=None,
            body_part_origin="predicted",
            body_part_probabilities={},
            warnings=list(warnings),
            reasons=list(reasons),
            model=model,
        )

    @property
    def assessed(self) -> bool:
        return self.decision != NOT_ASSESSED

    @property
    def body_part_words(self) -> str:
        """The body part as a reader should see it: "hand (from the DICOM header)", or, for
        UNSURE_BODY_PART, that the model did not recognise a part it was trained on with the confidence
        it was validated at (never a bare "UNKNOWN", which reads like a missing field)."""
        if self.body_part is None:
            return "body part not assessed"
        if self.body_part == UNSURE_BODY_PART:
            return "body part not recognised (not a trained part, or below the validated confidence)"
        origin = {"given": "given", "dicom": "from the DICOM header", "predicted": "predicted"}
        return f"{self.body_part.lower()} ({origin[self.body_part_origin]})"

    def flat(self) -> dict[str, object]:
        """One CSV row: lists joined with "; ", the findings as the JSON list the JSON lines carry (a box
        needs its four numbers, score and point together; `findings_count` for a spreadsheet's filter),
        body-part probabilities as prob_<PART>, tier figures as tier_<figure>, model_* columns."""
        nested = {"body_part_probabilities", "model", "findings", "tier_figures"}
        row: dict[str, object] = self.model_dump(exclude=nested)
        row["warnings"] = "; ".join(self.warnings)
        row["reasons"] = "; ".join(self.reasons)
        row["findings"] = json.dumps([finding.model_dump(mode="json") for finding in self.findings])
        row["findings_count"] = len(self.findings)
        row.update({f"prob_{k}": v for k, v in self.body_part_probabilities.items()})
        figures = (
            self.tier_figures.model_dump() if self.tier_figures else dict.fromkeys(TierFigures.model_fields)
        )
        row.update({f"tier_{k}": v for k, v in figures.items()})
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
    nested = ("body_part_probabilities", "model", "tier_figures")
    names = [n for n in StudyPrediction.model_fields if n not in nested]
    names.insert(names.index("findings") + 1, "findings_count")
    names += [f"prob_{p}" for p in BODY_PARTS]
    names += [f"tier_{k}" for k in TierFigures.model_fields]
    return names + [f"model_{k}" for k in ModelIdentity.model_fields]

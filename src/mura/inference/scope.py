"""The scope gate: whether the model may answer for an input at all, and if not, why, in words.

A fracture classifier gives a probability for anything it is fed: a CT slice, a photograph, a black
frame. Before any prediction, the gate checks what a file decodes to against the model's scope, in
layers, each a function whose reasons start with the layer's name ("dicom: ...", "pixels: ...") so a
report can count refusals per layer:

1. `dicom` (`mura.inference.scope_dicom`): SOP class, Modality, photometric interpretation and the
   body part the header names, against the parts the model was trained on (`ModelScope`).
2. `pixels` (`mura.inference.scope_pixels`): colour photographs, near-uniform and noise-like images.
3. `features` (`mura.inference.scope_features`): a detector fitted on the training films' features,
   scored from the prediction's own forward pass (so it decides after the model ran).

An input with reasons is answered `not_assessed` with them (no probability, no body part), unless a
researcher asks to score everything (`score_all`): then it is scored and the reasons become warnings.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from mura.constants import MURA_BODY_PARTS
from mura.data.images import DecodedImage
from mura.inference.scope_dicom import acquisition_reasons, body_part_reasons
from mura.inference.scope_pixels import pixel_reasons

DICOM_LAYER = "dicom"
PIXEL_LAYER = "pixels"
SCORED_ANYWAY = "out of scope, scored anyway"


def layer_reason(layer: str, reason: str) -> str:
    """A reason as reports count it: `"<layer>: <why>"`."""
    return f"{layer}: {reason}"


def reason_layer(reason: str) -> str:
    """The layer a reason came from (its prefix)."""
    return reason.split(":", 1)[0]


@dataclass(frozen=True)
class ModelScope:
    """The body parts a model was trained on (names as `mura.inference.scope_parts` uses them)."""

    parts: frozenset[str]

    @classmethod
    def of_members(cls, members: Sequence[Any]) -> ModelScope:
        """An ensemble judges only what every member was trained on: the members' common parts.

        Each member's parts come from its checkpoint (`CheckpointMeta.scope_parts`, in `member.info`);
        a checkpoint written before scopes were recorded holds MURA's seven parts.
        """
        parts = [frozenset(m.info.get("scope_parts") or MURA_BODY_PARTS) for m in members]
        return cls(frozenset.intersection(*parts) if parts else frozenset(MURA_BODY_PARTS))


def dicom_reasons(header: Mapping[str, Any], scope: ModelScope) -> list[str]:
    """Layer 1 on a DICOM header (tags by keyword): acquisition first, then the named body part."""
    found = acquisition_reasons(header) + body_part_reasons(header, scope.parts)
    return [layer_reason(DICOM_LAYER, r) for r in found]


def acquisition_problems(header: Mapping[str, Any]) -> list[str]:
    """Layer 1's acquisition rules alone: why the header is no projection radiograph (the DICOM node
    answers such an instance with nothing; see `mura.pacs.study`)."""
    return [layer_reason(DICOM_LAYER, r) for r in acquisition_reasons(header)]


def image_reasons(pixels: np.ndarray, colour_fraction: float = 0.0) -> list[str]:
    """Layer 2 on decoded pixels (a file's, an array's or a cache row's)."""
    return [layer_reason(PIXEL_LAYER, r) for r in pixel_reasons(pixels, colour_fraction)]


def scope_reasons(decoded: DecodedImage, scope: ModelScope) -> list[str]:
    """Every layer on a decoded file: [] when the model may answer for it."""
    reasons = dicom_reasons(decoded.dicom, scope) if decoded.dicom is not None else []
    return reasons + image_reasons(decoded.pixels, decoded.colour_fraction)


def scored_anyway(reasons: Iterable[str]) -> list[str]:
    """The gate's reasons as warnings, for an input scored with `score_all=True`."""
    return [f"{SCORED_ANYWAY}: {r}" for r in reasons]


def not_assessed_rows(
    images: Any, rows: pd.DataFrame, predictions: pd.DataFrame | None = None
) -> pd.DataFrame:
    """The cache rows (`images[cache_row]`, decoded films) the gate refuses: path, study_id, label,
    reasons ("; "-joined), layer (the first reason's). A cache holds grey pixels without headers, so layer 2
    applies, and layer 3 where `predictions` (`cache_predictions.predict_cache`) carry its `scope_reasons`."""
    by_features: dict[str, str] = {}
    if predictions is not None and "scope_reasons" in predictions:
        by_features = dict(zip(predictions["path"].astype(str), predictions["scope_reasons"], strict=True))
    found = []
    for row in rows.itertuples(index=False):
        reasons = image_reasons(np.asarray(images[int(row.cache_row)]))
        reasons += [r for r in by_features.get(str(row.path), "").split("; ") if r]
        if reasons:
            found.append(
                {
                    "path": row.path,
                    "study_id": row.study_id,
                    "label": row.label,
                    "layer": reason_layer(reasons[0]),
                    "reasons": "; ".join(reasons),
                }
            )
    return pd.DataFrame(found, columns=["path", "study_id", "label", "layer", "reasons"])

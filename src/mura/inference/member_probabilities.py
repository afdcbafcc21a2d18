"""One member's forward passes over a batch of inputs -> its probabilities, maps and layer-3 scores.

Why apart from the `Predictor`: what a single checkpoint says about some images (batched, with flip
TTA averaged, its own stored calibration applied to its margin, its map flipped back) is the same
whichever ensemble it sits in; the `Predictor` only averages members and decides. Keeping the
per-member step here keeps that averaging readable and gives each member's outputs names.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy.special import expit, softmax

from mura.constants import BODY_PARTS
from mura.inference.findings import map_probabilities
from mura.inference.members import Member


class MemberProbabilities(NamedTuple):
    """What one member says about N images."""

    fracture: np.ndarray  # [N] calibrated fracture probability (the member's stored calibration)
    uncalibrated: np.ndarray  # [N] sigmoid of the raw margin
    body_parts: np.ndarray  # [N, member's parts] body-part probabilities
    maps: np.ndarray | None  # [N, h, w] map probabilities; None without a map head
    scope_scores: np.ndarray | None  # [N] layer 3's scores of the unflipped view; None without a detector


def member_body_parts(member: Member) -> tuple[str, ...]:
    """A member's body-part classes, as its checkpoint records them."""
    return tuple(member.info.get("body_parts") or BODY_PARTS)


def member_probabilities(
    member: Member, images: np.ndarray, parts: np.ndarray, *, batch_size: int, tta: bool
) -> MemberProbabilities:
    """uint8 [N, size, size] images (the member's input spec) and body parts [N] (-1: predict it) -> its
    probabilities, `batch_size` images per forward pass; `tta` averages each image with its mirror."""
    fracture, raw, body, maps, scores = [], [], [], [], []
    for start in range(0, len(parts), batch_size):
        x = np.asarray(member.preprocessing.normalize(images[start : start + batch_size, None]))
        p = parts[start : start + batch_size]
        views = [x, x[..., ::-1].copy()] if tta else [x]
        outputs = [member.run(view, p) for view in views]
        margins = [(o.fracture_logits[:, 1] - o.fracture_logits[:, 0]).astype(np.float64) for o in outputs]
        fracture.append(np.mean([member.decision.probabilities(m) for m in margins], axis=0))
        raw.append(np.mean([expit(m) for m in margins], axis=0))
        parts_probs = [softmax(o.body_part_logits.astype(np.float64), axis=1) for o in outputs]
        body.append(np.mean(parts_probs, axis=0))
        if outputs[0].fracture_map is not None:
            maps.append(map_probabilities([o.fracture_map for o in outputs], [False, True][: len(views)]))
        if outputs[0].scope_scores is not None:
            scores.append(outputs[0].scope_scores)
    if not fracture:
        none = np.zeros(0) if member.scope_detector is not None else None
        return MemberProbabilities(
            np.zeros(0), np.zeros(0), np.zeros((0, len(member_body_parts(member)))), None, none
        )
    return MemberProbabilities(
        np.concatenate(fracture),
        np.concatenate(raw),
        np.concatenate(body),
        np.concatenate(maps) if maps else None,
        np.concatenate(scores) if scores else None,
    )

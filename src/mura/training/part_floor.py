"""What a body-part guess must reach to be trusted, and the training that teaches the "unknown" embedding.

`fit_body_part_floor`: on held-out films whose part is known (validation predictions in `mura train`,
out-of-fold predictions in `mura cv`), the lowest top probability such that the films the head is at
least that sure of are named correctly at `BODY_PART_ACCURACY` (95%) or better. Below it a prediction
reports the part UNKNOWN and the fracture head gets the unknown-part embedding (`mura.models.heads`).
With no film of a known part, or when even the surest films miss the target, the floor is 1.0: no guess
is trusted, because nothing showed that one can be.

`drop_body_parts`: during training a share of films (`UNKNOWN_PART_SHARE`, 15%) have their given part
hidden from the fracture head (the body-part loss still sees it), so the unknown embedding learns to
stand for "any part" and a film whose part is not known is judged without a made-up one.
"""

from __future__ import annotations

import numpy as np
import torch

BODY_PART_ACCURACY = 0.95
UNKNOWN_PART_SHARE = 0.15
NO_TRUSTED_GUESS = 1.0


def fit_body_part_floor(top: np.ndarray, correct: np.ndarray, accuracy: float = BODY_PART_ACCURACY) -> float:
    """The lowest top probability whose films (all those at least as sure) reach `accuracy`, from each
    held-out film of a known part: the head's top probability and whether its argmax was right."""
    top, correct = np.asarray(top, dtype=np.float64), np.asarray(correct, dtype=bool)
    if not len(top):
        return NO_TRUSTED_GUESS
    order = np.argsort(-top, kind="stable")
    running = np.cumsum(correct[order]) / np.arange(1, len(order) + 1)
    reached = np.flatnonzero(running >= accuracy)
    return float(top[order][reached[-1]]) if len(reached) else NO_TRUSTED_GUESS


def floor_from_probabilities(body_part_probs: np.ndarray, true_parts: np.ndarray) -> float:
    """`fit_body_part_floor` on [N, parts] probabilities; films whose true part is unknown (-1) or
    outside the head's classes do not count."""
    probs = np.asarray(body_part_probs, dtype=np.float64).reshape(len(true_parts), -1)
    truth = np.asarray(true_parts, dtype=np.int64)
    known = (truth >= 0) & (truth < probs.shape[1])
    held_out = probs[known]
    return fit_body_part_floor(held_out.max(axis=1, initial=0.0), held_out.argmax(axis=1) == truth[known])


def drop_body_parts(
    body_part: torch.Tensor, generator: torch.Generator, share: float = UNKNOWN_PART_SHARE
) -> torch.Tensor:
    """The parts the fracture head is fed in training: `share` of the given ones hidden as -1."""
    hide = torch.rand(body_part.shape, generator=generator) < share
    return torch.where(hide.to(body_part.device), torch.full_like(body_part, -1), body_part)

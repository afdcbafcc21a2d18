"""Train/validation/test assignment that never lets one patient (or one study's neighbours) straddle splits.

Images of one patient look alike (same anatomy, same scanner), so an image-level split leaks and
inflates validation scores; the patient split is the default. `image` reproduces the spec's random
split (29,446 / 7,362 of MURA's 36,808 training images). Sources without patient ids (FracAtlas, class
folders) are split in blocks of consecutive ids, because neighbouring ids are often views of one study.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from mura.errors import MuraError

SPLIT_UNITS = ("patient", "image")


def split_train_val(
    frame: pd.DataFrame, unit: str = "patient", val_fraction: float = 0.2, seed: int = 0
) -> pd.Series:
    """Return "train"/"val" for each row of `frame` (rows of MURA's train folder).

    Patient unit: per body part, patients are shuffled and moved to val while that brings val closer to
    round(val_fraction x images) of that part, so every body part keeps its share in both splits.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise MuraError(f"val fraction must be in [0, 1), got {val_fraction}")
    if unit not in SPLIT_UNITS:
        raise MuraError(f"split unit must be one of {SPLIT_UNITS}, got {unit!r}")
    result = pd.Series("train", index=frame.index, dtype=object)
    if frame.empty or val_fraction == 0:
        return result
    rng = np.random.default_rng(seed)
    if unit == "image":
        n_val = round(val_fraction * len(frame))
        chosen = rng.permutation(len(frame))[:n_val]
        result.iloc[chosen] = "val"
        return result
    # A patient belongs to the body part of their first study (a few MURA patients have several).
    first_part = frame.groupby("patient_id", sort=True)["body_part"].first()
    images_per_patient = frame.groupby("patient_id", sort=True).size()
    val_patients: set[str] = set()
    for part in sorted(first_part.unique()):
        patients = first_part.index[first_part == part].to_numpy()
        patients = patients[rng.permutation(len(patients))]
        target = round(val_fraction * images_per_patient[patients].sum())
        taken = 0
        for patient in patients:  # take a patient only if it brings val closer to its target
            n_images = int(images_per_patient[patient])
            if abs(taken + n_images - target) < abs(taken - target):
                val_patients.add(patient)
                taken += n_images
    result[frame["patient_id"].isin(val_patients)] = "val"
    return result


def _numeric_key(name: str) -> tuple[int, str]:
    digits = re.findall(r"\d+", name)
    return (int(digits[-1]) if digits else -1, name)


def block_ids(names: Sequence[str], block_size: int = 20, by_number: bool = True) -> np.ndarray:
    """Block number of each name. With `by_number` (ids such as IMG0000019), block = number // block_size,
    so a gap in the numbering never joins two blocks; otherwise blocks of consecutive sorted names."""
    keys = [_numeric_key(n) for n in names]
    if by_number and all(k[0] >= 0 for k in keys):
        return np.array([k[0] // block_size for k in keys])
    order = np.argsort(np.array([str(n) for n in names], dtype=object), kind="stable")
    blocks = np.empty(len(names), dtype=int)
    blocks[order] = np.arange(len(names)) // block_size
    return blocks


def split_blocks(
    names: Sequence[str],
    fractions: dict[str, float],
    seed: int = 0,
    block_size: int = 20,
    by_number: bool = True,
) -> list[str]:
    """Assign whole blocks of consecutive ids to the splits in `fractions` (image-count shares)."""
    total = sum(fractions.values())
    if not names:
        return []
    if total <= 0 or any(f < 0 for f in fractions.values()):
        raise MuraError(f"split fractions must be non-negative and not all zero: {fractions}")
    blocks = block_ids(names, block_size, by_number)
    unique, counts = np.unique(blocks, return_counts=True)
    order = np.random.default_rng(seed).permutation(len(unique))
    # Walk the shuffled blocks, filling each split up to its share of images, in the order given.
    targets = np.cumsum([fractions[s] / total * len(names) for s in fractions])
    split_names = list(fractions)
    assignment: dict[int, str] = {}
    filled, current = 0, 0
    for i in order:
        while current < len(split_names) - 1 and filled >= targets[current] - counts[i] / 2:
            current += 1
        assignment[int(unique[i])] = split_names[current]
        filled += int(counts[i])
    return [assignment[int(b)] for b in blocks]


def fold_groups(frame: pd.DataFrame, block_size: int = 20) -> np.ndarray:
    """The unit kept whole in one fold: the patient where the index has one, else a block of ids."""
    patients = (
        frame["patient_id"].astype(str).to_numpy() if "patient_id" in frame else np.full(len(frame), "")
    )
    names = frame["study_id"].astype(str) if "study_id" in frame else frame["path"].astype(str)
    blocks = block_ids([Path(n).name for n in names], block_size)
    return np.array([f"p:{p}" if p else f"b:{b}" for p, b in zip(patients, blocks, strict=True)])


def assign_folds(frame: pd.DataFrame, folds: int, block_size: int = 20, seed: int = 0) -> np.ndarray:
    """Fold 0..folds-1 of each row; whole groups (patients / id blocks) per fold, balanced in images and
    in positives (each group goes to the fold furthest below its share of both)."""
    if folds < 2:
        raise MuraError(f"cross-validation needs at least 2 folds, got {folds}")
    groups = fold_groups(frame, block_size)
    unique, inverse = np.unique(groups, return_inverse=True)
    if len(unique) < folds:
        raise MuraError(f"only {len(unique)} patients / id blocks: too few for {folds} folds")
    labels = frame["label"].to_numpy(dtype=int)
    sizes = np.bincount(inverse)
    positives = np.bincount(inverse, weights=labels)
    order = np.random.default_rng(seed).permutation(len(unique))
    order = order[np.argsort(-sizes[order], kind="stable")]  # big groups first, ties in random order
    fold_images, fold_positives = np.zeros(folds), np.zeros(folds)
    total_images, total_positives = max(1, len(frame)), max(1.0, float(labels.sum()))
    assignment = np.empty(len(unique), dtype=int)
    for group in order:
        load = fold_images / total_images + fold_positives / total_positives
        chosen = int(np.argmin(load))
        assignment[group] = chosen
        fold_images[chosen] += sizes[group]
        fold_positives[chosen] += positives[group]
    return assignment[inverse]


def fold_split(
    frame: pd.DataFrame,
    folds: int,
    fold: int,
    pooled: Sequence[str],
    names: tuple[str, str] = ("train", "val"),
    block_size: int = 20,
) -> pd.Series:
    """Split column for one fold: rows of the pooled splits in `fold` -> names[1], the rest -> names[0];
    rows of other splits -> "" (unused)."""
    if not 0 <= fold < folds:
        raise MuraError(f"fold {fold} is not one of 0..{folds - 1}")
    unknown = sorted(set(pooled) - set(frame["split"]))
    if unknown:
        have = sorted(set(frame["split"]))
        raise MuraError(f"cross-validation splits {unknown} are not in the index (it has {have})")
    result = pd.Series("", index=frame.index, dtype=object)
    inside = frame["split"].isin(list(pooled)).to_numpy()
    assigned = assign_folds(frame[inside], folds, block_size)
    result[inside] = np.where(assigned == fold, names[1], names[0])
    return result

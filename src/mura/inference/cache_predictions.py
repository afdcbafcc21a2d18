"""Predicting prepared caches: the rows `mura evaluate`, `mura calibrate` and `mura cv` score.

Why apart from the `Predictor`: files and uploads reach the engine one batch at a time, while a cache
is a whole index read in chunks, with its own questions (which cache serves which member's input size,
which rows a split or a fold selects, whether a second cache holds the same rows) and its own answer,
a frame aligned with the index rather than `Prediction`s. The pixels are exactly the cached ones: a
cache of another size or resize mode than a member's is refused, never resized a second time.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from mura.constants import UNKNOWN_BODY_PART, body_part_index
from mura.errors import MuraError
from mura.inference.batch import cache_frame

if TYPE_CHECKING:
    from mura.inference.predictor import InputSpec, Predictor

BODY_PART_MODES = ("given", "predicted")


def caches_for_members(predictor: Predictor, caches: Sequence[Any]) -> dict[InputSpec, Any]:
    """For each input spec the cache prepared at that size and resize mode; one line naming the fix."""
    from mura.data.cache import open_cache

    opened = [open_cache(c) if isinstance(c, str | Path) else c for c in caches]
    by_spec: dict[InputSpec, Any] = {}
    for cache in opened:
        by_spec.setdefault(cache.settings.input_spec, cache)
    for member in predictor.members:
        spec = (member.preprocessing.size, member.preprocessing.resize_mode)
        if spec not in by_spec:
            have = ", ".join(f"{c.directory} ({size} px {mode})" for (size, mode), c in by_spec.items())
            raise MuraError(
                f"{member.source}: takes {spec[0]} px {spec[1]} images but no cache given is prepared "
                f"that way (given: {have}); run `mura prepare INDEX --size {spec[0]} --resize {spec[1]} "
                "--out DIR` and give that cache too"
            )
    return {spec: by_spec[spec] for spec in predictor.input_specs}


def predict_cache(
    predictor: Predictor,
    cache: Any,
    split: str | None = "test",
    body_part_mode: str = "given",
    progress: bool = False,
    paths: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Predict every cached image of `split` (None = all); rows keep the first cache's order and labels.

    `cache` is one cache (directory or opened) or a list of them, one per input size of the members
    (an ensemble of 224 and 288 px models needs a 224 and a 288 px cache of the same index).
    `given` feeds each row's body part (unknown rows fall back to predicted); `predicted` ignores it.
    `paths` restricts the rows to these images (e.g. one cross-validation fold).
    """
    if body_part_mode not in BODY_PART_MODES:
        raise MuraError(f"body_part_mode must be one of {BODY_PART_MODES}, not {body_part_mode!r}")
    caches = caches_for_members(predictor, cache if isinstance(cache, list | tuple) else [cache])
    first = next(iter(caches.values()))
    rows = first.index if split is None else first.index[first.index["split"] == split]
    if paths is not None:
        rows = rows[rows["path"].astype(str).isin(set(map(str, paths)))]
    paths = rows["path"].astype(str).tolist()
    positions: dict[InputSpec, np.ndarray] = {}
    for spec, each in caches.items():
        lookup = pd.Series(each.index["cache_row"].to_numpy(), index=each.index["path"].astype(str))
        missing = [p for p in paths if p not in lookup.index]
        if missing:
            raise MuraError(
                f"{each.directory}: holds no row for {missing[0]} (and {len(missing) - 1} more) that "
                f"{first.directory} has: prepare both caches from the same index"
            )
        positions[spec] = lookup.loc[paths].to_numpy(dtype=np.int64)
    if body_part_mode == "given":
        parts = np.array([body_part_index(v) if isinstance(v, str) else -1 for v in rows["body_part"]])
    else:
        parts = np.full(len(rows), UNKNOWN_BODY_PART)
    chunk = predictor.batch_size * 8
    starts = range(0, len(rows), chunk)
    if progress:
        from tqdm import tqdm

        starts = tqdm(starts, desc=f"predict {split or 'all'}", unit="chunk")
    batches = []
    for start in starts:
        arrays = {
            spec: np.asarray(caches[spec].images[positions[spec][start : start + chunk]]) for spec in caches
        }
        batches.append(predictor.predict_arrays(arrays, parts[start : start + chunk]))
    return cache_frame(rows, batches)

"""The boxes table of an index: one row per box, in a film's original (EXIF-upright) pixels.

`mura index` writes it beside the index (`index.csv` -> `index.boxes.csv`, `BOX_COLUMNS`): `x0, y0, x1, y1`
(x to the right, y down), the film's upright `width` and `height` (so a box maps into any model's input
frame without opening the film: `mura.preprocessing.Preprocessing.boxes_to_input`), where it came from
and, when the annotation had one, its polygon (COCO-style JSON, same pixels). `mura prepare` carries the
boxes into the cache, mapped into the cache's input frame (`cache_boxes`). Inconsistencies between boxes
and labels are counted, one warning line each, never silently dropped or silently kept.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from mura.atomic import atomic_path, write_text
from mura.errors import MuraError
from mura.preprocessing import Preprocessing

BOX_COLUMNS = ("path", "x0", "y0", "x1", "y1", "width", "height", "source", "polygon")
COORDINATES = ["x0", "y0", "x1", "y1"]
AGREEMENT_PX = 1.0  # two sources agree on a box when every edge is within this many pixels
CACHE_BOXES_FILE = "boxes.csv"  # in a cache: cache_row, x0..y1 in the cache's input pixels, source

Warn = Callable[[str], None]


def boxes_path(index_path: str | Path) -> Path:
    """Where the boxes of an index live: beside it, `index.csv` -> `index.boxes.csv`."""
    index_path = Path(index_path)
    return index_path.with_name(f"{index_path.stem}.boxes.csv")


def boxes_beside(index_path: str | Path) -> pd.DataFrame | None:
    """The boxes `mura index` wrote beside an index file, or None when it wrote none."""
    path = boxes_path(index_path)
    return read_boxes(path) if path.is_file() else None


def empty_boxes() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=float if c in COORDINATES else object) for c in BOX_COLUMNS})


def box_disagreements(
    first: pd.DataFrame, second: pd.DataFrame, tolerance: float = AGREEMENT_PX
) -> list[str]:
    """Films whose two box sets differ: another count, or a box with no partner within `tolerance` px."""
    grouped = {name: group[COORDINATES].to_numpy() for name, group in second.groupby("path")}
    problems = []
    for film in sorted(set(first["path"]) | set(grouped)):
        mine = first.loc[first["path"] == film, COORDINATES].to_numpy()
        theirs = grouped.get(film, np.empty((0, 4)))
        if len(mine) != len(theirs):
            problems.append(f"{Path(film).name}: {len(mine)} boxes vs {len(theirs)}")
            continue
        for box in mine:
            if np.abs(theirs - box).max(axis=1).min() > tolerance:
                problems.append(f"{Path(film).name}: box {np.round(box, 1).tolist()} has no partner")
                break
    return problems


def check_boxes(frame: pd.DataFrame, boxes: pd.DataFrame, warn: Warn) -> pd.DataFrame:
    """Count every inconsistency between boxes and index (one line each); return the boxes kept.

    Boxes on films labelled negative are kept (FracAtlas's IMG0003298 is one: its folder says fractured)
    so a user can decide; boxes reaching outside their film are clipped, those with nothing left dropped.
    """
    limits = boxes[["width", "height", "width", "height"]].to_numpy(dtype=float)
    coordinates = boxes[COORDINATES].to_numpy(dtype=float)
    clipped = np.clip(coordinates, 0.0, limits)
    outside = np.abs(clipped - coordinates).max(axis=1, initial=0.0) > AGREEMENT_PX
    empty = (clipped[:, 2] <= clipped[:, 0]) | (clipped[:, 3] <= clipped[:, 1])
    if outside.any() or empty.any():
        first = boxes["path"].iloc[int(np.argmax(outside | empty))]
        warn(
            f"{int((outside | empty).sum())} boxes reach outside their film or are empty: clipped, "
            f"{int(empty.sum())} with nothing left dropped (first: {first})"
        )
    kept = boxes.assign(**{c: clipped[:, i] for i, c in enumerate(COORDINATES)})[~empty].reset_index(
        drop=True
    )
    labels = dict(zip(frame["path"], frame["label"], strict=True))
    on_negative = kept[kept["path"].map(labels) == 0]
    if len(on_negative):
        warn(
            f"{len(on_negative)} boxes lie on {on_negative['path'].nunique()} films labelled negative, kept "
            f"(first: {on_negative['path'].iloc[0]})"
        )
    boxed = set(kept["path"])
    unboxed = [p for p, label in labels.items() if label == 1 and p not in boxed]
    if unboxed:
        warn(f"{len(unboxed)} films labelled positive have no box (first: {unboxed[0]})")
    return kept


def write_boxes(boxes: pd.DataFrame, path: str | Path) -> Path:
    """Write a boxes CSV atomically (coordinates rounded to 1/100 px)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        boxes[list(BOX_COLUMNS)].round({c: 2 for c in COORDINATES}).to_csv(tmp, index=False)
    return path


def write_index_boxes(boxes: pd.DataFrame | None, index_path: str | Path) -> Path | None:
    """Write an index's boxes beside it; with none, remove an older boxes file there (a stale one would
    give the new index's cache boxes of other films)."""
    path = boxes_path(index_path)
    if boxes is None:
        path.unlink(missing_ok=True)
        return None
    return write_boxes(boxes, path)


def read_boxes(path: str | Path) -> pd.DataFrame:
    """Read a boxes CSV written by `write_boxes` (`mura index`): one row per box, original pixels."""
    path = Path(path)
    try:
        table = pd.read_csv(path, dtype={"path": str, "source": str, "polygon": str}, keep_default_na=False)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise MuraError(f"{path}: not a readable boxes CSV ({exc}); rerun `mura index`") from None
    missing = [c for c in BOX_COLUMNS if c not in table.columns]
    if missing:
        raise MuraError(f"{path}: boxes CSV lacks columns {missing}; rerun `mura index`")
    return table


def cache_boxes(
    boxes: pd.DataFrame, cached_index: pd.DataFrame, preprocessing: Preprocessing
) -> pd.DataFrame:
    """The boxes of the cached rows in the cache's input frame: `cache_row`, x0..y1 in input px, source."""
    rows = dict(zip(cached_index["path"].astype(str), cached_index["cache_row"], strict=True))
    chosen = boxes[boxes["path"].astype(str).isin(rows)]
    mapped = np.empty((len(chosen), 4))
    for i, record in enumerate(chosen.itertuples(index=False)):
        corners = [record.x0, record.y0, record.x1, record.y1]
        mapped[i] = preprocessing.boxes_to_input(np.array(corners), int(record.width), int(record.height))[0]
    table = pd.DataFrame(mapped.round(3), columns=COORDINATES)
    table.insert(0, "cache_row", chosen["path"].astype(str).map(rows).to_numpy())
    table["source"] = chosen["source"].to_numpy()
    return table.sort_values("cache_row", kind="stable").reset_index(drop=True)


def write_cache_boxes(
    folder: Path, boxes: pd.DataFrame | None, cached_index: pd.DataFrame, preprocessing: Preprocessing
) -> None:
    """A cache's boxes.csv from its index's boxes (None: any old one removed)."""
    if boxes is None:
        (folder / CACHE_BOXES_FILE).unlink(missing_ok=True)
        return
    write_text(folder / CACHE_BOXES_FILE, cache_boxes(boxes, cached_index, preprocessing).to_csv(index=False))


def read_cache_boxes(directory: str | Path) -> dict[int, np.ndarray]:
    """A cache's boxes by cache row: float [K, 4] in input pixels (no entry: the film has no box)."""
    path = Path(directory) / CACHE_BOXES_FILE
    if not path.is_file():
        return {}
    table = pd.read_csv(path)
    return {int(row): group[COORDINATES].to_numpy(float) for row, group in table.groupby("cache_row")}

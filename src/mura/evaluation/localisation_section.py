"""The localisation part of a report: its one-line headline, the metrics with their CIs, and a few films.

Why a few films beside the figures: AP50 and FROC say how often the boxes are right; whoever decides to
trust them also needs to see what a hit, the worst false box and a missed fracture look like. The films
are chosen among what a reader would be shown, the findings (candidate boxes whose score reaches the
lowest finding point, `mura.inference.findings`), deterministically:
- **best**: the fractured film whose finding overlaps a true box most (IoU, then score);
- **worst**: the film of the highest-scored finding that overlaps no true box by `IOU_MATCH` (the first
  false box a worklist sorted by score shows);
- **miss**: of the fractured films where no finding overlaps a true box by `IOU_MATCH`, the one the model
  scored highest (it called the film and pointed elsewhere, or drew nothing).
Everything is in the cache's input frame (the cache's pixels, its boxes and `predict_cache`'s
`map_boxes` share it), so a film is drawn as the model saw it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mura.decision import DEFINITE
from mura.evaluation.localisation import FP_PER_FILM, IOU_MATCH, NO_MAP_OUTPUT, box_iou
from mura.evaluation.summary import interval_text
from mura.evaluation.tables import Image, Table
from mura.inference.findings import finding_thresholds

FILM_KINDS = ("best", "worst", "miss")
FILM_CAPTIONS = {
    "best": "Best: the fractured film whose finding overlaps a true box most",
    "worst": "Worst: the highest-scored finding that overlaps no true box",
    "miss": "A miss: the highest-scored fractured film where no finding overlaps a true box",
}


@dataclass(frozen=True)
class FilmExample:
    """One film to draw: its cache row, true boxes [K, 4], findings [M, 4] with scores [M] (best first)."""

    kind: str
    cache_row: int
    path: str
    truth: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray


def localisation_text(localisation: Mapping[str, Any]) -> str:
    """e.g. "AP50 0.412 [0.301, 0.520] on 80 fractured films; FROC sensitivity at 0.5 / 1 / 2 false boxes
    per film 0.310 [...] / ... on 400 films; pointing game 0.700 [...]", or the no-map sentence."""
    if "ap50" not in localisation:
        return str(localisation.get("status", NO_MAP_OUTPUT))
    froc = " / ".join(interval_text(localisation["froc"][f"{rate:g}"]) for rate in FP_PER_FILM)
    pointing = localisation.get("pointing_game")
    return (
        f"AP50 {interval_text(localisation['ap50'])} on {localisation['films_with_boxes']:,} films with a "
        f"true box; FROC sensitivity at {' / '.join(f'{r:g}' for r in FP_PER_FILM)} false boxes per film "
        f"{froc} on {localisation['films']:,} films; pointing game "
        f"{interval_text(pointing) if pointing else 'undefined'}"
    )


def finding_points(result: Mapping[str, Any]) -> dict[str, float]:
    """The points a finding is graded at for this report's model (suspicious / definite where stored)."""
    point = result["meta"]["deployed_point"]
    return finding_thresholds(result["thresholds"], point, result["thresholds"][point])


def example_films(
    predictions: pd.DataFrame, truth_by_row: Mapping[int, np.ndarray], points: Mapping[str, float]
) -> list[FilmExample]:
    """The best, worst and missed films (each where one exists) among the predicted rows (`cache_row`,
    `map_boxes`, `fracture_prob`, `path`), findings being the boxes scored at or above `points`' lowest."""
    if "map_boxes" not in predictions or not len(predictions):
        return []
    lowest = min(points.values())
    films = []
    for row, path, boxes_json in zip(
        predictions["cache_row"].astype(int),
        predictions["path"].astype(str),
        predictions["map_boxes"],
        strict=True,
    ):
        found = np.asarray(json.loads(boxes_json), float).reshape(-1, 5)
        found = found[np.argsort(-found[:, 4], kind="stable")]
        found = found[found[:, 4] >= lowest]
        truth = np.asarray(truth_by_row.get(row, np.empty((0, 4))), float).reshape(-1, 4)
        films.append(FilmExample("", row, path, truth, found[:, :4], found[:, 4]))
    overlap = [box_iou(f.boxes, f.truth) for f in films]  # [M, K] per film
    best_iou = np.array([o.max() if o.size else 0.0 for o in overlap])
    fractured = np.array([len(f.truth) > 0 for f in films])
    probability = predictions["fracture_prob"].to_numpy(float)
    chosen: dict[str, int] = {}
    if (fractured & (best_iou > 0)).any():
        top_score = np.array([f.scores[0] if len(f.scores) else 0.0 for f in films])
        order = np.lexsort((-top_score, -best_iou))
        chosen["best"] = int(next(i for i in order if fractured[i] and best_iou[i] > 0))
    false_scores = [
        f.scores[(o.max(axis=1) if o.shape[1] else np.zeros(len(f.scores))) < IOU_MATCH]
        for f, o in zip(films, overlap, strict=True)
    ]
    worst_score = np.array([s.max() if len(s) else -1.0 for s in false_scores])
    if (worst_score >= 0).any():
        chosen["worst"] = int(np.argmax(worst_score))
    missed = fractured & (best_iou < IOU_MATCH)
    if missed.any():
        chosen["miss"] = int(np.argmax(np.where(missed, probability, -1.0)))
    return [
        FilmExample(kind, films[i].cache_row, films[i].path, films[i].truth, films[i].boxes, films[i].scores)
        for kind, i in chosen.items()
    ]


def localisation_blocks(
    localisation: Mapping[str, Any], points: Mapping[str, float], films: Mapping[str, Path | None]
) -> list[object]:
    """The report's localisation section: the figures with their CIs, then the films drawn (`films` by
    kind); a model without a map gets one sentence, as nothing else stands in for its boxes."""
    if "ap50" not in localisation:
        return [f"{localisation.get('status', NO_MAP_OUTPUT)}."]
    pointing = localisation.get("pointing_game")
    boxed, all_films = localisation["films_with_boxes"], localisation["films"]
    rows: list[tuple[object, ...]] = [
        ("Box AP50", interval_text(localisation["ap50"]), f"{boxed:,} films with a true box"),
        *(
            (
                f"FROC sensitivity at {rate:g} false box(es) per film",
                interval_text(localisation["froc"][f"{rate:g}"]),
                f"{all_films:,} films, {localisation['true_boxes']:,} true boxes",
            )
            for rate in FP_PER_FILM
        ),
        (
            "Pointing game",
            interval_text(pointing) if pointing else "undefined",
            f"{boxed:,} films with a true box",
        ),
    ]
    graded = ", ".join(f"{name} {value:.3f}" for name, value in points.items())
    blocks: list[object] = [
        Table(
            ("Localisation", "Estimate [95% CI]", "Over"),
            rows,
            "Boxes from the model's fracture map, each scored image probability x region peak. AP50: "
            "FracAtlas's protocol (COCO matching at IoU 0.5, 101-point interpolation) on the films with a "
            "true box; FROC: share of true boxes found where the false boxes per film reach each rate, over "
            "all films; pointing game: the map peak inside a true box. Percentile bootstrap CIs over films.",
        ),
        f"Films: true boxes green; findings (boxes scored at or above {graded}) dotted below "
        f"`{DEFINITE}`, solid at or above it, as the page and the DICOM captures draw them.",
    ]
    blocks += [Image(films[kind], FILM_CAPTIONS[kind]) for kind in FILM_KINDS if kind in films]
    if not films:
        blocks.append("No film to show: no fractured film and no finding among these films.")
    return blocks

"""Localisation metrics: box AP50, FROC sensitivity and the pointing game, each with a bootstrap CI.

All boxes are `[x0, y0, x1, y1]` in one frame per film (original pixels, as the index's boxes). Per film:
`truth` [K, 4] (K = 0 on a film without a fracture), predicted `boxes` [M, 4] with `scores` [M].
- **AP50** (FracAtlas's protocol, as YOLO reports mAP50): over the films with at least one true box,
  predictions ranked by score, each matched greedily to the unmatched true box of its film it overlaps
  most when IoU >= 0.5 (COCO's rule), precision interpolated at COCO's 101 recall points.
- **FROC**: over all films, the share of true boxes found (the same matching) at the score threshold where
  unmatched boxes per film first reach 0.5, 1 and 2: what a reader meets in a worklist of mixed films.
- **Pointing game**: on the films with a true box, whether the peak of the model's map (one point per
  film, in the same frame) falls inside any true box; the metric needs no box output, so it scores a
  Grad-CAM as well as a localisation head.
CIs are percentile bootstraps over films (a film's boxes are not independent of each other): each
resample is a vector of film weights, so the ranking and matching are done once, not per resample.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

FP_PER_FILM = (0.5, 1.0, 2.0)
IOU_MATCH = 0.5
RECALL_POINTS = np.linspace(0.0, 1.0, 101)  # COCO's interpolation
_CHUNK = 128  # bootstrap resamples scored at once


def box_iou(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """IoU of every box of `first` [N, 4] with every box of `second` [M, 4] -> [N, M]."""
    a, b = np.asarray(first, float).reshape(-1, 4), np.asarray(second, float).reshape(-1, 4)
    x0, y0 = np.maximum(a[:, None, 0], b[None, :, 0]), np.maximum(a[:, None, 1], b[None, :, 1])
    x1, y1 = np.minimum(a[:, None, 2], b[None, :, 2]), np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = lambda boxes: (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])  # noqa: E731
    union = area(a)[:, None] + area(b)[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


@dataclass(frozen=True)
class Detections:
    """Every predicted box of a set of films, ranked by score, with whether it matched a true box."""

    film: np.ndarray  # int [P]: the film of each prediction, best score first
    score: np.ndarray  # float [P], descending
    hit: np.ndarray  # bool [P]: matched a true box (IoU >= `iou`) not matched by a better-scored box
    truths: np.ndarray  # int [F]: true boxes per film
    iou: float = IOU_MATCH


def match_detections(
    truth: list[np.ndarray], boxes: list[np.ndarray], scores: list[np.ndarray], iou: float = IOU_MATCH
) -> Detections:
    """Greedy COCO matching per film: best score first, each to the free true box it overlaps most."""
    if not len(truth) == len(boxes) == len(scores):
        raise ValueError(f"{len(truth)} films of truth, {len(boxes)} of boxes, {len(scores)} of scores")
    films, ranked, hits = [], [], []
    for index, (true, found, score) in enumerate(zip(truth, boxes, scores, strict=True)):
        true, found = np.asarray(true, float).reshape(-1, 4), np.asarray(found, float).reshape(-1, 4)
        score = np.asarray(score, float).reshape(-1)
        order = np.argsort(-score, kind="stable")
        overlaps = box_iou(found[order], true)
        free = np.ones(len(true), bool)
        for row in overlaps:
            candidates = np.where(free & (row >= iou), row, -1.0)
            best = int(np.argmax(candidates)) if len(candidates) else -1
            matched = best >= 0 and candidates[best] >= 0
            if matched:
                free[best] = False
            hits.append(matched)
        films.append(np.full(len(order), index))
        ranked.append(score[order])
    film = np.concatenate(films).astype(int) if films else np.empty(0, int)
    score = np.concatenate(ranked) if ranked else np.empty(0)
    order = np.argsort(-score, kind="stable")
    truths = np.array([len(np.asarray(t).reshape(-1, 4)) for t in truth], dtype=int)
    return Detections(film[order], score[order], np.asarray(hits, bool)[order], truths, iou)


def _weighted_curves(det: Detections, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cumulative true and false positives down the ranking [B, P], and true boxes [B], for film weights
    [B, F] (a bootstrap resample counts a film as often as it was drawn)."""
    per_box = weights[:, det.film]
    return np.cumsum(per_box * det.hit, axis=1), np.cumsum(per_box * ~det.hit, axis=1), weights @ det.truths


def average_precision(det: Detections, weights: np.ndarray | None = None) -> np.ndarray:
    """AP at the matching IoU over the films with a true box, one value per row of `weights` [B, F]."""
    weights = np.ones((1, len(det.truths))) if weights is None else np.atleast_2d(weights)
    weights = weights * (det.truths > 0)  # films without a true box do not count (FracAtlas's protocol)
    tp, fp, total = _weighted_curves(det, weights)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = tp / total[:, None]
        precision = np.where(tp + fp > 0, tp / np.where(tp + fp > 0, tp + fp, 1), 0.0)
    envelope = np.maximum.accumulate(precision[:, ::-1], axis=1)[:, ::-1]  # best precision at >= recall
    result = np.where(total > 0, 0.0, np.nan)
    for b in range(len(weights)):
        if total[b] <= 0 or not len(det.score):
            continue
        at = np.searchsorted(recall[b], RECALL_POINTS, side="left")
        reached = at < recall.shape[1]
        result[b] = np.where(reached, envelope[b, np.minimum(at, recall.shape[1] - 1)], 0.0).mean()
    return result


def froc_sensitivity(
    det: Detections, fp_per_film: tuple[float, ...] = FP_PER_FILM, weights: np.ndarray | None = None
) -> np.ndarray:
    """Share of true boxes found at each false-box rate [B, len(fp_per_film)], over all films."""
    weights = np.ones((1, len(det.truths))) if weights is None else np.atleast_2d(weights)
    tp, fp, total = _weighted_curves(det, weights)
    films = weights.sum(axis=1)
    result = np.full((len(weights), len(fp_per_film)), np.nan)
    for b in range(len(weights)):
        if total[b] <= 0:
            continue
        # thresholds sit between distinct scores: only the last box of a tie group is a cut point
        cuts = np.append(det.score[1:] != det.score[:-1], True) if len(det.score) else np.empty(0, bool)
        rates, found = fp[b][cuts] / films[b], tp[b][cuts] / total[b]
        for k, limit in enumerate(fp_per_film):
            allowed = rates <= limit
            result[b, k] = found[allowed].max() if allowed.any() else 0.0
    return result


def pointing_hits(peaks: np.ndarray, truth: list[np.ndarray]) -> np.ndarray:
    """Whether each film's map peak (x, y) [F, 2] lies inside any of its true boxes (bool [F])."""
    peaks = np.asarray(peaks, float).reshape(-1, 2)
    if len(peaks) != len(truth):
        raise ValueError(f"{len(peaks)} peaks for {len(truth)} films")
    hits = np.zeros(len(truth), bool)
    for i, (point, true) in enumerate(zip(peaks, truth, strict=True)):
        true = np.asarray(true, float).reshape(-1, 4)
        inside = (true[:, 0] <= point[0]) & (point[0] <= true[:, 2]) & (true[:, 1] <= point[1])
        hits[i] = bool((inside & (point[1] <= true[:, 3])).any())
    return hits


def map_peak(heatmap: np.ndarray) -> tuple[float, float]:
    """The (x, y) of a map's maximum, at the centre of its cell, in the map's own pixel frame (a flat
    map, e.g. a Grad-CAM with no positive evidence, peaks at its first cell)."""
    heatmap = np.asarray(heatmap, float)
    row, col = np.unravel_index(int(np.argmax(heatmap)), heatmap.shape)
    return float(col) + 0.5, float(row) + 0.5


@dataclass
class LocalisationReport:
    """Each metric as {estimate, low, high} (95% bootstrap CI over films) and what it was measured on."""

    ap50: dict[str, Any]
    froc: dict[str, dict[str, Any]]  # keyed "0.5", "1", "2" false boxes per film
    pointing_game: dict[str, Any] | None
    films: int
    films_with_boxes: int
    true_boxes: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _interval(point: float, draws: np.ndarray, level: float) -> dict[str, Any]:
    draws = draws[np.isfinite(draws)]
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(draws, [tail, 100 - tail]) if len(draws) else (np.nan, np.nan)
    as_float = lambda v: float(v) if np.isfinite(v) else None  # noqa: E731
    return {"estimate": as_float(point), "low": as_float(low), "high": as_float(high)}


def localisation_report(
    truth: list[np.ndarray],
    boxes: list[np.ndarray] | None = None,
    scores: list[np.ndarray] | None = None,
    peaks: np.ndarray | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> LocalisationReport:
    """AP50 and FROC of predicted boxes (when given) and the pointing game of map peaks (when given),
    each with its bootstrap CI over films; `truth[i]` may be empty (a film without a fracture)."""
    n_films = len(truth)
    counts = np.array([len(np.asarray(t).reshape(-1, 4)) for t in truth], dtype=int)
    draws = np.random.default_rng(seed).multinomial(n_films, np.full(n_films, 1 / n_films), size=n_resamples)
    draws = np.vstack([np.ones((1, n_films)), draws.astype(float)])  # row 0: the films as they are
    empty = {"estimate": None, "low": None, "high": None}
    ap50, froc = dict(empty), {f"{r:g}": dict(empty) for r in FP_PER_FILM}
    if boxes is not None:
        det = match_detections(
            truth, boxes, scores if scores is not None else [np.ones(len(b)) for b in boxes]
        )
        chunks = [draws[i : i + _CHUNK] for i in range(0, len(draws), _CHUNK)]  # bounds [B, P] arrays
        ap = np.concatenate([average_precision(det, chunk) for chunk in chunks])
        ap50 = _interval(ap[0], ap[1:], level)
        sens = np.vstack([froc_sensitivity(det, FP_PER_FILM, chunk) for chunk in chunks])
        froc = {f"{r:g}": _interval(sens[0, k], sens[1:, k], level) for k, r in enumerate(FP_PER_FILM)}
    pointing = None
    if peaks is not None:
        hits = pointing_hits(peaks, truth).astype(float)
        boxed = (counts > 0).astype(float)
        with np.errstate(invalid="ignore", divide="ignore"):
            rates = (draws * boxed) @ hits / ((draws * boxed).sum(axis=1))
        pointing = _interval(rates[0], rates[1:], level)
    return LocalisationReport(ap50, froc, pointing, n_films, int((counts > 0).sum()), int(counts.sum()))


NO_MAP_OUTPUT = (
    "no localisation output: the model has no fracture-map head (its Grad-CAM is not scored as if it "
    "were the model's boxes)"
)


def predictions_localisation(
    predictions: Any, truth_by_row: dict[int, np.ndarray], n_resamples: int = 1000, seed: int = 0
) -> dict[str, Any]:
    """The localisation section of a report from predicted rows (`predict_cache`: `cache_row`,
    `map_boxes` JSON [[x0, y0, x1, y1, score], ...], `map_peak_x/y`, all in the cache's input frame) and
    the cache's true boxes by row (same frame; IoU and containment do not change with the frame's
    scaling). A model without a map head gets `status` only: nothing else stands in for its boxes."""
    if "map_boxes" not in predictions:
        return {"status": NO_MAP_OUTPUT}
    rows = predictions["cache_row"].astype(int).tolist()
    truth = [truth_by_row.get(r, np.empty((0, 4))) for r in rows]
    found = [np.asarray(json.loads(v), float).reshape(-1, 5) for v in predictions["map_boxes"]]
    peaks = predictions[["map_peak_x", "map_peak_y"]].to_numpy(float)
    report = localisation_report(
        truth, [f[:, :4] for f in found], [f[:, 4] for f in found], peaks, n_resamples, seed
    )
    return {"status": "fracture map", **report.to_dict()}


def truth_column(rows: Any, truth_by_row: dict[int, np.ndarray]) -> list[str]:
    """Per predicted row (`cache_row`), its true boxes as JSON [[x0, y0, x1, y1], ...] in the cache's input
    frame: `mura cv` keeps them beside `map_boxes` in `oof_predictions.csv`, so `mura ensemble` scores the
    deployed ensemble's localisation from that file alone (the runs it joins may use other caches)."""
    empty = np.empty((0, 4))
    return [json.dumps(np.asarray(truth_by_row.get(int(r), empty), float).tolist()) for r in rows]


def truth_by_row(predictions: Any) -> dict[int, np.ndarray]:
    """`truth_column`'s JSON back to {cache_row: boxes [K, 4]}, films without a box left out."""
    found = {
        int(row): np.asarray(json.loads(text), float).reshape(-1, 4)
        for row, text in zip(predictions["cache_row"], predictions["true_boxes"], strict=True)
    }
    return {row: boxes for row, boxes in found.items() if len(boxes)}


def rescored_map_boxes(map_boxes: Any, before: np.ndarray, after: np.ndarray) -> list[str]:
    """`map_boxes` JSON (one per row) with each box's score, image probability x region peak, restated at
    another image probability: `mura cv`'s folds scored with their own calibration, the deployed fold
    ensemble scores its findings with the one fitted out of fold. A row scored 0 keeps its boxes at 0."""
    rescored = []
    for boxes_json, old, new in zip(map_boxes, before, after, strict=True):
        found = np.asarray(json.loads(boxes_json), float).reshape(-1, 5)
        found[:, 4] = found[:, 4] / old * new if old > 0 else 0.0
        rescored.append(json.dumps(found.tolist()))
    return rescored

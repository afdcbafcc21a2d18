"""Findings: boxes around where a model's fracture map says "here", in the film's original pixels.

A model with a map head returns `ModelOutput.fracture_map`, logits [B, 1, h, w] over its square input;
cell (i, j) covers input rows [i*s, (i+1)*s) and columns [j*s, (j+1)*s), s = input size / h. Here:
- each member's map becomes per-cell probabilities (sigmoid); a flip-TTA view is flipped back before the
  views are averaged, as the predictor averages their probabilities;
- an ensemble's maps are averaged in the original frame: members of one preprocessing and map shape
  share their grid (a plain mean); otherwise each is sampled on a common grid laid over the original
  film (`MapGeometry` of a stretch frame), through the same `Preprocessing.boxes_to_input` geometry the
  index's boxes and the cache use, so a box goes back exactly where `resize` took the pixels;
- every 8-connected region of cells at or above `MAP_THRESHOLD` is a candidate box, mapped back to the
  original (EXIF-upright) pixels by `Preprocessing.boxes_from_input` and clipped to the film (letterbox
  padding is nowhere on the film);
- its score is the calibrated image probability x the region's peak, so a finding never outscores its
  image, and it states the strictest operating point its score reaches among the image's stored ones
  (`suspicious`, then `definite`). Those thresholds were fitted out of fold (or on validation) for the
  image decision; reusing them needs no new fit and keeps one meaning: a `definite` box belongs to an
  image that is `definite` itself. A candidate below every point is dropped: a box that would not
  make its image suspicious is noise to a reader. So a not-assessed image (no probability) and one
  below `suspicious` get no finding.

Evaluation scores the candidates before that last rule (`map_regions`): AP50 and FROC rank every box.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.special import expit

from mura.decision import DEFINITE, SUSPICIOUS
from mura.prediction import Finding
from mura.preprocessing import Preprocessing

# A cell is fracture evidence when its sigmoid reaches one half: the map head is trained as a per-cell
# binary classifier (inside a box or not), so 0.5 is its own decision boundary, not a tuned number.
MAP_THRESHOLD = 0.5
FINDING_POINTS: tuple[str, ...] = (SUSPICIOUS, DEFINITE)  # lenient to strict
_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


@dataclass(frozen=True)
class MapGeometry:
    """How a map's square frame sits on the film: the preprocessing that made the frame from a `width` x
    `height` original (EXIF-upright pixels)."""

    preprocessing: Preprocessing
    width: int
    height: int


@dataclass(frozen=True)
class MemberMaps:
    """One member's fracture maps for a batch: per-cell probabilities [N, h, w] over its input square."""

    preprocessing: Preprocessing
    probability: np.ndarray


def map_probabilities(logit_maps: Sequence[np.ndarray], flipped: Sequence[bool]) -> np.ndarray:
    """Views' map logits [B, 1, h, w] -> [B, h, w] probabilities, a horizontally flipped view flipped back
    first, the views averaged."""
    views = [expit(m[:, 0].astype(np.float64)) for m in logit_maps]
    return np.mean([v[..., ::-1] if flip else v for v, flip in zip(views, flipped, strict=True)], axis=0)


def finding_thresholds(stored: Mapping[str, float], deployed_name: str, deployed: float) -> dict[str, float]:
    """The points a finding is graded at: the stored `suspicious` / `definite` (lenient first); a model
    storing neither grades at its deployed point, so a finding still means "this image is called"."""
    points = {name: float(stored[name]) for name in FINDING_POINTS if name in stored}
    return points or {deployed_name: float(deployed)}


def _cell_boxes(probability_map: np.ndarray, map_threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Regions of cells at or above the threshold: boxes [K, 4] in cell units (x0, y0, x1, y1) and peaks."""
    regions, count = ndimage.label(probability_map >= map_threshold, structure=_EIGHT_CONNECTED)
    if count == 0:
        return np.empty((0, 4)), np.empty(0)
    boxes = [[cols.start, rows.start, cols.stop, rows.stop] for rows, cols in ndimage.find_objects(regions)]
    peaks = ndimage.maximum(probability_map, regions, index=np.arange(1, count + 1))
    return np.asarray(boxes, dtype=float), np.asarray(peaks, dtype=float)


def _to_original(cells: np.ndarray, side: int, geometry: MapGeometry) -> np.ndarray:
    """Boxes in cell units of a `side`-cell map -> original pixels, clipped to the film."""
    cell = geometry.preprocessing.size / side
    boxes = geometry.preprocessing.boxes_from_input(cells * cell, geometry.width, geometry.height)
    limits = np.array([geometry.width, geometry.height] * 2, dtype=float)
    return np.clip(boxes, 0.0, limits)


def map_regions(
    probability_map: np.ndarray, geometry: MapGeometry, map_threshold: float = MAP_THRESHOLD
) -> tuple[np.ndarray, np.ndarray]:
    """Every candidate box [K, 4] in original pixels and its region's peak [K] (the map's own evidence)."""
    cells, peaks = _cell_boxes(np.asarray(probability_map, dtype=float), map_threshold)
    boxes = _to_original(cells, probability_map.shape[0], geometry)
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])  # wholly in letterbox padding: none
    return boxes[keep], peaks[keep]


def findings_from_map(
    probability_map: np.ndarray,
    geometry: MapGeometry,
    probability: float | None,
    thresholds: Mapping[str, float],
    map_threshold: float = MAP_THRESHOLD,
) -> list[Finding]:
    """The findings of one image, best first: each region's box, score (image probability x region peak)
    and the strictest of `thresholds` (lenient first) the score reaches; below all of them, dropped. An
    image without a probability (not assessed) has none."""
    if probability is None:
        return []
    lowest = min(thresholds.values())
    if probability < lowest:  # no region can reach a point its image does not reach
        return []
    boxes, peaks = map_regions(probability_map, geometry, map_threshold)
    findings = []
    for box, peak in zip(boxes, peaks, strict=True):
        score = float(probability) * float(peak)
        passed = [name for name, value in thresholds.items() if score >= value]
        if passed:
            rounded = tuple(round(float(c), 1) for c in box)
            findings.append(Finding(box=rounded, score=score, operating_point=passed[-1]))
    return sorted(findings, key=lambda f: -f.score)


def combined_map(
    maps: Sequence[tuple[np.ndarray, Preprocessing]], width: int, height: int
) -> tuple[np.ndarray, MapGeometry]:
    """Members' probability maps [h, w] of one film -> one map and the geometry it sits in: their mean
    where they share preprocessing and shape, else their mean on a stretch grid over the original film,
    as fine as the finest member input (each member sampled at the grid's cell centres)."""
    first_map, first_pre = maps[0]
    if all(pre == first_pre and m.shape == first_map.shape for m, pre in maps):
        return np.mean([m for m, _ in maps], axis=0), MapGeometry(first_pre, width, height)
    side = max(pre.size for _, pre in maps)
    xs = (np.arange(side) + 0.5) * width / side
    ys = (np.arange(side) + 0.5) * height / side
    sampled = []
    for probability_map, pre in maps:
        points = pre.boxes_to_input(np.column_stack([xs, ys, xs, ys]), width, height)
        cell = pre.size / probability_map.shape[0]
        cols = np.clip((points[:, 0] // cell).astype(int), 0, probability_map.shape[1] - 1)
        rows = np.clip((points[:, 1] // cell).astype(int), 0, probability_map.shape[0] - 1)
        sampled.append(probability_map[rows[:, None], cols[None, :]])
    grid = Preprocessing(side, "stretch", first_pre.mean, first_pre.std)
    return np.mean(sampled, axis=0), MapGeometry(grid, width, height)


def map_peak_point(probability_map: np.ndarray, geometry: MapGeometry) -> tuple[float, float]:
    """The (x, y) in original pixels of the centre of the map's highest cell (the pointing game's point)."""
    row, col = np.unravel_index(int(np.argmax(probability_map)), probability_map.shape)
    cell = np.array([[col, row, col + 1, row + 1]], dtype=float)
    x0, y0, x1, y1 = _to_original(cell, probability_map.shape[0], geometry)[0]
    return (x0 + x1) / 2, (y0 + y1) / 2

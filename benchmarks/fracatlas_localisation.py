"""Grad-CAM's localisation on FracAtlas, out of fold: the baseline a localisation head must beat (issue 18).

Every film is explained by the fold model that did not train on it (`mura cv` writes `final/fold{k}.pt`
and the fold of each film in `oof_predictions.csv`), and scored against FracAtlas's own boxes (the index's
`index.boxes.csv`, written by `mura index`):
- pointing game: the Grad-CAM peak (in original pixels) inside a true box, on the films with a box;
- AP50 / FROC of boxes read off the map: each connected region of the map above `--cam-threshold` (of
  the map's own maximum, as Grad-CAM maps are normalised per film) is a box, scored by the film's
  fracture probability times the region's peak;
- the same pointing game for a random point and for the film's centre, the chance levels.

    .venv/bin/python benchmarks/fracatlas_localisation.py --index runs/fracatlas_loc/index.csv \
        --cv runs/fracatlas_loc/cv_lite2_128 --out runs/fracatlas_loc/localisation.json

FracAtlas: Abedeen et al., Scientific Data 10, 521 (2023), doi:10.1038/s41597-023-02432-4, CC BY 4.0.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy import ndimage

from mura.data.boxes import COORDINATES, boxes_beside
from mura.data.images import read_image
from mura.evaluation.localisation import localisation_report, map_peak
from mura.inference.gradcam import GradCamExplainer


def cam_boxes(heatmap: np.ndarray, probability: float, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Boxes [K, 4] around the map's regions above `threshold` x its maximum, scored prob x region peak."""
    peak = float(heatmap.max())
    if peak <= 0:
        return np.empty((0, 4)), np.empty(0)
    regions, count = ndimage.label(heatmap >= threshold * peak)
    boxes, scores = [], []
    for index, found in enumerate(ndimage.find_objects(regions), start=1):
        rows, cols = found
        boxes.append([cols.start, rows.start, cols.stop, rows.stop])
        scores.append(probability * float(heatmap[found][regions[found] == index].max()) / peak)
    return np.array(boxes, float).reshape(-1, 4), np.array(scores)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--index", required=True, help="index CSV whose index.boxes.csv lies beside it")
    parser.add_argument(
        "--cv", required=True, help="a `mura cv` run folder (final/fold*.pt, oof_predictions.csv)"
    )
    parser.add_argument("--out", required=True, help="JSON file for the metrics")
    parser.add_argument(
        "--cam-threshold", type=float, default=0.5, help="share of the map's peak (default 0.5)"
    )
    parser.add_argument("--all-films", action="store_true", help="also explain films without a box (FROC)")
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    boxes = boxes_beside(args.index)
    if boxes is None:
        raise SystemExit(
            f"{args.index}: no boxes beside it (run `mura index` on a data set with annotations)"
        )
    run = Path(args.cv)
    oof = pd.read_csv(run / "oof_predictions.csv")
    if not args.all_films:
        oof = oof[oof["path"].isin(set(boxes["path"]))]
    truth, peaks, found, scores, random_peaks, centres = [], [], [], [], [], []
    rng = np.random.default_rng(0)
    for fold, films in oof.groupby("fold"):
        explainer = GradCamExplainer.from_checkpoints([run / "final" / f"fold{int(fold)}.pt"], device="cpu")
        for film in films.itertuples():
            image = read_image(film.path).pixels
            heatmap = explainer.heatmap(image)
            truth.append(boxes.loc[boxes["path"] == film.path, COORDINATES].to_numpy(float))
            peaks.append(map_peak(heatmap))
            film_boxes, film_scores = cam_boxes(heatmap, float(film.fracture_prob), args.cam_threshold)
            found.append(film_boxes)
            scores.append(film_scores)
            height, width = image.shape
            random_peaks.append((rng.uniform(0, width), rng.uniform(0, height)))
            centres.append((width / 2, height / 2))
    cam = localisation_report(truth, found, scores, np.array(peaks), n_resamples=args.bootstrap)
    chance = localisation_report(truth, peaks=np.array(random_peaks), n_resamples=args.bootstrap)
    centre = localisation_report(truth, peaks=np.array(centres), n_resamples=args.bootstrap)
    result = {
        "cv": str(run),
        "cam_threshold": args.cam_threshold,
        "grad_cam": cam.to_dict(),
        "random_point_pointing_game": chance.pointing_game,
        "centre_point_pointing_game": centre.pointing_game,
        "seconds": round(time.perf_counter() - started, 1),
    }
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

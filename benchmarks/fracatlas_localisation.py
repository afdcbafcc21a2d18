"""Localisation on FracAtlas, out of fold: Grad-CAM (the baseline) or a model's fracture map (issue 18).

Every film is explained by the fold model that did not train on it (`mura cv` writes `final/fold{k}.pt`
and the fold of each film in `oof_predictions.csv`), and scored against FracAtlas's own boxes:
- pointing game: the map's peak inside a true box, on the films with a box;
- AP50 / FROC of boxes read off the map: each connected region of the map above a threshold is a box,
  scored by the film's out-of-fold fracture probability times the region's peak;
- the same pointing game for a random point and for the film's centre, the chance levels.

`--source gradcam` (default): Grad-CAM on the decoded film, in original pixels, against the index's
`index.boxes.csv`; regions above `--cam-threshold` of the map's own maximum (Grad-CAM is normalised per
film). `--source map`: the model's `fracture_map` (a map head, `model.map_head`) on the cv's cache
pixels, sigmoid, bilinearly upsampled to the input; regions above `--map-threshold` (an absolute
probability: the map is trained against 0/1 cell targets), against the cache's boxes in input pixels
(for a stretch cache, point-in-box and IoU are the same as in original pixels: both frames differ by a
per-axis scale).

    .venv/bin/python benchmarks/fracatlas_localisation.py --index runs/fracatlas_loc/index.csv \
        --cv runs/fracatlas_loc/cv_lite2_128 --out runs/fracatlas_loc/localisation.json
    .venv/bin/python benchmarks/fracatlas_localisation.py --index runs/fracatlas_loc/index.csv \
        --cv runs/fracatlas_loc/map18/cv_a_sub4 --source map --out runs/fracatlas_loc/map18/a_sub4.json

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
import torch.nn.functional as F
from scipy import ndimage

from mura.checkpoint import load_model
from mura.data.boxes import COORDINATES, boxes_beside
from mura.data.cache import open_cache
from mura.data.images import read_image
from mura.evaluation.localisation import localisation_report, map_peak
from mura.inference.gradcam import GradCamExplainer

Films = list[tuple[np.ndarray, np.ndarray, np.ndarray, tuple[float, float], tuple[int, int]]]


def region_boxes(
    heatmap: np.ndarray, probability: float, level: float, scale: float
) -> tuple[np.ndarray, np.ndarray]:
    """Boxes [K, 4] around the map's regions at or above `level`, each scored prob x region peak / scale."""
    if float(heatmap.max()) <= 0 or float(heatmap.max()) < level:
        return np.empty((0, 4)), np.empty(0)
    regions, _ = ndimage.label(heatmap >= level)
    boxes, scores = [], []
    for index, found in enumerate(ndimage.find_objects(regions), start=1):
        rows, cols = found
        boxes.append([cols.start, rows.start, cols.stop, rows.stop])
        scores.append(probability * float(heatmap[found][regions[found] == index].max()) / scale)
    return np.array(boxes, float).reshape(-1, 4), np.array(scores)


def gradcam_films(run: Path, oof: pd.DataFrame, boxes: pd.DataFrame, threshold: float) -> Films:
    """(truth, boxes, scores, peak, (height, width)) per film, Grad-CAM on the decoded film."""
    films: Films = []
    for fold, group in oof.groupby("fold"):
        explainer = GradCamExplainer.from_checkpoints([run / "final" / f"fold{int(fold)}.pt"], device="cpu")
        for film in group.itertuples():
            image = read_image(film.path).pixels
            heatmap = explainer.heatmap(image)
            peak = float(heatmap.max())
            found, scores = region_boxes(heatmap, float(film.fracture_prob), threshold * peak, peak)
            truth = boxes.loc[boxes["path"] == film.path, COORDINATES].to_numpy(float)
            films.append((truth, found, scores, map_peak(heatmap), image.shape))
    return films


@torch.no_grad()
def map_films(run: Path, oof: pd.DataFrame, threshold: float, batch_size: int = 64) -> Films:
    """The same per film, from each fold model's `fracture_map` on the cv's cache pixels (input frame)."""
    films: Films = []
    for fold, group in oof.groupby("fold"):
        model, checkpoint = load_model(run / "final" / f"fold{int(fold)}.pt")
        if not model.has_map_head:
            raise SystemExit(f"{run}: fold {fold}'s model has no map head (train it with model.map_head)")
        cache = open_cache(checkpoint.meta.config["data"]["cache"])
        pre = checkpoint.meta.preprocessing
        for start in range(0, len(group), batch_size):
            chunk = group.iloc[start : start + batch_size]
            rows = chunk["cache_row"].to_numpy(int)
            x = pre.normalize(torch.from_numpy(np.asarray(cache.images[rows]))[:, None])
            fracture_map = model(x, torch.full((len(rows),), -1)).fracture_map
            maps = torch.sigmoid(F.interpolate(fracture_map, size=x.shape[-2:], mode="bilinear")).numpy()
            for film, row, heatmap in zip(chunk.itertuples(), rows, maps[:, 0], strict=True):
                found, scores = region_boxes(heatmap, float(film.fracture_prob), threshold, 1.0)
                truth = cache.boxes.get(int(row), np.empty((0, 4)))
                films.append((truth, found, scores, map_peak(heatmap), heatmap.shape))
    return films


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
        "--source", choices=("gradcam", "map"), default="gradcam", help="Grad-CAM or the model's map head"
    )
    parser.add_argument(
        "--cam-threshold", type=float, default=0.5, help="gradcam: share of the map's peak (default 0.5)"
    )
    parser.add_argument(
        "--map-threshold", type=float, default=0.5, help="map: fracture probability per pixel (default 0.5)"
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
    if args.source == "map":
        films = map_films(run, oof, args.map_threshold)
    else:
        films = gradcam_films(run, oof, boxes, args.cam_threshold)
    truth, found, scores, peaks, shapes = (list(column) for column in zip(*films, strict=True))
    rng = np.random.default_rng(0)
    random_peaks = [(rng.uniform(0, width), rng.uniform(0, height)) for height, width in shapes]
    centres = [(width / 2, height / 2) for height, width in shapes]
    source = localisation_report(truth, found, scores, np.array(peaks), n_resamples=args.bootstrap)
    chance = localisation_report(truth, peaks=np.array(random_peaks), n_resamples=args.bootstrap)
    centre = localisation_report(truth, peaks=np.array(centres), n_resamples=args.bootstrap)
    name = "grad_cam" if args.source == "gradcam" else "fracture_map"
    threshold = args.cam_threshold if args.source == "gradcam" else args.map_threshold
    result = {
        "cv": str(run),
        "source": args.source,
        f"{'cam' if args.source == 'gradcam' else 'map'}_threshold": threshold,
        name: source.to_dict(),
        "random_point_pointing_game": chance.pointing_game,
        "centre_point_pointing_game": centre.pointing_game,
        "seconds": round(time.perf_counter() - started, 1),
    }
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

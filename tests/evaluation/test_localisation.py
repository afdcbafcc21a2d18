"""Localisation metrics on hand-made films: AP50, FROC, pointing game and their bootstrap CIs."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from mura.evaluation.localisation import (
    NO_MAP_OUTPUT,
    average_precision,
    box_iou,
    froc_sensitivity,
    localisation_report,
    map_peak,
    match_detections,
    pointing_hits,
    predictions_localisation,
    rescored_map_boxes,
)

HIT = [0.0, 0.0, 10.0, 10.0]  # the true box of film 0 and film 1 below
MISS = [50.0, 50.0, 60.0, 60.0]


def test_iou_of_overlapping_disjoint_and_equal_boxes() -> None:
    iou = box_iou([[0, 0, 10, 10]], [[5, 0, 15, 10], [20, 20, 30, 30], [0, 0, 10, 10]])
    assert iou == pytest.approx(np.array([[1 / 3, 0.0, 1.0]]))


def test_ap50_ranks_predictions_and_counts_only_films_with_a_true_box() -> None:
    truth = [np.array([HIT]), np.array([HIT]), np.empty((0, 4))]
    boxes = [np.array([HIT]), np.array([MISS, [1, 1, 10, 11]]), np.array([HIT])]
    scores = [np.array([0.9]), np.array([0.8, 0.7]), np.array([0.95])]
    # ranked on films 0 and 1: hit, miss, hit -> precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1
    det = match_detections(truth, boxes, scores)
    expected = (51 * 1.0 + 50 * 2 / 3) / 101  # COCO's 101 recall points
    assert average_precision(det)[0] == pytest.approx(expected)
    # the film without a fracture (its 0.95 box) does not lower AP; a second box on one fracture does
    duplicate = match_detections(truth[:1], [np.array([HIT, [0, 0, 10, 9]])], [np.array([0.9, 0.85])])
    assert duplicate.hit.tolist() == [True, False] and average_precision(duplicate)[0] == pytest.approx(1.0)
    shifted = match_detections(truth[:1], [np.array([[4, 0, 14, 10]])], [np.array([0.9])])  # IoU 0.43
    assert average_precision(shifted)[0] == 0.0


def test_froc_sensitivity_at_false_boxes_per_film_over_all_films() -> None:
    truth = [np.array([HIT]), np.array([HIT]), np.empty((0, 4)), np.empty((0, 4))]
    boxes = [np.array([HIT, [0, 0, 10, 9]]), np.array([HIT]), np.array([MISS]), np.array([MISS])]
    scores = [np.array([0.9, 0.8]), np.array([0.6]), np.array([0.95]), np.array([0.85])]
    # down the ranking: FP, TP, FP, FP (the duplicate), TP -> at 2 / 4 false boxes per film half found
    det = match_detections(truth, boxes, scores)
    assert froc_sensitivity(det, (0.25, 0.5, 1.0, 2.0))[0].tolist() == [0.5, 0.5, 1.0, 1.0]
    tied = match_detections(truth[:1] + truth[2:3], [np.array([HIT]), np.array([MISS])], [[0.5], [0.5]])
    assert froc_sensitivity(tied, (0.25, 0.5))[0].tolist() == [0.0, 1.0]  # a tie is one threshold


def test_pointing_game_counts_peaks_inside_any_true_box() -> None:
    truth = [np.array([MISS, HIT]), np.array([HIT]), np.array([HIT])]
    hits = pointing_hits(np.array([[5, 5], [10, 10], [11, 5]]), truth)
    assert hits.tolist() == [True, True, False]  # edges count as inside
    heat = np.zeros((4, 8))
    heat[3, 1] = 1.0
    assert map_peak(heat) == (1.5, 3.5)  # x, y of the cell centre


def test_report_estimates_with_bootstrap_intervals_over_films() -> None:
    rng = np.random.default_rng(0)
    truth = [np.array([HIT]) if i % 2 else np.empty((0, 4)) for i in range(60)]
    peaks = np.array([[5, 5] if i % 4 == 1 else [30, 30] for i in range(60)])  # half of the boxed films
    boxes = [np.array([HIT if i % 4 == 1 else MISS]) for i in range(60)]
    scores = [rng.random(1) for _ in range(60)]
    report = localisation_report(truth, boxes, scores, peaks, n_resamples=300, seed=1)
    assert report.films == 60 and report.films_with_boxes == report.true_boxes == 30
    game = report.pointing_game
    assert game["estimate"] == pytest.approx(0.5) and game["low"] < 0.5 < game["high"] and game["high"] < 0.8
    ap = report.ap50
    assert 0 < ap["low"] <= ap["estimate"] <= ap["high"] <= 1
    assert set(report.froc) == {"0.5", "1", "2"}
    assert report.froc["2"]["estimate"] >= report.froc["0.5"]["estimate"]
    perfect = localisation_report(truth, peaks=np.tile([5, 5], (60, 1)), n_resamples=100)
    assert (
        perfect.pointing_game == {"estimate": 1.0, "low": 1.0, "high": 1.0}
        and perfect.ap50["estimate"] is None
    )


def test_a_report_scores_the_map_boxes_of_predicted_rows_and_says_when_there_is_no_map() -> None:
    truth = {0: np.array([[10.0, 10, 20, 20]]), 2: np.array([[0.0, 0, 8, 8]])}  # row 1: no fracture
    rows = pd.DataFrame(
        {
            "cache_row": [0, 1, 2],
            "map_boxes": [json.dumps([[10, 10, 20, 20, 0.9]]), json.dumps([[5, 5, 9, 9, 0.3]]), "[]"],
            "map_peak_x": [15.0, 7.0, 30.0],
            "map_peak_y": [15.0, 7.0, 30.0],
        }
    )
    section = predictions_localisation(rows, truth, n_resamples=50)
    assert section["status"] == "fracture map" and section["films_with_boxes"] == 2
    assert section["ap50"]["estimate"] == pytest.approx(51 / 101)  # half the recall points, precision 1
    assert section["pointing_game"]["estimate"] == pytest.approx(0.5)  # the second film's peak misses
    assert section["froc"]["1"]["estimate"] == pytest.approx(0.5)
    assert predictions_localisation(rows.drop(columns="map_boxes"), truth) == {"status": NO_MAP_OUTPUT}


def test_map_boxes_are_rescored_at_another_calibration_of_their_image_probability() -> None:
    boxes = [json.dumps([[1, 2, 3, 4, 0.4], [5, 6, 7, 8, 0.2]]), "[]", json.dumps([[0, 0, 1, 1, 0.0]])]
    rescored = [
        json.loads(b) for b in rescored_map_boxes(boxes, np.array([0.5, 0.3, 0.0]), np.array([0.9, 0.1, 0.7]))
    ]
    assert rescored[0] == [
        [1, 2, 3, 4, pytest.approx(0.72)],
        [5, 6, 7, 8, pytest.approx(0.36)],
    ]  # peaks 0.8, 0.4
    assert rescored[1:] == [[], [[0, 0, 1, 1, 0.0]]]

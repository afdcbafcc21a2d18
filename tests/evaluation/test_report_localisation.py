"""The report's localisation section: the figures with CIs, and the best / worst / missed films drawn from
the cache's pixels with true (green) and predicted boxes; one sentence for a model without a map."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from mura.constants import MURA_BODY_PARTS
from mura.evaluation.localisation import NO_MAP_OUTPUT, predictions_localisation
from mura.evaluation.localisation_section import example_films, localisation_text
from mura.evaluation.report import evaluate_predictions, write_report

POINTS = {"suspicious": 0.3, "definite": 0.7}
GREEN, ORANGE = (44, 160, 44), (255, 127, 14)
TRUE_BOX = [20.0, 20.0, 40.0, 36.0]


def films(n: int = 40, seed: int = 0) -> tuple[pd.DataFrame, SimpleNamespace]:
    """Half the films fractured (one true box each); the model finds most of them, a few it misses or
    boxes the wrong place, and it puts a false box on some normal films. Row 0 is the clean hit, row 1
    the highest false box, row 3 the miss it scored highest."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 60, (n, 64, 64), dtype=np.uint8)
    truth, rows = {}, []
    for row in range(n):
        fractured = row % 2 == 0 or row == 3
        probability = 0.95 if row in (0, 1, 3) else float(rng.uniform(0.3, 0.9))
        boxes: list[list[float]] = []
        if fractured:
            truth[row] = np.array([TRUE_BOX])
            images[row, 20:36, 20:40] = 220
            if row == 3:
                boxes = [[0.0, 0.0, 8.0, 8.0, 0.2]]  # below suspicious: not a finding; the fracture is missed
            elif row % 8 != 2:
                jitter = 0.0 if row == 0 else float(rng.uniform(1, 3))
                boxes = [[20 + jitter, 20.0, 40 + jitter, 36.0, probability * 0.9]]
        elif row == 1:
            boxes = [[44.0, 44.0, 60.0, 60.0, 0.9]]  # the worst: a definite box on a normal film
        elif row % 4 == 1:
            boxes = [[2.0, 40.0, 14.0, 60.0, float(rng.uniform(0.3, 0.6))]]
        peak = (30.0, 28.0) if boxes and boxes[0][0] >= 20 else (50.0, 10.0)
        rows.append(
            {
                "path": f"/films/{row:03d}.png",
                "study_id": f"s{row}",
                "body_part": "HAND",
                "label": int(fractured),
                "fracture_prob": probability,
                "cache_row": row,
                "map_boxes": json.dumps(boxes),
                "map_peak_x": peak[0],
                "map_peak_y": peak[1],
            }
        )
    return pd.DataFrame(rows), SimpleNamespace(images=images, boxes=truth)


def colour_pixels(path, colour) -> int:
    pixels = np.asarray(Image.open(path).convert("RGB")).astype(int)
    return int((np.abs(pixels - np.array(colour)).sum(axis=-1) < 30).sum())


def test_the_best_the_worst_and_a_miss_are_chosen_among_the_findings() -> None:
    predictions, cache = films()
    chosen = {film.kind: film for film in example_films(predictions, cache.boxes, POINTS)}
    assert {kind: film.cache_row for kind, film in chosen.items()} == {"best": 0, "worst": 1, "miss": 3}
    assert chosen["best"].boxes.tolist() == [TRUE_BOX] and chosen["best"].truth.tolist() == [TRUE_BOX]
    assert len(chosen["miss"].boxes) == 0  # its only box scored below suspicious: no finding to draw
    assert chosen["worst"].scores.tolist() == [0.9] and len(chosen["worst"].truth) == 0


def test_a_report_with_boxes_shows_the_figures_and_draws_the_films(tmp_path) -> None:
    predictions, cache = films()
    result = evaluate_predictions(predictions, POINTS, body_parts=MURA_BODY_PARTS, n_bootstrap=20)
    result["localisation"] = predictions_localisation(predictions, cache.boxes, n_resamples=100)
    files = write_report(result, predictions, tmp_path / "eval", cache=cache)
    markdown = files["markdown"].read_text()
    section = markdown.split("## Localisation", 1)[1].split("\n## ", 1)[0]
    for row in ("Box AP50", "FROC sensitivity at 0.5", "at 1 false", "at 2 false", "Pointing game"):
        assert row in section
    ap50 = result["localisation"]["ap50"]
    assert f"{ap50['estimate']:.3f} [{ap50['low']:.3f}, {ap50['high']:.3f}]" in section  # with its CI
    plots = tmp_path / "eval" / "plots"
    for kind in ("best", "worst", "miss"):
        assert f"plots/film_{kind}.png" in section
        assert colour_pixels(plots / f"film_{kind}.png", GREEN if kind != "worst" else ORANGE) > 20
    assert colour_pixels(plots / "film_best.png", ORANGE) > 20  # the finding drawn over the true box
    assert colour_pixels(plots / "film_miss.png", ORANGE) == 0  # nothing passed a point: nothing drawn
    html = files["html"].read_text()
    assert html.count("data:image/png;base64") >= 3 and "A miss: the highest-scored fractured film" in html
    assert json.loads(files["metrics"].read_text())["localisation"]["films_with_boxes"] == 21


def test_a_model_without_a_map_gets_one_sentence_and_no_film(tmp_path) -> None:
    predictions, cache = films()
    predictions = predictions.drop(columns=["map_boxes", "map_peak_x", "map_peak_y"])
    result = evaluate_predictions(predictions, POINTS, body_parts=MURA_BODY_PARTS, n_bootstrap=20)
    result["localisation"] = predictions_localisation(predictions, cache.boxes)
    files = write_report(result, predictions, tmp_path / "eval", cache=cache)
    section = files["markdown"].read_text().split("## Localisation", 1)[1].split("\n## ", 1)[0]
    assert section.strip() == f"{NO_MAP_OUTPUT}."
    assert not list((tmp_path / "eval" / "plots").glob("film_*.png"))
    assert localisation_text(result["localisation"]) == NO_MAP_OUTPUT


def test_the_headline_line_states_each_figure_with_its_interval() -> None:
    predictions, cache = films()
    localisation = predictions_localisation(predictions, cache.boxes, n_resamples=100)
    text = localisation_text(localisation)
    assert text.startswith("AP50 ") and "on 21 films with a true box" in text
    assert "FROC sensitivity at 0.5 / 1 / 2 false boxes per film" in text and "on 40 films" in text
    pointing = localisation["pointing_game"]
    assert text.endswith(
        f"pointing game {pointing['estimate']:.3f} [{pointing['low']:.3f}, {pointing['high']:.3f}]"
    )
    assert pointing["estimate"] == pytest.approx(
        np.mean([r % 8 != 2 and r != 3 for r in range(40) if r % 2 == 0 or r == 3])
    )

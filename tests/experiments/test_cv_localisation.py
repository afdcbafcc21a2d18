"""`mura cv` with a map head on an index with boxes: localisation scored out of fold (cv.json, the report
with its films, the printed line), each box scored at the decision fitted out of fold."""

from __future__ import annotations

import json

import pandas as pd

from mura.cli import main
from mura.inference import batch
from mura.inference.findings import map_regions


def test_cv_scores_the_map_boxes_out_of_fold_and_reports_them(
    synthetic_mura, tmp_path, capsys, monkeypatch
) -> None:
    # Two epochs at 32 px leave the map below one half everywhere; every cell counts here, so every film
    # has one box (the whole map, scored at its peak) and the scoring path is exercised on each.
    monkeypatch.setattr(batch, "map_regions", lambda found, geometry: map_regions(found, geometry, 0.0))
    out = tmp_path / "cv"
    flags = {
        "--cache": str(synthetic_mura.small_cache_dir),
        "--data.workers": "0",
        "--model.name": "custom_cnn",
        "--model.size": "32",
        "--model.map_head": "true",
        "--model.map_subcells": "2",
        "--train.epochs": "2",
        "--train.batch_size": "16",
        "--folds": "2",
        "--bootstrap": "50",
        "--out": str(out),
    }
    assert main(["cv", *(item for pair in flags.items() for item in pair)]) == 0
    printed = capsys.readouterr().out
    assert "\nlocalisation out of fold: AP50 " in printed and "pointing game " in printed

    localisation = json.loads((out / "cv.json").read_text())["localisation"]
    assert localisation["status"] == "fracture map" and localisation["films_with_boxes"] > 0
    for figure in (localisation["ap50"], *localisation["froc"].values(), localisation["pointing_game"]):
        assert set(figure) == {"estimate", "low", "high"} and 0 <= figure["estimate"] <= 1

    # a box's score is the deployed (out-of-fold) image probability x its region's peak, not the fold's own
    oof = pd.read_csv(out / "oof_predictions.csv")
    scored = [
        (score, probability)
        for boxes, probability in zip(oof["map_boxes"], oof["fracture_prob"], strict=True)
        for *_, score in json.loads(boxes)
    ]
    assert len(scored) == len(oof) and all(0 < s <= p + 1e-9 for s, p in scored)

    report = (out / "oof" / "report.md").read_text()
    section = report.split("## Localisation", 1)[1].split("\n## ", 1)[0]
    assert "Box AP50" in section and "Pointing game" in section
    drawn = sorted(p.name for p in (out / "oof" / "plots").glob("film_*.png"))
    assert drawn and all(f"plots/{name}" in section for name in drawn)

"""`mura cv` with a map head on an index with boxes: localisation scored out of fold (cv.json, the report
with its films, the printed line), each box scored at the decision fitted out of fold; `mura ensemble`
scores the deployed ensemble's boxes the same way, from the run's own file."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest

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

    # `mura ensemble` with a run without a map: the deployed ensemble's findings are this run's map
    # boxes scored at the ensemble's probability, scored against the true boxes the run kept beside them.
    assert {"true_boxes", "map_boxes"} <= set(oof.columns)
    plain = tmp_path / "plain"
    flags.update({"--model.map_head": "false", "--model.map_subcells": "1", "--train.epochs": "1"})
    flags["--out"] = str(plain)
    assert main(["cv", *(item for pair in flags.items() for item in pair)]) == 0
    capsys.readouterr()
    assert main(["ensemble", str(plain), str(out), "--out", str(tmp_path / "ens"), "--bootstrap", "50"]) == 0
    assert "\nlocalisation out of fold: AP50 " in capsys.readouterr().out
    ensemble = json.loads((tmp_path / "ens" / "ensemble.json").read_text())["localisation"]
    assert ensemble["status"] == "fracture map"
    assert ensemble["films_with_boxes"] == localisation["films_with_boxes"]
    assert ensemble["pointing_game"] == localisation["pointing_game"]  # the same map peaks
    joined = pd.read_csv(tmp_path / "ens" / "oof_predictions.csv").set_index("path")
    mapped = oof.set_index("path").loc[joined.index]
    columns = [mapped["map_boxes"], mapped["fracture_prob"], joined["map_boxes"], joined["fracture_prob"]]
    for boxes, before, mine, after in zip(*columns, strict=True):
        restated = [b[4] / before * after for b in json.loads(boxes)]
        assert [b[4] for b in json.loads(mine)] == pytest.approx(restated)
    assert "## Localisation" in (tmp_path / "ens" / "oof" / "report.md").read_text()

    # Two runs with maps: the deployed mean map is not in their files, and nothing pretends it is.
    shutil.copytree(out, tmp_path / "again")
    assert main(["ensemble", str(out), str(tmp_path / "again"), "--out", str(tmp_path / "ens2")]) == 0
    status = json.loads((tmp_path / "ens2" / "ensemble.json").read_text())["localisation"]["status"]
    assert status.startswith("not scored: the deployed ensemble averages the maps of cv, again")

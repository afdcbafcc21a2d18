"""The fracture-map head in training: box targets, the map loss, and a map that learns where findings are."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from mura.data.boxes import CACHE_BOXES_FILE
from mura.data.cache import open_cache
from mura.errors import MuraError
from mura.evaluation.localisation import map_peak, pointing_hits
from mura.outputs import ModelOutput
from mura.training.loop import train
from mura.training.losses import MultiTaskLoss, fracture_map_loss
from mura.training.map_targets import cell_targets, rasterise_boxes

SIZE = 64


def test_boxes_become_the_cells_they_overlap_at_any_map_stride():
    target = rasterise_boxes([np.array([[10.2, 10.0, 19.5, 20.0]]), np.empty((0, 4))], 32)
    assert target.boxed.tolist() == [True, False]
    assert int(target.mask[0].sum()) == 10 * 10 and int(target.mask[1].sum()) == 0
    cells = cell_targets(target.mask, (4, 4))[0, 0]  # 8 px cells: pixels 10..19 -> cells 1 and 2
    expected = torch.zeros(4, 4)
    expected[1:3, 1:3] = 1
    assert torch.equal(cells, expected)
    assert cell_targets(target.mask, (32, 32))[0, 0, 10:20, 10:20].all()


def _map_with_peak(row: int, col: int, side: int = 8) -> torch.Tensor:
    fracture_map = torch.full((1, 1, side, side), -4.0)
    fracture_map[0, 0, row, col] = 4.0
    return fracture_map


def test_map_loss_rewards_the_box_on_boxed_films_and_no_cell_on_normal_ones():
    boxed = rasterise_boxes([np.array([[40.0, 8.0, 48.0, 16.0]])], SIZE)  # cell (1, 5) of an 8x8 map
    fracture = torch.tensor([1])
    on_box = fracture_map_loss(_map_with_peak(1, 5), boxed, fracture)
    elsewhere = fracture_map_loss(_map_with_peak(6, 2), boxed, fracture)
    assert on_box < elsewhere / 3
    normal = rasterise_boxes([np.empty((0, 4))], SIZE)
    quiet = fracture_map_loss(torch.full((1, 1, 8, 8), -4.0), normal, torch.tensor([0]))
    assert quiet < fracture_map_loss(_map_with_peak(3, 3), normal, torch.tensor([0]))


def test_an_abnormal_film_without_boxes_only_asks_for_evidence_somewhere():
    unboxed = rasterise_boxes([np.empty((0, 4))], SIZE)
    fracture = torch.tensor([1])
    here = fracture_map_loss(_map_with_peak(1, 1), unboxed, fracture)
    there = fracture_map_loss(_map_with_peak(6, 5), unboxed, fracture)
    assert torch.isclose(here, there)  # where is unknown: no location is preferred
    assert here < fracture_map_loss(torch.full((1, 1, 8, 8), -4.0), unboxed, fracture)


def test_the_map_term_joins_the_total_only_with_a_map_and_a_target():
    logits, parts = torch.tensor([[0.2, 0.1]]), torch.zeros(1, 7)
    label, body_part = torch.tensor([1]), torch.tensor([0])
    target = rasterise_boxes([np.array([[40.0, 8.0, 48.0, 16.0]])], SIZE)
    loss = MultiTaskLoss(map_weight=2.0)
    with_map = loss(ModelOutput(logits, parts, fracture_map=_map_with_peak(6, 2)), label, body_part, target)
    validation = loss(ModelOutput(logits, parts, fracture_map=_map_with_peak(6, 2)), label, body_part)
    plain = loss(ModelOutput(logits, parts), label, body_part, target)
    assert float(validation.fracture_map) == 0.0 and torch.isclose(validation.total, plain.total)
    assert torch.isclose(with_map.total, plain.total + 2.0 * with_map.fracture_map)
    assert float(with_map.fracture_map) > 0


def test_a_feature_cache_cannot_train_a_map_head(make_cfg):
    cfg = make_cfg("map_feature_cache", **{"model.map_head": True, "model.freeze": "frozen"})
    assert cfg.train.feature_cache
    with pytest.raises(MuraError, match="feature_cache=True.*map_head=True"):
        train(cfg)


def _cache_with_shuffled_boxes(cache_dir: Path, out: Path) -> Path:
    """A copy of the cache whose films carry the boxes of other films (same pixels, labels, box count)."""
    shutil.copytree(cache_dir, out)
    boxes = pd.read_csv(out / CACHE_BOXES_FILE)
    films = boxes["cache_row"].unique()
    other = dict(zip(films, np.roll(films, len(films) // 2), strict=True))
    boxes.assign(cache_row=boxes["cache_row"].map(other)).to_csv(out / CACHE_BOXES_FILE, index=False)
    return out


def _held_out_pointing(model: torch.nn.Module, cache_dir: Path) -> tuple[float, float]:
    """(pointing game, chance = mean box area share) of the map on the held-out abnormal films with boxes."""
    cache = open_cache(cache_dir)
    held_out = cache.index[cache.index["split"].isin(["val", "test"])]
    rows = [int(r) for r in held_out["cache_row"] if int(r) in cache.boxes]
    x = (torch.from_numpy(np.asarray(cache.images[rows]))[:, None].float() / 255.0 - 0.5) / 0.25
    with torch.no_grad():
        fracture_map = model.eval()(x, torch.full((len(rows),), -1)).fracture_map
    maps = F.interpolate(fracture_map, size=(SIZE, SIZE), mode="bilinear").numpy()[:, 0]
    truth = [cache.boxes[r] for r in rows]
    hits = pointing_hits(np.array([map_peak(m) for m in maps]), truth)
    chance = np.mean([((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])).sum() / SIZE**2 for b in truth])
    return float(hits.mean()), float(chance)


@pytest.mark.slow  # two 12-epoch trainings of custom_cnn at 64 px: ~90 CPU s
def test_the_map_learns_where_planted_findings_are_and_not_from_shuffled_boxes(
    synthetic_mura, make_cfg, tmp_path
):
    settings = {
        "data.cache": str(synthetic_mura.cache_dir),
        "model.size": SIZE,
        "model.map_head": True,
        "train.feature_cache": False,
        "train.epochs": 12,
        "train.map_loss_weight": 4.0,
        "train.monitor": "val_auc",
    }
    torch.manual_seed(0)
    learnt = train(make_cfg("map_true", **settings)).model
    shuffled_cache = _cache_with_shuffled_boxes(synthetic_mura.cache_dir, tmp_path / "shuffled")
    torch.manual_seed(0)
    control = train(make_cfg("map_shuffled", **{**settings, "data.cache": str(shuffled_cache)})).model
    pointing, chance = _held_out_pointing(learnt, synthetic_mura.cache_dir)
    control_pointing, _ = _held_out_pointing(control, synthetic_mura.cache_dir)
    assert chance < 0.1
    assert pointing > 0.4 and pointing > 5 * chance
    assert control_pointing < pointing - 0.15

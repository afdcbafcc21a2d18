"""`mura calibrate`: a known calibration shift is recovered on a site's labelled sample, the operating
points land within their intervals of the targets, a small sample is reported as such, and the inputs
are never modified."""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from mura.checkpoint import file_sha256, load_checkpoint, update_checkpoint
from mura.cli import main
from mura.constants import BODY_PARTS
from mura.data.cache import build_cache
from mura.data.index import write_index
from mura.decision import Calibration, Decision
from mura.errors import MuraError
from mura.evaluation.calibration import expected_calibration_error
from mura.experiments.calibrate import CALIBRATION_RECORD, calibrate_checkpoints
from mura.experiments.site_decision import ece_interval, min_class_images
from mura.inference.cache_predictions import predict_cache
from mura.inference.predictor import Predictor
from tests.factories.checkpoints import blobs

SITE = "Test Hospital"
# The training site's calibration, deliberately wrong here: temperature x3 and a bias of +1.
SHIFTED = Calibration("platt", slope=1 / 3, intercept=1.0)
SPLIT_SIZES = {"val": 2000, "test": 1500, "train": 40}  # fit, held out, too small


class Site(NamedTuple):
    checkpoint: Path  # stores the shifted calibration
    index: Path
    cache: Path


@pytest.fixture(scope="module")
def site(make_checkpoint, tmp_path_factory) -> Site:
    """Films whose labels are drawn from the model's own margins (true probability sigmoid(z)), so the
    right calibration is known (slope 1, intercept 0) and the stored one is wrong by SHIFTED."""
    base = make_checkpoint("calibrate_base.pt", "custom_cnn", 32, seed=5)
    folder = tmp_path_factory.mktemp("site")
    n = sum(SPLIT_SIZES.values())
    pixels = blobs(n, 32, torch.Generator().manual_seed(11))[:, 0].numpy() * 0.25 + 0.5
    images = np.clip(pixels * 255, 0, 255).astype(np.uint8)
    wrist = [BODY_PARTS.index("WRIST")] * n  # the index gives every film's part: the fracture head uses it
    truth = (
        Predictor.from_checkpoints(base, device="cpu").predict_images(list(images), wrist).uncalibrated_prob
    )
    labels = (np.random.default_rng(3).random(n) < truth).astype(int)
    paths = []
    for i, image in enumerate(images):
        paths.append(folder / "films" / f"{i:05d}.png")
        paths[-1].parent.mkdir(exist_ok=True)
        Image.fromarray(image).save(paths[-1])
    index = pd.DataFrame(
        {
            "path": [str(p) for p in paths],
            "split": np.repeat(list(SPLIT_SIZES), list(SPLIT_SIZES.values())),
            "body_part": "WRIST",
            "patient_id": [f"p{i // 2}" for i in range(n)],
            "study_id": [f"s{i // 2}" for i in range(n)],  # two views per study
            "label": labels,
            "view": [i % 2 for i in range(n)],
        }
    )
    index_csv = write_index(index, folder / "index.csv")
    build_cache(index_csv, folder / "cache", size=32, resize="stretch", workers=1, progress=False)
    shifted = folder / "trained_elsewhere.pt"
    decision = Decision(
        SHIFTED,
        {"default": 0.5, "suspicious": 0.55, "definite": 0.8},
        {"sensitivity": 0.9, "specificity": 0.9},
        "val split of another hospital",
    )
    update_checkpoint(base, out=shifted, decision=decision)
    return Site(shifted, index_csv, folder / "cache")


def _hashes(site: Site) -> dict[str, str]:
    files = [site.checkpoint, site.index, *sorted(site.cache.iterdir())]
    return {str(p): file_sha256(p) for p in files if p.is_file()}


@pytest.fixture(scope="module")
def calibrated(site, tmp_path_factory):
    out = tmp_path_factory.mktemp("calibrated") / "site"
    before = _hashes(site)
    report = calibrate_checkpoints(
        [site.checkpoint], site.cache, out, site=SITE, index_path=site.index, split="val", device="cpu"
    )
    assert _hashes(site) == before  # checkpoint, index and cache files untouched
    return out, report


def test_the_known_shift_is_recovered_and_the_points_land_within_their_intervals(site, calibrated) -> None:
    out, report = calibrated
    assert report["before"]["ece"]["estimate"] > 0.1  # the stored calibration is wrong here
    assert report["after"]["ece"]["estimate"] < 0.05
    (written,) = report["written"]
    calibration = load_checkpoint(written).meta.decision.calibration
    assert calibration.slope == pytest.approx(1.0, abs=0.15) and calibration.intercept == pytest.approx(
        0, abs=0.15
    )
    for point, rate, target in (("suspicious", "sensitivity", 0.9), ("definite", "specificity", 0.9)):
        interval = report["after"]["points"][point][rate]
        assert interval["low"] <= target <= interval["high"]
        assert interval["high"] - interval["low"] < 0.1
    assert report["too_small"] == {}
    # held out: images the decision was not fitted on are calibrated too
    held_out = predict_cache(Predictor.from_checkpoints(written, device="cpu"), site.cache, "test")
    assert expected_calibration_error(held_out["label"], held_out["fracture_prob"]) < 0.05


def test_the_written_decision_records_where_it_was_fitted_and_every_answer_says_so(site, calibrated) -> None:
    out, report = calibrated
    decision = load_checkpoint(out / site.checkpoint.name).meta.decision
    assert decision.fitted_on.startswith(f"site {SITE}: 2000 images")
    origin = decision.origin
    assert origin["site"] == SITE and origin["index_sha256"] == file_sha256(site.index)
    assert origin["images"] == 2000 and origin["checkpoint_sha256"] == file_sha256(site.checkpoint)
    assert decision.targets == {"sensitivity": 0.9, "specificity": 0.9}
    record = json.loads((out / CALIBRATION_RECORD).read_text())
    assert record["written_files"] == [site.checkpoint.name] and record["complete"]
    assert "after (refitted here)" in (out / "calibration.md").read_text()
    identity = Predictor.from_checkpoints(out / site.checkpoint.name, device="cpu").identity
    assert identity.decision_origin == decision.fitted_on


def test_a_small_sample_is_reported_and_nothing_is_written(site, tmp_path) -> None:
    out = tmp_path / "small"
    report = calibrate_checkpoints([site.checkpoint], site.cache, out, site=SITE, split="train", device="cpu")
    assert set(report["too_small"]) == {"suspicious", "definite"} and report["written"] == []
    assert (
        "interval of sensitivity at its threshold" in report["too_small"]["suspicious"] and not out.exists()
    )
    forced = calibrate_checkpoints(
        [site.checkpoint], site.cache, out, site=SITE, split="train", device="cpu", allow_small_sample=True
    )
    assert forced["written"] == [str(out / site.checkpoint.name)]


def test_the_cli_says_plainly_when_the_sample_is_too_small(site, tmp_path, capsys) -> None:
    args = ["calibrate", "--checkpoint", str(site.checkpoint), "--cache", str(site.cache)]
    code = main(
        [*args, "--site", SITE, "--split", "train", "--out", str(tmp_path / "o"), "--bootstrap", "200"]
    )
    printed = capsys.readouterr().out
    assert code == 1 and "the sample is too small to set it" in printed and "no checkpoint written" in printed
    assert "--allow-small-sample" in printed and "allow_small_sample" not in printed
    assert "ECE" in printed and "before (as stored)" in printed


def test_it_never_replaces_a_file_it_did_not_write(site, calibrated, tmp_path) -> None:
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("my own")
    with pytest.raises(MuraError, match="did not write"):
        calibrate_checkpoints([site.checkpoint], site.cache, foreign, site=SITE, split="train", device="cpu")
    out, _ = calibrated
    with pytest.raises(MuraError, match="is an input checkpoint"):  # refitting its own output in place
        calibrate_checkpoints([out / site.checkpoint.name], site.cache, out, site=SITE, device="cpu")
    with pytest.raises(MuraError, match="site="):
        calibrate_checkpoints([site.checkpoint], site.cache, tmp_path / "x", site=" ", device="cpu")


def test_the_sample_size_rule_and_the_ece_interval() -> None:
    assert min_class_images(0.9) == 35  # a 0.2-wide binomial interval around 0.90
    assert min_class_images(0.99) == 100  # fewer could not show a single miss
    rng = np.random.default_rng(0)
    probs = rng.random(500)
    labels = (rng.random(500) < probs).astype(int)
    studies = [str(i // 3) for i in range(500)]
    interval = ece_interval(studies, labels, probs, n_resamples=300)
    assert interval["estimate"] == pytest.approx(expected_calibration_error(labels, probs))
    # the plug-in ECE of calibrated probabilities is biased upwards: the interval for the true ECE lies lower
    assert 0 <= interval["low"] < interval["high"] and interval["low"] < interval["estimate"]


def test_an_ensemble_gets_a_calibration_per_member_and_shared_points(site, make_checkpoint, tmp_path) -> None:
    other = make_checkpoint("calibrate_other.pt", "custom_cnn", 32, seed=6)
    report = calibrate_checkpoints(
        [site.checkpoint, other],
        site.cache,
        tmp_path / "pair",
        site=SITE,
        split="train",
        device="cpu",
        allow_small_sample=True,
    )
    decisions = [load_checkpoint(path).meta.decision for path in report["written"]]
    assert [Path(p).name for p in report["written"]] == [site.checkpoint.name, other.name]
    assert decisions[0].calibration != decisions[1].calibration  # each fitted on its own margins
    assert decisions[0].thresholds == decisions[1].thresholds == report["thresholds"]
    ensemble = Predictor.from_checkpoints(report["written"], device="cpu", threshold="suspicious")
    assert ensemble.threshold == pytest.approx(report["thresholds"]["suspicious"])

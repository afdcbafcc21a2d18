"""Cross-validation: folds disjoint by patient / id block, every image predicted once out of fold, the
decision fitted on those predictions and shipped in every member of the fold ensemble."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mura.checkpoint import load_checkpoint
from mura.cli import main
from mura.config_loading import load_config
from mura.data.splits import assign_folds, fold_groups
from mura.errors import MuraError
from mura.evaluation.localisation import NO_MAP_OUTPUT
from mura.experiments.cv import cross_validate
from mura.inference.cache_predictions import predict_cache
from mura.inference.predictor import Predictor
from mura.training.part_floor import fit_body_part_floor


def _fracatlas_like(n: int = 400, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    ids = np.sort(rng.choice(5000, n, replace=False))
    return pd.DataFrame(
        {
            "path": [f"/x/IMG{i:07d}.jpg" for i in ids],
            "study_id": [f"fracatlas/IMG{i:07d}" for i in ids],
            "patient_id": "",
            "label": (rng.random(n) < 0.2).astype(int),
        }
    )


@pytest.mark.parametrize("folds", [3, 5])
def test_folds_cover_every_image_once_disjoint_by_block_and_balanced(folds) -> None:
    frame = _fracatlas_like()
    assigned = assign_folds(frame, folds, block_size=20)
    assert set(assigned) == set(range(folds)) and len(assigned) == len(frame)
    groups = fold_groups(frame, 20)
    per_group = pd.Series(assigned).groupby(groups).nunique()
    assert (per_group == 1).all()  # a block of ids never straddles two folds
    sizes = np.bincount(assigned)
    positives = np.bincount(assigned, weights=frame["label"])
    assert sizes.max() - sizes.min() <= 0.15 * len(frame) / folds + 20
    assert positives.max() - positives.min() <= 0.25 * frame["label"].sum() / folds + 8
    assert np.array_equal(assigned, assign_folds(frame, folds, block_size=20))  # deterministic


def test_patients_stay_whole() -> None:
    frame = _fracatlas_like(200).assign(patient_id=[f"p{i // 3}" for i in range(200)])
    assigned = assign_folds(frame, 4)
    assert (pd.Series(assigned).groupby(frame["patient_id"]).nunique() == 1).all()
    with pytest.raises(MuraError, match="too few"):
        assign_folds(frame.iloc[:6], 4)


@pytest.fixture(scope="module")
def cv_run(synthetic_mura, tmp_path_factory):
    out = tmp_path_factory.mktemp("cv") / "run"
    cfg = load_config(
        overrides={
            "data.cache": str(synthetic_mura.small_cache_dir),
            "data.workers": 0,
            "model.name": "custom_cnn",
            "model.size": 32,
            "train.epochs": 2,
            "train.batch_size": 16,
            "train.scheduler": "cosine",
            "out": str(out),
        }
    )
    return cfg, cross_validate(cfg, 3, tta=False, n_bootstrap=50, by=["view"])


def test_every_image_is_predicted_once_by_the_model_that_did_not_see_it(cv_run, synthetic_mura) -> None:
    cfg, result = cv_run
    oof = pd.read_csv(result.oof_predictions)
    cache_index = pd.read_csv(synthetic_mura.small_cache_dir / "index.csv")
    assert sorted(oof["path"]) == sorted(cache_index["path"])  # all splits pooled, each image once
    expected = assign_folds(cache_index, 3, cfg.data.fold_block_size)
    by_path = dict(zip(cache_index["path"], expected, strict=True))
    assert all(by_path[p] == f for p, f in zip(oof["path"], oof["fold"], strict=True))
    for k in range(3):  # the fold's training run saw none of its held-out images
        history = load_checkpoint(result.out_dir / f"fold{k}" / "last.pt").training_state["history"]
        assert history[-1]["val_images"] == int((oof["fold"] == k).sum())


def test_the_fold_ensemble_carries_the_oof_decision(cv_run, synthetic_mura) -> None:
    _, result = cv_run
    assert [p.name for p in result.final_checkpoints] == ["fold0.pt", "fold1.pt", "fold2.pt"]
    decisions = [load_checkpoint(p).meta.decision for p in result.final_checkpoints]
    assert all(d == decisions[0] for d in decisions) and "out-of-fold" in decisions[0].fitted_on
    assert decisions[0].calibration.method == "platt"
    assert set(decisions[0].thresholds) == {"default", "youden", "suspicious", "definite"}
    oof = pd.read_csv(result.oof_predictions)
    labels, probs = oof["label"].to_numpy(), oof["fracture_prob"].to_numpy()
    assert (probs[labels == 1] >= decisions[0].threshold("suspicious")).mean() >= 0.9
    summary = json.loads((result.out_dir / "cv.json").read_text())
    assert summary["n_images"] == len(oof) and 0 <= summary["oof_auc"] <= 1
    assert set(summary["calibration"]["cross_fitted"]) == {"none", "temperature", "platt", "isotonic"}
    assert summary["seconds"]["cpu"] > 0 and (result.out_dir / "oof" / "report.html").is_file()
    # the tiers' figures: what each point did on the out-of-fold images; synthetic labels are abnormality
    counts = decisions[0].figures["suspicious"]
    assert counts.images == len(oof) and counts.sensitivity >= 0.9
    assert load_checkpoint(result.final_checkpoints[0]).meta.positive_class == "abnormality"
    # the report leads with the deployed point and reports by any index column asked for
    assert summary["headline"].startswith("AUC ") and "suspicious: sensitivity" in summary["headline"]
    low, high = summary["operating_points"]["suspicious"]["ci"]["sensitivity"]
    assert low < summary["operating_points"]["suspicious"]["sensitivity"] <= high  # Wilson: never a point
    assert "Subgroups by view" in (result.out_dir / "oof" / "report.md").read_text()
    # the synthetic index has boxes, this model no map head: said once, nothing stands in for its boxes
    assert summary["localisation"] == {"status": NO_MAP_OUTPUT}
    assert f"## Localisation\n\n{NO_MAP_OUTPUT}." in (result.out_dir / "oof" / "report.md").read_text()
    ensemble = Predictor.from_checkpoints(result.final_checkpoints, device="cpu")
    assert ensemble.threshold_name == "suspicious"
    assert len(predict_cache(ensemble, synthetic_mura.small_cache_dir, "test")) > 0


def test_every_fold_carries_a_scope_detector_thresholded_on_the_pooled_out_of_fold_scores(cv_run) -> None:
    _, result = cv_run
    detectors = [load_checkpoint(p).meta.scope_detector for p in result.final_checkpoints]
    assert all(d is not None for d in detectors)
    assert len({d.threshold for d in detectors}) == 1  # one threshold, pooled over the folds
    assert "3-fold cross-validation" in detectors[0].fitted_on and detectors[0].target_rate == 0.01
    assert len({d.depths[0].score_mean for d in detectors}) == 3  # each fold fitted on its own films
    oof = pd.read_csv(result.oof_predictions)  # every film was scored by the fold that held it out
    refused = float(np.mean(oof["scope_score"] > detectors[0].threshold))
    assert refused == pytest.approx(detectors[0].rate_reached) and refused <= 0.01
    summary = json.loads((result.out_dir / "cv.json").read_text())["scope_detector"]
    assert summary["rate_reached_out_of_fold"] == detectors[0].rate_reached


def test_every_fold_carries_one_body_part_floor_fitted_on_the_out_of_fold_films(cv_run) -> None:
    _, result = cv_run
    metas = [load_checkpoint(p).meta for p in result.final_checkpoints]
    floors = {m.body_part_floor for m in metas}
    assert len(floors) == 1 and None not in floors  # one floor for the fold ensemble
    oof = pd.read_csv(result.oof_predictions)  # each film's part guessed by the fold that held it out
    known = oof["body_part"].isin(metas[0].body_parts)
    assert known.sum() > 50
    correct = (oof.loc[known, "body_part_pred"] == oof.loc[known, "body_part"]).to_numpy()
    assert floors == {fit_body_part_floor(oof.loc[known, "body_part_prob"].to_numpy(), correct)}
    own = [
        load_checkpoint(p.parent.parent / p.stem / "last.pt").meta.body_part_floor
        for p in result.final_checkpoints
    ]
    assert len(set(own)) > 1  # each fold's own floor (its val films) differs: the deployed one is pooled
    report = json.loads((result.out_dir / "oof" / "metrics.json").read_text())
    assert report["meta"]["body_part_floor"] == floors.pop()  # the report scores what is deployed
    assert report["body_part"]["n"] == known.sum()


def test_a_rerun_resumes_and_a_foreign_folder_is_refused(cv_run, tmp_path) -> None:
    cfg, result = cv_run
    done = [(result.out_dir / f"fold{k}" / "done.json").read_text() for k in range(3)]
    again = cross_validate(cfg, 3, tta=False, n_bootstrap=0)
    assert [(result.out_dir / f"fold{k}" / "done.json").read_text() for k in range(3)] == done
    assert again.summary["oof_auc"] == pytest.approx(result.summary["oof_auc"])
    (tmp_path / "notes.txt").write_text("mine")
    other = cfg.model_copy(deep=True)
    other.out = str(tmp_path)
    with pytest.raises(MuraError, match="not a `mura cv` folder"):
        cross_validate(other, 3)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_an_unknown_by_column_is_refused_before_any_fold_trains(synthetic_mura, tmp_path) -> None:
    cfg = load_config(
        overrides={"data.cache": str(synthetic_mura.small_cache_dir), "out": str(tmp_path / "cv")}
    )
    with pytest.raises(MuraError, match="by: no column 'region'"):
        cross_validate(cfg, 3, by=["region"])
    assert not (tmp_path / "cv").exists()


def _files(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under `folder` with its size and modification time: what "left untouched" compares."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


def test_folds_trained_with_other_settings_are_refused_and_nothing_is_touched(
    cv_run, synthetic_mura, tmp_path, capsys
) -> None:
    cfg, result = cv_run
    out = tmp_path / "cv"
    shutil.copytree(result.out_dir, out)
    before = _files(out)
    changed = cfg.model_copy(deep=True)
    changed.out, changed.train.lr = str(out), 0.01
    with pytest.raises(
        MuraError,
        match=r"cv: fold settings changed since the folds already trained \(folds 3 -> 4; train.lr 0.001 -> "
        r"0.01\): use a new output folder, or retrain=True to discard them$",
    ):
        cross_validate(changed, 4, tta=False, n_bootstrap=0)
    assert _files(out) == before

    # The same from the command line, naming its flag; cv_config.yaml still says what trained the folds.
    flags = {
        "--cache": str(synthetic_mura.small_cache_dir),
        "--data.workers": "0",
        "--model.name": "custom_cnn",
        "--model.size": "32",
        "--train.epochs": "2",
        "--train.batch_size": "16",
        "--train.scheduler": "cosine",
        "--folds": "3",
        "--lr": "0.01",
        "--out": str(out),
    }
    assert main(["cv", *(item for pair in flags.items() for item in pair)]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("mura cv: error: ") and "\n" not in error
    assert "(train.lr 0.001 -> 0.01): use a new output folder, or --retrain to discard them" in error
    assert load_config(out / "cv_config.yaml").train.lr == 0.001 and _files(out) == before

    # A fold that does not say what it was trained from is not trusted either.
    (out / "fold1" / "fold.json").unlink()
    with pytest.raises(MuraError, match="fold1 has no fold.json saying what it was trained from"):
        cross_validate(cfg.model_copy(update={"out": str(out)}), 3, tta=False, n_bootstrap=0)


def test_retrain_replaces_exactly_the_stale_folds_and_the_results_built_on_them(cv_run, tmp_path) -> None:
    cfg, result = cv_run
    out = tmp_path / "cv"
    shutil.copytree(result.out_dir, out)
    (out / "notes.txt").write_text("mine")
    (out / "fold0" / "notes.txt").write_text("mine")
    changed = cfg.model_copy(deep=True)
    changed.out, changed.train.epochs = str(out), 1
    again = cross_validate(changed, 4, tta=False, n_bootstrap=0, retrain=True)
    assert load_config(out / "cv_config.yaml").train.epochs == 1
    oof = pd.read_csv(again.oof_predictions)
    assert sorted(oof["fold"].unique()) == [0, 1, 2, 3]
    for k in range(4):  # every fold trained again, on the 4-fold assignment, with the new settings
        history = load_checkpoint(out / f"fold{k}" / "last.pt").training_state["history"]
        assert len(history) == 1 and history[-1]["val_images"] == int((oof["fold"] == k).sum())
    assert sorted(p.name for p in (out / "final").glob("*.pt")) == [f"fold{k}.pt" for k in range(4)]
    assert (out / "notes.txt").read_text() == (out / "fold0" / "notes.txt").read_text() == "mine"
    assert json.loads((out / "cv.json").read_text())["n_images"] == len(oof)


def test_an_ensemble_of_runs_decides_at_points_fitted_on_its_oof_mean(cv_run, tmp_path) -> None:
    from mura.experiments.ensemble import ensemble_runs

    cfg, first = cv_run
    other = cfg.model_copy(deep=True)
    other.train.seed, other.out = 1, str(tmp_path / "seed1")
    second = cross_validate(other, 3, tta=False, n_bootstrap=0)
    summary = ensemble_runs([first.out_dir, second.out_dir], tmp_path / "ens", n_bootstrap=50)
    members = sorted((tmp_path / "ens" / "final").glob("*.pt"))
    assert len(members) == 6 and len(summary["members"]) == 6
    decisions = [load_checkpoint(p).meta.decision for p in members]
    assert len({tuple(sorted(d.thresholds.items())) for d in decisions}) == 1  # one set of points
    # each member keeps the scope detector its own cv fitted (layer 3 averages their margins)
    detectors = [load_checkpoint(p).meta.scope_detector for p in members]
    assert all(d is not None and "3-fold cross-validation" in d.fitted_on for d in detectors)
    assert {d.calibration for d in decisions[:3]} == {
        load_checkpoint(first.final_checkpoints[0]).meta.decision.calibration
    }
    oof = pd.read_csv(tmp_path / "ens" / "oof_predictions.csv")
    expected = (pd.read_csv(first.oof_predictions).set_index("path")["fracture_prob"]
                + pd.read_csv(second.oof_predictions).set_index("path")["fracture_prob"]) / 2  # fmt: skip
    assert np.allclose(oof.set_index("path")["fracture_prob"], expected.loc[oof["path"]])
    labels, probs = oof["label"].to_numpy(), oof["fracture_prob"].to_numpy()
    suspicious = decisions[0].threshold("suspicious")
    assert (probs[labels == 1] >= suspicious).mean() >= 0.9
    assert Predictor.from_checkpoints(members, device="cpu").threshold == pytest.approx(suspicious)
    with pytest.raises(MuraError, match="not a finished `mura cv` folder"):
        ensemble_runs([first.out_dir, tmp_path], tmp_path / "bad")
    # Built again from the same, unchanged runs it is refitted in place.
    rebuilt = ensemble_runs([first.out_dir, second.out_dir], tmp_path / "ens", n_bootstrap=0)
    assert rebuilt["members"] == summary["members"] and rebuilt["runs"] == summary["runs"]
    # A run whose final/ holds a member its cv.json does not list (left by an earlier run) is refused.
    leftover = tmp_path / "leftover"
    shutil.copytree(second.out_dir, leftover)
    shutil.copy(leftover / "final" / "fold0.pt", leftover / "final" / "fold3.pt")
    with pytest.raises(MuraError, match=r"final/ holds fold0.pt, fold1.pt, fold2.pt, fold3.pt but its cv"):
        ensemble_runs([first.out_dir, leftover], tmp_path / "ens2", n_bootstrap=0)
    # Re-run into the same folder with other members: none of the earlier ones is left behind, and a
    # file the ensemble did not write stays.
    (tmp_path / "ens" / "final" / "notes.pt").write_text("mine")
    third = other.model_copy(deep=True)
    third.train.seed, third.out = 2, str(tmp_path / "seed2")
    cross_validate(third, 3, tta=False, n_bootstrap=0)
    runs = [first.out_dir, tmp_path / "seed2"]
    with pytest.raises(MuraError, match=r"ens: holds an ensemble built from other runs \(runs run \+ seed1"):
        ensemble_runs(runs, tmp_path / "ens", n_bootstrap=0)
    assert {p.name for p in (tmp_path / "ens" / "final").glob("seed1_*.pt")}  # the earlier ensemble is whole
    again = ensemble_runs(runs, tmp_path / "ens", n_bootstrap=0, overwrite=True)
    left = {p.name for p in (tmp_path / "ens" / "final").glob("*.pt")}
    assert left == {Path(m).name for m in again["members"]} | {"notes.pt"}
    assert not any(name.startswith("seed1_") for name in left)

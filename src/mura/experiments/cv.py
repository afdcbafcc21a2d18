"""`mura cv`: K-fold cross-validation of one recipe, and the fold ensemble as the deployed model.

Why: on a data set the size of FracAtlas a held-out split of a few dozen positives cannot tell recipes
apart (intervals of +-0.04 AUC), and choices made on it do not carry over. Cross-validation scores
every image once, by the model that did not see it (out-of-fold, OOF), so a recipe is judged on all
of them.

Protocol, per fold k (folds by patient, or by blocks of consecutive ids where there are no patients:
`mura.data.splits.assign_folds`): train on the other folds for the recipe's fixed number of epochs and
keep the last epoch (nothing is selected on fold k, so its predictions stay honest), then predict fold
k. OOF rows the scope gate refuses (`mura.inference.scope`, layer 2: cache rows have no header) are
listed in oof/not_assessed.csv and counted in cv.json, and enter no figure. The decision (calibration +
operating points, `mura.decision`) is fitted once on the other OOF margins and stored in every fold
checkpoint; `final/fold*.pt` is the fold ensemble (the deployed model:
`mura predict --checkpoint final/*.pt`). A fold ensemble rather than a refit on all data: it needs no
extra training run, each member's calibration was fitted on predictions of exactly such models, and
an average of K models is at least as good as one on unseen films; the OOF figures describe a single
member, so they are a slightly conservative estimate of the ensemble.

Work resumes, honestly: a finished fold (`fold{k}/done.json`) is kept and an interrupted one continues
from its `last.pt` only if its `fold.json` (`cv_resume`) says it was trained from the same recipe,
folds and data. Otherwise the run is refused with what changed, or, asked to retrain, exactly the
stale folds' files and the results built on them (cv.json, OOF predictions, report, final/) are removed
first. So `cv_config.yaml` always names the config that produced the folds beside it.
"""

from __future__ import annotations

import json
import logging
import resource
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mura import checkpoint as ckpt
from mura.atomic import write_text
from mura.config import Config
from mura.data.cache import ImageCache, open_cache
from mura.data.index import read_index
from mura.data.splits import assign_folds
from mura.decision import fit_decision, margins_from_probs
from mura.errors import MuraError
from mura.evaluation.localisation import predictions_localisation, rescored_map_boxes, truth_column
from mura.evaluation.report import evaluate_predictions, write_report
from mura.evaluation.runner import (
    add_index_columns,
    check_by_columns,
    leave_out_of_scope,
    write_not_assessed,
)
from mura.experiments.cv_resume import (
    DONE,
    FOLD_RECORD,
    FoldRecord,
    assignment_digest,
    discard,
    stale_folds,
    trained_folds,
)
from mura.experiments.cv_summary import cross_fitted_calibration, cv_summary
from mura.inference.cache_predictions import predict_cache
from mura.inference.predictor import Predictor
from mura.training.loop import train
from mura.training.part_floor import fit_body_part_floor
from mura.training.run_dir import LAST_CHECKPOINT
from mura.training.scope_fit import fit_fold_detectors

log = logging.getLogger(__name__)
CV_MARKER = "cv_config.yaml"


@dataclass
class CvResult:
    out_dir: Path
    final_checkpoints: list[Path]
    oof_predictions: Path
    summary: dict[str, Any]


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (data-loader workers), all threads."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _check_out_dir(out: Path) -> None:
    """A CV folder is resumed; any other non-empty folder is refused (never overwrite what is not ours)."""
    if out.is_dir() and any(out.iterdir()) and not (out / CV_MARKER).is_file():
        raise MuraError(f"{out}: exists and is not a `mura cv` folder; choose another output folder")


def fold_config(cfg: Config, folds: int, fold: int, out: Path) -> Config:
    fold_cfg = cfg.model_copy(deep=True)
    fold_cfg.data.folds, fold_cfg.data.fold, fold_cfg.out = folds, fold, str(out / f"fold{fold}")
    fold_cfg.train.early_stopping_patience = 0  # fixed epochs: nothing is chosen on the held-out fold
    return fold_cfg


def train_fold(cfg: Config, record: FoldRecord) -> dict[str, float]:
    """Train one fold (or finish an interrupted one whose record `cross_validate` found matching); its
    seconds are kept in done.json."""
    run = Path(cfg.out)
    done = run / DONE
    if done.is_file():
        return json.loads(done.read_text())
    resume = (run / LAST_CHECKPOINT).is_file()
    if not resume:  # recorded before training, so an interrupted fold is checked like a finished one
        write_text(run / FOLD_RECORD, record.to_json())
    wall, cpu = time.perf_counter(), _cpu_seconds()
    # Without last.pt nothing was saved: files of a start that died before its first epoch are replaced.
    train(cfg, resume=resume, overwrite=not resume, scope_detector=False)  # fitted on last.pt below
    seconds = {"wall_seconds": time.perf_counter() - wall, "cpu_seconds": _cpu_seconds() - cpu}
    write_text(done, json.dumps(seconds) + "\n")
    return seconds


def pooled_folds(cfg: Config, cache: ImageCache, folds: int) -> tuple[pd.DataFrame, np.ndarray]:
    """The index rows of the pooled splits and the fold of each."""
    pooled = [s.strip() for s in cfg.data.fold_splits.split(",") if s.strip()]
    inside = cache.index[cache.index["split"].isin(pooled)]
    return inside, assign_folds(inside, folds, cfg.data.fold_block_size)


def predict_folds(cfg: Config, folds: int, out: Path, tta: bool) -> pd.DataFrame:
    """Each image predicted by the model of the fold that held it out (uncalibrated: last.pt)."""
    cache = open_cache(cfg.data.cache)
    inside, assigned = pooled_folds(cfg, cache, folds)
    parts = []
    for k in range(folds):
        predictor = Predictor.from_checkpoints(
            [out / f"fold{k}" / LAST_CHECKPOINT], device=cfg.train.device, tta=tta
        )
        paths = inside.loc[assigned == k, "path"].astype(str).tolist()
        part = predict_cache(predictor, cache, split=None, paths=paths)
        parts.append(part.assign(fold=k))
    return pd.concat(parts).sort_values("cache_row").reset_index(drop=True)


def cross_validate(
    cfg: Config,
    folds: int,
    *,
    tta: bool = True,
    n_bootstrap: int = 1000,
    seed: int = 0,
    retrain: bool = False,
    by: Sequence[str] = (),
) -> CvResult:
    """Train the K folds, predict out of fold, fit the decision on OOF, write final/ and the OOF report
    (with subgroups per value of each `by` column of the cache's index or `cfg.data.index`, checked
    before any fold is trained).

    Folds trained earlier in `cfg.out` are reused only if trained from the same recipe, folds and data;
    otherwise MuraError naming what changed, before anything is written, or with `retrain` they are
    discarded (with the results built on them) and trained again.
    """
    if folds < 2:
        raise MuraError(f"cross-validation needs at least 2 folds, got {folds}")
    out = Path(cfg.out)
    _check_out_dir(out)
    cache = open_cache(cfg.data.cache)
    index = read_index(cfg.data.index) if cfg.data.index and by else cache.index
    check_by_columns(by, cache.index, index)
    inside, assigned = pooled_folds(cfg, cache, folds)
    digest = assignment_digest(inside["path"].astype(str), assigned)
    record = FoldRecord.of(cfg, folds, digest, cache.settings.fingerprint)
    stale = stale_folds(out, record)
    if stale and not retrain:
        changes = "; ".join(dict.fromkeys(change for found in stale.values() for change in found))
        raise MuraError(
            f"{out}: fold settings changed since the folds already trained ({changes}): use a new output "
            "folder, or retrain=True to discard them"
        )
    kept = [run for run in trained_folds(out) if run not in stale]
    if stale or not kept:
        discard(out, list(stale))
    if not kept:  # nothing reused: the folder's config is this one (kept folds match the saved one)
        out.mkdir(parents=True, exist_ok=True)
        cfg.save(out / CV_MARKER)
    seconds = [train_fold(fold_config(cfg, folds, k, out), record) for k in range(folds)]
    # Out-of-scope rows (layer 2: cache rows have no header) never reach the decision fit or the figures
    oof, refused, not_assessed = leave_out_of_scope(
        cache, inside, predict_folds(cfg, folds, out, tta), "of the pooled folds"
    )
    oof = add_index_columns(oof, index, by)
    labels = oof["label"].to_numpy(dtype=int)
    margins = margins_from_probs(oof["uncalibrated_prob"].to_numpy())
    decision = fit_decision(
        margins,
        labels,
        method=cfg.train.calibration,
        target_sensitivity=cfg.train.target_sensitivity,
        target_specificity=cfg.train.target_specificity,
        fitted_on=f"out-of-fold predictions of {folds}-fold cross-validation ({len(oof)} images)",
    )
    fold_probability = oof["fracture_prob"].to_numpy()  # each fold's own calibration
    oof["fracture_prob"] = decision.probabilities(margins)
    if "map_boxes" in oof:  # a box scores image probability x region peak: restated at the OOF decision
        oof["map_boxes"] = rescored_map_boxes(oof["map_boxes"], fold_probability, oof["fracture_prob"])
    detectors, oof_scores = fit_fold_detectors(
        [out / f"fold{k}" / LAST_CHECKPOINT for k in range(folds)],
        cache,
        inside,
        assigned,
        device=cfg.train.device,
        seed=cfg.train.seed,
    )
    oof["scope_score"] = oof["path"].astype(str).map(pd.Series(oof_scores, index=inside["path"].astype(str)))
    oof["decision"] = (oof["fracture_prob"] >= decision.threshold()).astype(int)
    if cache.boxes and "map_boxes" in oof:
        oof["true_boxes"] = truth_column(oof["cache_row"], cache.boxes)
    oof_csv = write_text(out / "oof_predictions.csv", oof.to_csv(index=False))
    thresholds = {k: v for k, v in decision.thresholds.items() if k != "default"}
    meta = {
        "split": f"out-of-fold ({folds}-fold cross-validation)",
        "models": [cfg.model.name],
        "checkpoints": [str(out / f"fold{k}" / LAST_CHECKPOINT) for k in range(folds)],
        "tta": tta,
        "threshold_source": decision.fitted_on,
        "default_operating_point": decision.default_point(),
        "calibration": decision.calibration.method,
        "not_assessed": not_assessed,
    }
    sources = [ckpt.load_checkpoint(out / f"fold{k}" / LAST_CHECKPOINT) for k in range(folds)]
    floor = oof_body_part_floor(oof, sources[0].meta.body_parts)
    # Models without an unknown-part embedding keep feeding their argmax (no floor).
    deployed_floor = None if sources[0].meta.body_part_floor is None else floor
    result = evaluate_predictions(
        oof,
        thresholds,
        body_parts=sources[0].meta.body_parts,
        body_part_floor=deployed_floor,
        calibration_method=decision.calibration.method,
        by=by,
        n_bootstrap=n_bootstrap,
        seed=seed,
        meta=meta,
    )
    if cache.boxes:  # out-of-fold localisation: each film's boxes from the fold that held it out
        result["localisation"] = predictions_localisation(oof, cache.boxes, n_bootstrap, seed)
    write_report(result, oof, out / "oof", run_dirs=[out / f"fold{k}" for k in range(folds)], cache=cache)
    write_not_assessed(out / "oof", refused)
    final = []
    for k, source in enumerate(sources):
        provenance = {
            **source.meta.provenance,
            "cross_validation": {"folds": folds, "fold": k, "out": str(out)},
        }
        meta_k = source.meta.replace(
            decision=decision,
            provenance=provenance,
            body_part_floor=deployed_floor,
            scope_detector=detectors[k],
        )
        final.append(ckpt.save_checkpoint(out / "final" / f"fold{k}.pt", source.model_state, meta_k))
    calibration = cross_fitted_calibration(oof, folds)
    summary = cv_summary(result, decision, calibration, seconds, final, detectors[0])
    write_text(out / "cv.json", json.dumps(summary, indent=1, default=float) + "\n")
    return CvResult(out, final, oof_csv, summary)


def oof_body_part_floor(oof: pd.DataFrame, body_parts: Sequence[str]) -> float:
    """The body-part confidence floor (`mura.training.part_floor`) fitted on the out-of-fold films whose
    part is one of the model's `body_parts`: the deployed fold ensemble trusts a guess as sure as those
    that were right 95% of the time."""
    truth = oof["body_part"].fillna("").astype(str).str.upper()
    known = truth.isin(list(body_parts))
    correct = oof.loc[known, "body_part_pred"].to_numpy() == truth[known].to_numpy()
    return fit_body_part_floor(oof.loc[known, "body_part_prob"].to_numpy(), correct)

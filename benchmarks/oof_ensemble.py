"""Out-of-fold AUC of an ensemble of cross-validated recipes: the mean of their deployed (calibrated)
out-of-fold probabilities per film. Valid because `mura cv` makes the same folds for every recipe of
one index, so each film's members all come from models that did not see it.

    .venv/bin/python benchmarks/oof_ensemble.py runs/fracatlas/fracture_cpu runs/fracatlas/lite0_256
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from mura.evaluation.bootstrap import bootstrap_over_studies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="`mura cv` output folders")
    args = parser.parse_args()
    frames = [pd.read_csv(run / "oof_predictions.csv").set_index("path") for run in args.runs]
    paths = frames[0].index
    if any(set(f.index) != set(paths) or (f.loc[paths, "fold"] != frames[0]["fold"]).any() for f in frames):
        raise SystemExit("the runs were not cross-validated on the same films and folds")
    probs = np.mean([f.loc[paths, "fracture_prob"].to_numpy() for f in frames], axis=0)
    labels = frames[0]["label"].to_numpy()
    auc = bootstrap_over_studies(frames[0]["study_id"].to_numpy(), labels, probs, 0.5, 1000)["roc_auc"]
    names = " + ".join(run.name for run in args.runs)
    interval = f"[{auc['low']:.3f}, {auc['high']:.3f}]"
    print(f"{names}: out-of-fold AUC {auc['estimate']:.3f} {interval} on {len(paths)} films")


if __name__ == "__main__":
    main()

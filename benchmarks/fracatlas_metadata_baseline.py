"""What the pixels must beat on FracAtlas: a logistic regression on the index's metadata flags alone.

Same folds as `mura cv` (`mura.data.splits.assign_folds`, blocks of 20 ids), out-of-fold AUC with a
bootstrap CI, so it sits in the same table as the recipes (docs/benchmarks/fracatlas.md).

    .venv/bin/python benchmarks/fracatlas_metadata_baseline.py runs/fracatlas/index.csv
"""

from __future__ import annotations

import argparse

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from mura.data.index import read_index
from mura.data.splits import assign_folds

FLAGS = ("hand", "leg", "hip", "shoulder", "mixed", "hardware", "multiscan", "frontal", "lateral", "oblique")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("index")
    parser.add_argument("--folds", type=int, default=5)
    args = parser.parse_args()
    frame = read_index(args.index)
    x = frame[list(FLAGS)].astype(float).to_numpy()
    y = frame["label"].to_numpy(dtype=int)
    folds = assign_folds(frame, args.folds, 20)
    oof = np.zeros(len(y))
    for k in range(args.folds):
        model = LogisticRegression(max_iter=1000).fit(x[folds != k], y[folds != k])
        oof[folds == k] = model.predict_proba(x[folds == k])[:, 1]
    rng = np.random.default_rng(0)
    boots = [roc_auc_score(y[i], oof[i]) for i in (rng.integers(0, len(y), len(y)) for _ in range(1000))]
    low, high = np.percentile(boots, [2.5, 97.5])
    print(
        f"metadata flags only ({', '.join(FLAGS)}): out-of-fold AUC {roc_auc_score(y, oof):.3f} "
        f"[{low:.3f}, {high:.3f}] on {len(y)} images, {args.folds} folds"
    )


if __name__ == "__main__":
    main()

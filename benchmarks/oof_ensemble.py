"""Out-of-fold AUC of an ensemble of cross-validated recipes, without writing its checkpoints (that is
`mura ensemble`): the mean of their deployed (calibrated) out-of-fold probabilities per film, the
same mean `mura ensemble` and the Predictor compute.

    .venv/bin/python benchmarks/oof_ensemble.py runs/fracatlas/fracture_cpu runs/fracatlas/lite0_256
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mura.errors import MuraError
from mura.evaluation.bootstrap import bootstrap_over_studies
from mura.experiments.ensemble import ensemble_oof


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="`mura cv` output folders")
    args = parser.parse_args()
    try:
        oof, _ = ensemble_oof(args.runs)
    except MuraError as exc:
        raise SystemExit(f"error: {exc}") from None
    labels, probs = oof["label"].to_numpy(dtype=int), oof["fracture_prob"].to_numpy()
    auc = bootstrap_over_studies(oof["study_id"].to_numpy(), labels, probs, 0.5, 1000)["roc_auc"]
    names = " + ".join(run.name for run in args.runs)
    interval = f"[{auc['low']:.3f}, {auc['high']:.3f}]"
    print(f"{names}: out-of-fold AUC {auc['estimate']:.3f} {interval} on {len(oof)} films")


if __name__ == "__main__":
    main()

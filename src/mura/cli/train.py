"""`mura train`: train one model from an image cache (single process, or every rank under torchrun).

    mura train --config configs/efficientnet_b0.yaml --index INDEX.csv --cache CACHE_DIR --out RUN_DIR
    mura train --config configs/resnet50.yaml --cache CACHE_DIR --out RUN_DIR --lr 3e-4 --train.epochs 30
    mura train --out RUN_DIR --resume            # continue an interrupted run with its saved config
    torchrun --nproc_per_node 4 -m mura train --config ... --out RUN_DIR

Every config key is a flag: `--section.key VALUE`, or `--key VALUE` where the key name is unique.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from mura.config import Config, FieldSpec, config_fields
from mura.config_loading import load_config

OVERRIDE_PREFIX = "override:"
DEFAULT_FOLDS = 5
# How `train()`'s errors name its parameters, and the flags of `mura train` that set them.
TRAIN_FLAGS = {"resume=True": "--resume", "overwrite=True": "--overwrite"}


def _flag_help(spec: FieldSpec) -> str:
    default = str(spec.default).lower() if spec.value_type is bool else repr(spec.default)
    return f"{spec.help} (default: {default})".replace("%", "%%")  # argparse formats help with %


def _metavar(spec: FieldSpec) -> str | None:
    """None for choices (argparse then shows `{a,b,c}`), else the value's type."""
    if spec.dotted == "out":
        return "RUN_DIR"
    if spec.value_type is bool:
        return "{true,false}"
    return None if spec.choices else spec.value_type.__name__.upper()


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per config key (`--train.lr`, and `--lr` where unambiguous), with its help and choices.

    Values stay strings here: `load_config` validates them all at once, so an error names the key, the
    value and what is allowed. `Literal` keys also get argparse `choices`, listed by `--help`.
    """
    group = parser.add_argument_group("config overrides (defaults -> --config YAML -> these flags)")
    for spec in config_fields():
        flags = [f"--{spec.dotted}"] + ([f"--{spec.short}"] if spec.short else [])
        group.add_argument(
            *flags,
            dest=OVERRIDE_PREFIX + spec.dotted,
            metavar=_metavar(spec),
            choices=spec.choices,
            default=argparse.SUPPRESS,
            help=_flag_help(spec),
        )


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `mura train`."""
    parser = subparsers.add_parser(
        "train",
        help="train a model from an image cache",
        description=__doc__,
        usage="mura train [--config YAML] [--resume] [--out RUN_DIR] [--section.key VALUE ...]",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--config", help="YAML config (configs/<model>.yaml); default on --resume: RUN_DIR/config.yaml"
    )
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its last.pt")
    parser.add_argument(
        "--overwrite", action="store_true", help="start again in an --out that already holds a run"
    )
    _add_config_flags(parser)
    parser.set_defaults(func=run_train, parameter_flags=TRAIN_FLAGS)

    cv = subparsers.add_parser(
        "cv",
        help="k-fold cross-validation: out-of-fold predictions, OOF-fitted decision, the fold ensemble",
        description="Train one recipe on K folds (by patient, or blocks of ids), predict every image with "
        "the model that did not see it, fit calibration and operating points on those out-of-fold "
        "predictions, and write the fold ensemble to OUT/final/*.pt. Resumes an interrupted run; folds "
        "trained with other settings are refused (or, with --retrain, trained again).",
        usage="mura cv --config YAML [--folds K] --out DIR [--tta] [--retrain] [--by COL ...] "
        "[--section.key VALUE ...]",
        epilog="--folds is the config's data.folds (default here: 5).",
    )
    cv.add_argument("--config", help="YAML config of the recipe (configs/fracatlas/*.yaml)")
    cv.add_argument("--tta", action="store_true", help="out-of-fold predictions with flip TTA")
    cv.add_argument("--bootstrap", type=int, default=1000, metavar="N", help="bootstrap resamples for CIs")
    cv.add_argument(
        "--by",
        nargs="*",
        default=[],
        metavar="COL",
        help="also report per value of these index columns (e.g. region hardware); checked before training",
    )
    cv.add_argument(
        "--retrain",
        action="store_true",
        help="folds in --out trained with other settings, folds or data are removed and trained again "
        "(without it such a rerun is refused; unchanged folds are always reused)",
    )
    _add_config_flags(cv)
    cv.set_defaults(
        func=run_cv,
        resume=False,
        parameter_flags={"retrain=True": "--retrain", "by: no column": "--by: no column"},
    )

    ens = subparsers.add_parser(
        "ensemble",
        help="several `mura cv` recipes as one model, operating points fitted on its out-of-fold mean",
        description="Combine the fold ensembles of several `mura cv` runs (same index, same folds) into "
        "one model: each member keeps its calibration, the operating points are fitted on the mean of "
        "the runs' out-of-fold probabilities. Writes OUT/final/*.pt and OUT/oof/report.html.",
    )
    ens.add_argument("runs", nargs="+", metavar="CV_DIR", help="finished `mura cv` folders")
    ens.add_argument("--out", required=True, help="folder for the ensemble")
    ens.add_argument("--bootstrap", type=int, default=1000, metavar="N", help="bootstrap resamples for CIs")
    ens.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an ensemble in --out built from other runs (or from these before they changed)",
    )
    ens.set_defaults(func=run_ensemble, parameter_flags={"overwrite=True": "--overwrite"})


def config_from_args(args: argparse.Namespace) -> Config:
    overrides = {k[len(OVERRIDE_PREFIX) :]: v for k, v in vars(args).items() if k.startswith(OVERRIDE_PREFIX)}
    yaml_path = args.config
    if yaml_path is None and args.resume and "out" in overrides:
        saved = Path(overrides["out"]) / "config.yaml"
        yaml_path = str(saved) if saved.is_file() else None
    return load_config(yaml_path, overrides, from_flags=True)


def run_cv(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    from mura.experiments.cv import cross_validate

    folds = cfg.data.folds or DEFAULT_FOLDS
    result = cross_validate(
        cfg, folds, tta=args.tta, n_bootstrap=args.bootstrap, retrain=args.retrain, by=args.by
    )
    s = result.summary
    print(
        f"out of fold: {s['headline']}; ECE {s['calibration']['ece_before']:.3f} -> "
        f"{s['calibration']['cross_fitted'][cfg.train.calibration]['ece']:.3f} (cross-fitted)"
    )
    if s["localisation"] is not None:  # the index carries boxes
        from mura.evaluation.localisation_section import localisation_text

        print(f"localisation out of fold: {localisation_text(s['localisation'])}")
    print(f"final model: {' '.join(s['final_checkpoints'])}")
    print(f"report: {result.out_dir / 'oof' / 'report.html'}")
    return 0


def run_ensemble(args: argparse.Namespace) -> int:
    from mura.experiments.ensemble import ensemble_runs

    runs = [Path(r) for r in args.runs]
    s = ensemble_runs(runs, Path(args.out), n_bootstrap=args.bootstrap, overwrite=args.overwrite)
    low, high = s["oof_auc_ci"]
    point = s["operating_points"]["suspicious"]
    print(
        f"ensemble out-of-fold AUC {s['oof_auc']:.4f} [{low:.4f}, {high:.4f}] on {s['n_images']} images; "
        f"suspicious: sensitivity {point['sensitivity']:.3f} specificity {point['specificity']:.3f}; "
        f"ECE {s['ece']:.3f}; {len(s['members'])} members in {Path(args.out) / 'final'}"
    )
    if s["localisation"] is not None:  # a member run has a map head and its index carried boxes
        from mura.evaluation.localisation_section import localisation_text

        print(f"localisation out of fold: {localisation_text(s['localisation'])}")
    return 0


def run_train(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING, format="%(message)s", stream=sys.stderr
    )
    from mura.training.loop import train

    result = train(cfg, resume=args.resume, overwrite=args.overwrite)
    if rank == 0:
        best = {
            k: result.best_metrics.get(k, float("nan")) for k in ("val_auc", "val_kappa", "val_body_part_acc")
        }
        print(
            f"best epoch {result.best_epoch} by {result.monitor}: val_auc {best['val_auc']:.4f} "
            f"val_kappa {best['val_kappa']:.4f} val_body_part_acc {best['val_body_part_acc']:.3f} "
            f"-> {result.best_checkpoint}"
        )
    return 0

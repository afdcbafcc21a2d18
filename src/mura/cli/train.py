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

from mura.config import Config, FieldSpec, config_fields, load_config

OVERRIDE_PREFIX = "override:"


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
    parser.set_defaults(func=run_train)


def config_from_args(args: argparse.Namespace) -> Config:
    overrides = {k[len(OVERRIDE_PREFIX) :]: v for k, v in vars(args).items() if k.startswith(OVERRIDE_PREFIX)}
    yaml_path = args.config
    if yaml_path is None and args.resume and "out" in overrides:
        saved = Path(overrides["out"]) / "config.yaml"
        yaml_path = str(saved) if saved.is_file() else None
    return load_config(yaml_path, overrides, from_flags=True)


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

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

from mura.config import Config, _leaf_names, _section_types, load_config

OVERRIDE_PREFIX = "override:"


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per config key (`--train.lr`, and `--lr` where unambiguous), all optional strings."""
    group = parser.add_argument_group("config overrides (defaults -> --config YAML -> these flags)")
    short = {dotted: leaf for leaf, dotted in _leaf_names().items()}
    for section in ("data", "model", "train"):
        for key in _section_types(type(getattr(Config(), section))):
            dotted = f"{section}.{key}"
            flags = [f"--{dotted}"] + ([f"--{short[dotted]}"] if dotted in short else [])
            dest = OVERRIDE_PREFIX + dotted
            group.add_argument(*flags, dest=dest, metavar="VALUE", default=argparse.SUPPRESS)
    group.add_argument(
        "--out",
        dest=OVERRIDE_PREFIX + "out",
        metavar="RUN_DIR",
        default=argparse.SUPPRESS,
        help="run directory: checkpoints, config.yaml, metrics.csv/jsonl, tensorboard/",
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `mura train`."""
    parser = subparsers.add_parser(
        "train",
        help="train a model from an image cache",
        description=__doc__,
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
    return load_config(yaml_path, overrides)


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

"""mura: train, evaluate, explain and serve classifiers for musculoskeletal radiographs.

The CLI is a thin layer that parses arguments and calls library functions.

Each module in this package adds its subcommands with `register(subparsers)`; every subcommand sets
`func(args) -> int`. Errors the user can fix (MuraError) print one line on stderr, never a traceback;
library errors name Python parameters (`resume=True`), which a subcommand's `parameter_flags`
(set with `set_defaults`) rewrites to its own flags (`--resume`).
"""

from __future__ import annotations

import argparse
import sys

from mura import __version__
from mura.cli import calibrate, data, dicom, evaluate, explain, infer, serve, train
from mura.errors import MuraError
from mura.training.fastpath import ensure_fast_allocator, prefer_passive_openmp

COMMAND_MODULES = (data, train, evaluate, calibrate, infer, explain, serve, dicom)
# Commands that run a network: they get tcmalloc preloaded where it is installed (see fastpath).
MODEL_COMMANDS = {
    "train",
    "cv",
    "ensemble",
    "evaluate",
    "calibrate",
    "predict",
    "explain",
    "serve",
    "dicom-node",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mura", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"mura {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command in MODEL_COMMANDS:
        prefer_passive_openmp()
        ensure_fast_allocator()  # may re-exec this same command line once (same pid)
    try:
        return int(args.func(args) or 0)
    except MuraError as exc:
        message = str(exc)
        for parameter, flag in getattr(args, "parameter_flags", {}).items():
            message = message.replace(parameter, flag)
        print(f"mura {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"mura {args.command}: interrupted", file=sys.stderr)
        return 130

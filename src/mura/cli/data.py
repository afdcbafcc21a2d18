"""Subcommands that make data ready for training: `mura synth`, `mura index`, `mura prepare`."""

from __future__ import annotations

import argparse
import logging
import signal
import sys

from mura.data.splits import SPLIT_UNITS


def _csv_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def run_synth(args: argparse.Namespace) -> int:
    from mura.data.synth import generate_synthetic_mura

    info = generate_synthetic_mura(args.out, patients=args.patients, seed=args.seed, workers=args.workers)
    print(
        f"wrote {info.images} images in {info.studies} studies of {info.patients} patients "
        f"to {info.root / 'MURA-v1.1'} ({info.junk_files} junk files planted)"
    )
    return 0


def run_index(args: argparse.Namespace) -> int:
    from mura.data.boxes import write_index_boxes
    from mura.data.folders import build_folder_index
    from mura.data.index import build_mura_index, check_index_target, distribution_table, write_index

    _warnings_to_stderr()
    check_index_target(args.out)
    boxes = {"coco_json": args.boxes_coco, "yolo_dir": args.boxes_yolo}
    if args.format == "mura":
        frame, report = build_mura_index(args.root, args.split_unit, args.val_fraction, args.seed, **boxes)
    else:
        frame, report = build_folder_index(
            args.root,
            _csv_list(args.positive_classes),
            _csv_list(args.negative_classes),
            args.val_fraction,
            args.test_fraction,
            args.seed,
            args.block_size,
            **boxes,
        )
    path = write_index(frame, args.out)
    boxes_file = write_index_boxes(report.boxes, path)
    print(distribution_table(frame))
    print(
        f"wrote {len(frame)} images to {path}; skipped {report.junk_skipped} junk files, "
        f"{len(report.missing)} listed images missing, {len(report.warnings)} warnings"
    )
    if boxes_file is not None:
        films = report.boxes["path"].nunique()
        print(f"wrote {len(report.boxes)} boxes on {films} films to {boxes_file}")
    return 0


def run_prepare(args: argparse.Namespace) -> int:
    from mura.data.cache import build_cache
    from mura.interrupts import Terminated

    _warnings_to_stderr()  # a damaged cache being rebuilt, temporaries of a killed build removed
    try:
        info = build_cache(
            args.index,
            args.out,
            size=args.size,
            resize=args.resize,
            workers=args.workers,
            progress=not args.quiet,
            force=args.force,
        )
    except Terminated:
        print(f"mura prepare: terminated; temporaries removed, rerun to finish {args.out}", file=sys.stderr)
        return 128 + signal.SIGTERM
    if info.reused:
        print(f"cache {info.directory} is up to date ({info.images} images); nothing to do")
    else:
        print(
            f"cached {info.images} images at {args.size}px in {info.seconds:.1f}s to {info.directory}; "
            f"{info.failed} failed (see {info.directory / 'failures.csv'}); {info.warned} kept with a "
            f"warning (see {info.directory / 'warnings.csv'})"
        )
    return 0


def _warnings_to_stderr() -> None:
    """Data warnings (label disagreements, missing files, damaged caches) go to stderr, one line each."""
    logger = logging.getLogger("mura.data")
    if not any(isinstance(h, _CurrentStderr) for h in logger.handlers):
        handler = _CurrentStderr()
        handler.setFormatter(logging.Formatter("warning: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


class _CurrentStderr(logging.StreamHandler):
    """Writes to sys.stderr as it is at each warning: main() may run again with stderr redirected."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `synth`, `index` and `prepare`."""
    from mura.data.cache import DEFAULT_RESIZE
    from mura.data.folders import DEFAULT_NEGATIVE, DEFAULT_POSITIVE
    from mura.preprocessing import RESIZE_MODES

    synth = subparsers.add_parser("synth", help="write a synthetic MURA-v1.1 tree (demo and tests)")
    synth.add_argument("out", help="output directory; MURA-v1.1/ is created inside it")
    synth.add_argument("--patients", type=int, default=200, help="number of patients (default 200)")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    synth.set_defaults(func=run_synth)

    index = subparsers.add_parser("index", help="index a MURA tree or a folder data set into one CSV")
    index.add_argument("root", help="MURA-v1.1/ or its parent; or a class-folder / FracAtlas root")
    index.add_argument("--out", required=True, help="index CSV to write")
    index.add_argument("--format", choices=("mura", "folders"), default="mura")
    index.add_argument(
        "--split-unit",
        choices=SPLIT_UNITS,
        default="patient",
        help="MURA train->train/val split by patient (default) or by image (the spec)",
    )
    index.add_argument("--val-fraction", type=float, default=0.2)
    index.add_argument(
        "--test-fraction",
        type=float,
        default=0.2,
        help="folders: share carved out as test when there is no test folder",
    )
    index.add_argument("--seed", type=int, default=0)
    index.add_argument(
        "--block-size", type=int, default=20, help="folders: consecutive ids kept together when splitting"
    )
    index.add_argument(
        "--positive-classes",
        default=",".join(DEFAULT_POSITIVE),
        help="comma-separated folder names meaning label 1 (case-insensitive)",
    )
    index.add_argument(
        "--negative-classes",
        default=",".join(DEFAULT_NEGATIVE),
        help="comma-separated folder names meaning label 0 (case-insensitive)",
    )
    index.add_argument(
        "--boxes-coco",
        default=None,
        metavar="JSON",
        help="fracture boxes from a COCO annotation file (FracAtlas's own Annotations/ are read unasked)",
    )
    index.add_argument(
        "--boxes-yolo",
        default=None,
        metavar="DIR",
        help="fracture boxes from a folder of YOLO <image>.txt label files (checked against --boxes-coco)",
    )
    index.set_defaults(func=run_index)

    prepare = subparsers.add_parser("prepare", help="decode + resize all indexed images into one array")
    prepare.add_argument("index", help="index CSV from `mura index`")
    prepare.add_argument("--out", required=True, help="cache directory")
    prepare.add_argument("--size", type=int, default=224)
    prepare.add_argument(
        "--resize",
        choices=RESIZE_MODES,
        default=DEFAULT_RESIZE,
        help="stretch (default, as the spec; best at 224px) or letterbox (keeps aspect)",
    )
    prepare.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    prepare.add_argument("--force", action="store_true", help="rebuild even if the cache is up to date")
    prepare.add_argument("--quiet", action="store_true", help="no progress bar")
    # build_cache's errors name its parameters; this command's flags set them
    prepare.set_defaults(func=run_prepare, parameter_flags={"workers=1": "--workers 1"})

"""Subcommand: `mura calibrate` (a model's decision refitted on a site's labelled sample)."""

from __future__ import annotations

import argparse

# How `calibrate_checkpoints()`'s errors name its parameters, and the flags that set them.
CALIBRATE_FLAGS = {
    "site=''": "--site ''",
    "method=": "--method ",
    "target_sensitivity=": "--target-sensitivity ",
    "target_specificity=": "--target-specificity ",
    "allow_small_sample=True": "--allow-small-sample",
    "checkpoints=": "--checkpoint ",
}


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `calibrate`."""
    parser = subparsers.add_parser(
        "calibrate",
        help="refit calibration and operating points on a site's labelled sample (no retraining)",
        description="Refit the calibration and the suspicious / definite operating points of a checkpoint "
        "(or an ensemble) on a site's labelled images, prepared with `mura index` and `mura prepare`. "
        "Writes new checkpoints in --out (the inputs are only read) and reports ECE, sensitivity, "
        "specificity, PPV and NPV before and after, with 95%% bootstrap intervals.",
    )
    parser.add_argument(
        "--checkpoint", nargs="+", required=True, metavar="CKPT", help=".pt checkpoint(s); several = ensemble"
    )
    parser.add_argument(
        "--cache",
        nargs="+",
        required=True,
        metavar="DIR",
        help="the site's cache from `mura prepare` at the model's size (one per input size of an ensemble)",
    )
    parser.add_argument("--site", required=True, help="the site's name, recorded in every decision")
    parser.add_argument("--out", required=True, help="new or empty folder for the calibrated checkpoints")
    parser.add_argument(
        "--index", default=None, help="the index CSV the cache was prepared from (default: the cache's copy)"
    )
    parser.add_argument("--split", default=None, help="fit on one split only (default: every image)")
    parser.add_argument("--method", choices=("platt", "temperature", "none"), default="platt")
    parser.add_argument(
        "--target-sensitivity", type=float, default=None, help="suspicious point (default: the model's)"
    )
    parser.add_argument(
        "--target-specificity", type=float, default=None, help="definite point (default: the model's)"
    )
    parser.add_argument(
        "--body-part-source",
        choices=("given", "predicted"),
        default="given",
        help="body part fed to the fracture head: the index's (given) or the model's own (predicted)",
    )
    parser.add_argument("--bootstrap", type=int, default=1000, metavar="N", help="bootstrap resamples")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument(
        "--allow-small-sample",
        action="store_true",
        help="write the checkpoints even when the sample is too small to set an operating point",
    )
    parser.set_defaults(func=run_calibrate, parameter_flags=CALIBRATE_FLAGS)


def run_calibrate(args: argparse.Namespace) -> int:
    """Print the before/after report; exit 1 when the sample was too small and nothing was written."""
    from mura.experiments.calibrate import calibrate_checkpoints
    from mura.experiments.site_decision import report_text

    report = calibrate_checkpoints(
        args.checkpoint,
        args.cache,
        args.out,
        site=args.site,
        index_path=args.index,
        split=args.split,
        method=args.method,
        target_sensitivity=args.target_sensitivity,
        target_specificity=args.target_specificity,
        body_part_source=args.body_part_source,
        n_bootstrap=args.bootstrap,
        seed=args.seed,
        device=args.device,
        allow_small_sample=args.allow_small_sample,
    )
    text = report_text(report)
    for parameter, flag in CALIBRATE_FLAGS.items():  # the report names parameters too: say flags here
        text = text.replace(parameter, flag)
    print(text, end="")
    return 0 if report["written"] else 1

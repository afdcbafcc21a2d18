"""Subcommands: `mura evaluate` (metrics + report for checkpoints on a split) and `mura compare`."""

from __future__ import annotations

import argparse

# How `evaluate_checkpoints()`'s errors name its parameters, and the flags of `mura evaluate` that set them.
EVALUATE_FLAGS = {
    "record=True": "--record",
    "split='test'": "--split test",
    "by: no column": "--by: no column",
}


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add this module's subcommands."""
    ev = subparsers.add_parser(
        "evaluate",
        help="metrics, plots and an HTML report for checkpoint(s) on a split",
        description="Evaluate one model (or an ensemble: several checkpoints, mean of "
        "probabilities) on one split of a prepared cache.",
    )
    ev.add_argument(
        "--checkpoint", nargs="+", required=True, metavar="CKPT", help="best.pt (several = ensemble)"
    )
    ev.add_argument("--index", help="index CSV (extra columns for --by, data distribution figure)")
    ev.add_argument(
        "--cache",
        nargs="+",
        required=True,
        metavar="DIR",
        help="cache directory written by `mura prepare` at the model's size (an ensemble of several "
        "input sizes: one cache per size, all from the same index)",
    )
    ev.add_argument("--split", default="test", help="split to evaluate (default: test)")
    ev.add_argument("--out", required=True, help="evaluation directory to write")
    ev.add_argument(
        "--body-part-source",
        choices=("given", "predicted"),
        default="given",
        help="body part fed to the fracture head: the index's (given) or the model's own (predicted)",
    )
    ev.add_argument(
        "--by", nargs="*", default=[], metavar="COL", help="also report per value of these columns"
    )
    ev.add_argument("--bootstrap", type=int, default=1000, metavar="N", help="bootstrap resamples (0 = none)")
    ev.add_argument("--tta", action="store_true", help="average with the horizontally flipped image")
    ev.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    ev.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    ev.add_argument(
        "--record",
        action="store_true",
        help="store the test figures in the (single) checkpoint, shown by `mura serve` at /v1/model; "
        "without it the checkpoint is only read",
    )
    ev.set_defaults(func=run_evaluate, parameter_flags=EVALUATE_FLAGS)

    cmp = subparsers.add_parser("compare", help="the spec's Tables 8 and 9 across evaluated models")
    cmp.add_argument(
        "dirs", nargs="+", metavar="RUN_OR_EVAL_DIR", help="evaluation dirs (or run dirs with eval/)"
    )
    cmp.add_argument("--out", required=True, help="directory for the tables (Markdown, CSV) and report.html")
    cmp.set_defaults(func=run_compare)


def run_evaluate(args: argparse.Namespace) -> int:
    """Evaluate, then print the headline (deployed figures with CIs) before where the report is."""
    import json

    from mura.evaluation.runner import evaluate_checkpoints

    files = evaluate_checkpoints(
        args.checkpoint,
        args.cache,
        args.out,
        index_path=args.index,
        split=args.split,
        body_part_source=args.body_part_source,
        by=args.by,
        n_bootstrap=args.bootstrap,
        tta=args.tta,
        device=args.device,
        seed=args.seed,
        record=args.record,
    )
    metrics = json.loads(files["metrics"].read_text())
    print(metrics["headline"])
    if "localisation" in metrics:  # the index carries boxes
        from mura.evaluation.localisation_section import localisation_text

        print(f"localisation: {localisation_text(metrics['localisation'])}")
    if "not_assessed" in files:  # the headline counts them; the list says which and why
        print(f"not assessed: {files['not_assessed']}")
    print(f"report: {files['html']}")
    print(f"metrics: {files['metrics']}")
    return 0


def run_compare(args: argparse.Namespace) -> int:
    from pathlib import Path

    from mura.evaluation.compare import compare_runs

    compare_runs(args.dirs, args.out)
    out = Path(args.out)
    tables = (out / "comparison.md").read_text().split("\n### ")[0].rstrip()  # Tables 8 and 9, not per model
    print(tables)
    print(f"\nreport: {out / 'report.html'}")
    return 0

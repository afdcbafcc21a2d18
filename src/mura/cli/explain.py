"""Subcommands `explain` (Grad-CAM overlays with the findings boxed, per image the model assesses) and
`export` (a checkpoint to ONNX); the overlay writer is shared with `mura predict --cam`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from mura.cli.model_args import add_model_args, check_body_part
from mura.constants import BODY_PARTS


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `explain` and `export`."""
    explain = subparsers.add_parser("explain", help="Grad-CAM overlay PNG per image the model assesses")
    add_model_args(explain)
    explain.add_argument("--out", "-o", required=True, metavar="DIR")
    explain.add_argument(
        "--score-all",
        action="store_true",
        help="explain inputs outside the model's scope too (research); the gate's reasons become warnings",
    )
    explain.set_defaults(func=run_explain)

    export = subparsers.add_parser("export", help="export a checkpoint to ONNX (checked, with metadata)")
    export.add_argument("checkpoint", metavar="CKPT")
    export.add_argument("--format", choices=("onnx",), default="onnx")
    export.add_argument("--out", "-o", default=None, help="default: CKPT with .onnx suffix")
    export.add_argument("--opset", type=int, default=17)
    export.add_argument(
        "--overwrite", action="store_true", help="replace --out even if mura did not write it"
    )
    export.set_defaults(func=run_export, parameter_flags={"out=": "--out", "overwrite=True": "--overwrite"})


def cam_name(path: Path) -> str:
    return f"{path.parent.name}_{path.stem}_cam.png" if path.parent.name else f"{path.stem}_cam.png"


def write_cam(explainer: Any, result: Any, directory: Path) -> Path:
    """Grad-CAM overlay of one predicted file, for the body part its prediction used, with its findings
    boxed (`mura.api.model.explanation_figure`)."""
    from mura.api.model import explanation_figure
    from mura.inference.gradcam import save_png

    prediction = result.prediction
    given = prediction.body_part_origin != "predicted"
    part = BODY_PARTS.index(prediction.body_part) if given and prediction.body_part else -1
    heatmap = explainer.heatmap(result.pixels, part)
    figure = explanation_figure(result.pixels, heatmap, prediction.findings)
    return save_png(directory / cam_name(result.path), figure)


def run_explain(args: argparse.Namespace) -> int:
    from mura.inference.files import expand_paths, iter_file_predictions
    from mura.inference.gradcam import GradCamExplainer
    from mura.inference.predictor import Predictor

    files = expand_paths(args.paths)
    predictor = Predictor.from_checkpoints(args.checkpoint, device=args.device, runtime="torch")
    check_body_part(args.body_part, predictor)
    explainer = GradCamExplainer.from_predictor(predictor)
    written = 0
    results = iter_file_predictions(
        predictor, files, args.body_part, keep_pixels=True, score_all=args.score_all
    )
    for result in results:
        if not result.ok:
            print(f"mura explain: skipped {result.error}", file=sys.stderr)
            continue
        if not result.prediction.assessed:  # a heatmap would suggest a finding where the model has no say
            reasons = "; ".join(result.prediction.reasons)
            print(f"mura explain: skipped {result.path}: not assessed: {reasons}", file=sys.stderr)
            continue
        for warning in result.prediction.warnings:
            print(f"mura explain: warning: {result.path}: {warning}", file=sys.stderr)
        target = write_cam(explainer, result, Path(args.out))
        prediction = result.prediction
        print(f"{target}\t{prediction.fracture_probability:.4f}\t{prediction.body_part}")
        written += 1
    return 0 if written else 2


def run_export(args: argparse.Namespace) -> int:
    from mura.inference.onnx_export import export_onnx

    report = export_onnx(args.checkpoint, args.out, opset=args.opset, overwrite=args.overwrite)
    print(f"wrote {report.path} (opset {report.opset}, max |p_onnx - p_torch| = {report.max_prob_diff:.1e})")
    return 0

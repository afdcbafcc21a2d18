"""The flags every command that runs a model on files takes (`predict`, `explain`): paths, checkpoints,
body part, device; and the body-part check once the model is loaded."""

from __future__ import annotations

import argparse
from typing import Any

from mura.constants import BODY_PARTS
from mura.errors import MuraError


def add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", metavar="PATH", help="image/DICOM files or folders (recursive)")
    parser.add_argument(
        "--checkpoint",
        "-c",
        nargs="+",
        required=True,
        metavar="CKPT",
        help="checkpoint(s) (.pt or exported .onnx); several = an ensemble",
    )
    parser.add_argument(
        "--body-part",
        choices=[p.lower() for p in BODY_PARTS] + list(BODY_PARTS),
        default=None,
        help="body part of every image, one the model was trained on (checked once it is loaded; "
        "default: DICOM tags, else predicted)",
    )
    parser.set_defaults(
        parameter_flags={
            "body_part=...": "--body-part",
            "runtime='torch'": "--runtime torch",
            "trace=": "--trace",
        }
    )
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")


def check_body_part(name: str | None, predictor: Any) -> None:
    """argparse knows mura's whole vocabulary; the model knows its head's classes, checked once loaded."""
    if name and name.upper() not in predictor.body_parts:
        known = ", ".join(part.lower() for part in predictor.body_parts)
        raise MuraError(f"--body-part {name}: not a part this model was trained on ({known})")

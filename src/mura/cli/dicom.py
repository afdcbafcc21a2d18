"""Subcommand `mura dicom-node`: receive studies by DICOM, answer with an SR and Secondary Captures.

The node's settings are checked by `mura.pacs.node_settings.NodeSettings`; this module only maps its
fields to flags and back, so a bad value is reported under the flag the user typed.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

from mura.errors import MuraError

# NodeSettings field -> the flag that sets it (the settings the node takes from the command line).
SETTING_FLAGS = {
    "ae_title": "--ae-title",
    "port": "--port",
    "host": "--host",
    "spool_dir": "--spool",
    "allowed_calling": "--allow",
    "quiet_seconds": "--quiet-seconds",
    "max_retry_seconds": "--retry-max-seconds",
    "acse_timeout": "--acse-timeout",
    "dimse_timeout": "--dimse-timeout",
    "network_timeout": "--network-timeout",
    "maximum_pdu_size": "--max-pdu-size",
}
# Flags added from the NodeSettings field of the same meaning (its default and description).
TUNING_FLAGS = ("quiet_seconds", "max_retry_seconds", "acse_timeout", "dimse_timeout", "network_timeout")


def node_settings(args: argparse.Namespace) -> Any:
    """`NodeSettings` from the flags; MuraError naming the first bad flag and what it allows."""
    from pydantic import ValidationError

    from mura.pacs.node_settings import NodeSettings

    spool = args.spool or Path(tempfile.gettempdir()) / f"mura-dicom-node-{args.ae_title.strip()}-{args.port}"
    values = {field: getattr(args, field) for field in SETTING_FLAGS if field != "spool_dir"}
    values["allowed_calling"] = tuple(args.allowed_calling or ())
    try:
        return NodeSettings(spool_dir=spool, **values)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = str(error["loc"][0]) if error["loc"] else ""
        flag = SETTING_FLAGS.get(field, field)
        given = error.get("input")
        raise MuraError(f"{flag} {given!r}: {error['msg'].removeprefix('Value error, ')}") from None


def run_dicom_node(args: argparse.Namespace) -> int:
    from mura.pacs.delivery import StowDestination, parse_forward
    from mura.pacs.node import DicomNode

    if not args.forward and not args.stow:
        raise MuraError("give a destination: --forward AET@HOST:PORT and/or --stow URL")
    settings = node_settings(args)
    destinations = []
    if args.forward:
        try:
            destinations.append(parse_forward(args.forward, settings.ae_title))
        except MuraError as exc:
            raise MuraError(f"--forward: {exc}") from None
    if args.stow:
        destinations.append(StowDestination(args.stow))
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s mura dicom-node: %(message)s", stream=sys.stderr
    )
    for chatty in ("pynetdicom", "highdicom"):  # the node logs what matters, once per event
        logging.getLogger(chatty).setLevel(logging.CRITICAL if chatty == "pynetdicom" else logging.WARNING)
    node = DicomNode(settings, _analyser(args), destinations)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: node.stop.set())

    def ready() -> None:
        allowed = ", ".join(settings.allowed_calling) or "any calling AE title"
        targets = ", ".join(d.name for d in destinations)
        print(
            f"mura dicom-node: {settings.ae_title} listening on {settings.host}:{settings.port} ({allowed}); "
            f"results to {targets}; spool {settings.spool_dir}",
            file=sys.stderr,
            flush=True,
        )

    return node.serve(ready)


def _analyser(args: argparse.Namespace):
    """The model, loaded once: instance paths of one study -> its SR and Secondary Captures."""
    from mura.inference.gradcam import GradCamExplainer
    from mura.inference.predictor import Predictor
    from mura.pacs.study import study_results

    predictor = Predictor.from_checkpoints(args.checkpoint, device=args.device, runtime="torch")
    explainer = GradCamExplainer.from_predictor(predictor)

    def analyse(paths: list[Path]):
        return study_results(predictor, paths, explainer=explainer, operating_point=args.operating_point)

    return analyse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `mura dicom-node`."""
    from mura.pacs.node_settings import NodeSettings

    fields = NodeSettings.model_fields
    p = subparsers.add_parser(
        "dicom-node", help="DICOM Storage SCP: analyse received studies, send SR + Secondary Captures on"
    )
    p.add_argument(
        "--checkpoint", nargs="+", required=True, metavar="CKPT", help="checkpoint(s); several = ensemble"
    )
    p.add_argument("--port", type=int, required=True, help=fields["port"].description)
    p.add_argument("--ae-title", required=True, metavar="AET", help=fields["ae_title"].description)
    p.add_argument("--forward", default=None, metavar="AET@HOST:PORT", help="C-STORE results to this SCP")
    p.add_argument(
        "--stow", default=None, metavar="URL", help="also/instead STOW-RS results to this DICOMweb URL"
    )
    p.add_argument(
        "--allow",
        dest="allowed_calling",
        nargs="+",
        default=None,
        metavar="AET",
        help="accept only these calling AE titles",
    )
    p.add_argument("--host", default=fields["host"].default, help=fields["host"].description)
    p.add_argument("--spool", default=None, metavar="DIR", help=fields["spool_dir"].description)
    p.add_argument(
        "--operating-point", default=None, help="stored operating point / threshold name to decide at"
    )
    for name in TUNING_FLAGS:
        field = fields[name]
        p.add_argument(
            SETTING_FLAGS[name],
            dest=name,
            type=float,
            default=field.default,
            help=f"{field.description} (default {field.default:g})",
        )
    max_pdu = fields["maximum_pdu_size"]
    p.add_argument(
        "--max-pdu-size",
        dest="maximum_pdu_size",
        type=int,
        default=max_pdu.default,
        metavar="BYTES",
        help=max_pdu.description,
    )
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.set_defaults(func=run_dicom_node)

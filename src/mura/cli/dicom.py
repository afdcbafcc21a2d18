"""Subcommand `mura dicom-node`: receive studies by DICOM, answer with an SR and Secondary Captures."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import tempfile
from pathlib import Path

from mura.errors import MuraError


def run_dicom_node(args: argparse.Namespace) -> int:
    from mura.service.dicom_delivery import StowDestination, parse_forward
    from mura.service.dicom_node import DicomNode, NodeSettings

    if not args.forward and not args.stow:
        raise MuraError("give a destination: --forward AET@HOST:PORT and/or --stow URL")
    if not 0 < args.port < 65536 or args.quiet_seconds < 0 or args.retry_max_seconds <= 0:
        raise MuraError("--port must be 1..65535, --quiet-seconds >= 0 and --retry-max-seconds > 0")
    if not 0 < len(args.ae_title) <= 16:
        raise MuraError(f"--ae-title {args.ae_title!r}: 1 to 16 characters")
    destinations = [parse_forward(args.forward, args.ae_title)] if args.forward else []
    if args.stow:
        destinations.append(StowDestination(args.stow))
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s mura dicom-node: %(message)s", stream=sys.stderr
    )
    for chatty in ("pynetdicom", "highdicom"):  # the node logs what matters, once per event
        logging.getLogger(chatty).setLevel(logging.CRITICAL if chatty == "pynetdicom" else logging.WARNING)
    spool = Path(args.spool or Path(tempfile.gettempdir()) / f"mura-dicom-node-{args.ae_title}-{args.port}")
    settings = NodeSettings(
        ae_title=args.ae_title,
        port=args.port,
        host=args.host,
        spool_dir=spool,
        allowed_calling=args.allow or (),
        quiet_seconds=args.quiet_seconds,
        max_retry_seconds=args.retry_max_seconds,
    )
    node = DicomNode(settings, _analyser(args), destinations)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: node.stop.set())

    def ready() -> None:
        allowed = ", ".join(settings.allowed_calling) or "any calling AE title"
        targets = ", ".join(d.name for d in destinations)
        print(
            f"mura dicom-node: {args.ae_title} listening on {args.host}:{args.port} ({allowed}); "
            f"results to {targets}; spool {spool}",
            file=sys.stderr,
            flush=True,
        )

    return node.serve(ready)


def _analyser(args: argparse.Namespace):
    """The model, loaded once: instance paths of one study -> its SR and Secondary Captures."""
    from mura.inference.dicom_out import study_results
    from mura.inference.gradcam import GradCamExplainer
    from mura.inference.predictor import Predictor

    predictor = Predictor.from_checkpoints(args.checkpoint, device=args.device, runtime="torch")
    explainer = GradCamExplainer.from_predictor(predictor)

    def analyse(paths: list[Path]):
        return study_results(predictor, paths, explainer=explainer, operating_point=args.operating_point)

    return analyse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `mura dicom-node`."""
    p = subparsers.add_parser(
        "dicom-node", help="DICOM Storage SCP: analyse received studies, send SR + Secondary Captures on"
    )
    p.add_argument(
        "--checkpoint", nargs="+", required=True, metavar="CKPT", help="checkpoint(s); several = ensemble"
    )
    p.add_argument("--port", type=int, required=True, help="DICOM port to listen on")
    p.add_argument(
        "--ae-title", required=True, metavar="AET", help="this node's AE title (also used to send)"
    )
    p.add_argument("--forward", default=None, metavar="AET@HOST:PORT", help="C-STORE results to this SCP")
    p.add_argument(
        "--stow", default=None, metavar="URL", help="also/instead STOW-RS results to this DICOMweb URL"
    )
    p.add_argument(
        "--quiet-seconds", type=float, default=5.0, help="analyse a study this long after its last instance"
    )
    p.add_argument(
        "--allow", nargs="+", default=None, metavar="AET", help="accept only these calling AE titles"
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    p.add_argument(
        "--spool", default=None, metavar="DIR", help="spool and outbox folder (kept across restarts)"
    )
    p.add_argument(
        "--operating-point", default=None, help="stored operating point / threshold name to decide at"
    )
    p.add_argument(
        "--retry-max-seconds", type=float, default=60.0, help="longest wait between delivery retries"
    )
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.set_defaults(func=run_dicom_node)

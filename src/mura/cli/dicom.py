"""Subcommand `mura dicom-node`: receive studies by DICOM, answer with an SR and Secondary Captures.

The node's settings are checked by `mura.pacs.node_settings.NodeSettings`; this module only maps its
fields to flags and back, so a bad value is reported under the flag the user typed. Secrets never
come from the command line (argv is visible to every user in `ps`): STOW-RS credentials are read
from a file or the environment.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from mura.errors import MuraError
from mura.network import is_loopback

DESCRIPTION = """\
A DICOM Storage SCP next to a PACS: each study received is analysed once quiet, and its SR and
Secondary Captures are sent on by C-STORE (--forward) and/or STOW-RS (--stow).

Security: without --allow, ANY calling AE title is accepted, and AE titles are not authentication
(anyone who reaches the port can claim one); to authenticate senders, listen with DICOM TLS and
require client certificates (--tls-cert, --tls-key, --tls-ca). The spool holds patient data: it is
kept private to this user (folders 0700, files 0600) and a folder others could write to is refused.
STOW-RS credentials come from --stow-credentials-file or MURA_STOW_USER/MURA_STOW_PASSWORD, never
from the URL. See docs/security.md."""

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
    "incoming_quota_gib": "--incoming-quota-gib",
    "incoming_max_age_hours": "--incoming-max-age-hours",
    "outbox_quota_gib": "--outbox-quota-gib",
    "outbox_max_age_days": "--outbox-max-age-days",
    "failed_quota_gib": "--failed-quota-gib",
    "failed_max_age_days": "--failed-max-age-days",
    "tls_cert": "--tls-cert",
    "tls_key": "--tls-key",
    "tls_ca": "--tls-ca",
}
# Flags added from the NodeSettings field of the same meaning (its default and description).
TUNING_FLAGS = (
    "quiet_seconds",
    "max_retry_seconds",
    "acse_timeout",
    "dimse_timeout",
    "network_timeout",
    "incoming_quota_gib",
    "incoming_max_age_hours",
    "outbox_quota_gib",
    "outbox_max_age_days",
    "failed_quota_gib",
    "failed_max_age_days",
)
TLS_FLAGS = ("tls_cert", "tls_key", "tls_ca")
# Library parameters named in errors -> the flags that set them (longest first: one contains another).
PARAMETER_FLAGS = {
    "stow_credentials_file": "--stow-credentials-file",
    "forward_tls_cert": "--forward-tls-cert",
    "forward_tls_key": "--forward-tls-key",
    "forward_tls_ca": "--forward-tls-ca",
    **{field: SETTING_FLAGS[field] for field in TLS_FLAGS},
}


def node_settings(args: argparse.Namespace) -> Any:
    """`NodeSettings` from the flags; MuraError naming the first bad flag and what it allows."""
    from pydantic import ValidationError

    from mura.pacs.node_settings import NodeSettings, default_spool_dir

    spool = args.spool or default_spool_dir(args.ae_title, args.port)
    values = {field: getattr(args, field) for field in SETTING_FLAGS if field != "spool_dir"}
    values["allowed_calling"] = tuple(args.allowed_calling or ())
    try:
        return NodeSettings(spool_dir=spool, **values)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = str(error["loc"][0]) if error["loc"] else ""
        flag = SETTING_FLAGS.get(field, field)
        given = error.get("input")
        given = str(given) if isinstance(given, Path) else given
        raise MuraError(f"{flag} {given!r}: {error['msg'].removeprefix('Value error, ')}") from None


def destinations(args: argparse.Namespace, calling_ae_title: str) -> list[Any]:
    """The C-STORE (optionally over TLS) and STOW-RS destinations the flags name."""
    from mura.pacs.credentials import stow_credentials
    from mura.pacs.delivery import StowDestination, parse_forward
    from mura.pacs.tls import forward_context

    if not args.forward and not args.stow:
        raise MuraError("give a destination: --forward AET@HOST:PORT and/or --stow URL")
    forward_tls = (args.forward_tls_ca, args.forward_tls_cert, args.forward_tls_key)
    if any(forward_tls) and not (args.forward and args.forward_tls_ca):
        raise MuraError("--forward-tls-cert/--forward-tls-key need --forward-tls-ca and --forward")
    credentials = stow_credentials(args.stow_credentials_file, os.environ)
    if credentials is not None and not args.stow:
        raise MuraError("STOW-RS credentials given (file or environment) without --stow URL; add it")
    found = []
    if args.forward:
        tls = forward_context(*forward_tls) if args.forward_tls_ca else None
        try:
            found.append(parse_forward(args.forward, calling_ae_title, tls))
        except MuraError as exc:
            raise MuraError(f"--forward: {exc}") from None
    if args.stow:
        try:
            found.append(StowDestination(args.stow, credentials))
        except MuraError as exc:
            raise MuraError(f"--stow: {exc}") from None
    return found


def exposure_warnings(settings: Any) -> list[str]:
    """What a node reachable from the network leaves open, said aloud at start."""
    if is_loopback(settings.host):
        return []
    warnings = []
    if not settings.allowed_calling:
        warnings.append(
            f"listening on {settings.host} without --allow: any calling AE title is accepted, and AE "
            "titles are not authentication; list the senders with --allow and require client "
            "certificates with --tls-ca"
        )
    if settings.tls_cert is None:
        warnings.append("without --tls-cert, images and results cross the network unencrypted")
    elif settings.tls_ca is None:
        warnings.append("without --tls-ca, any TLS client is accepted (no client certificate required)")
    return warnings


def run_dicom_node(args: argparse.Namespace) -> int:
    from mura.pacs.node import DicomNode

    settings = node_settings(args)
    targets = destinations(args, settings.ae_title)
    for warning in exposure_warnings(settings):
        print(f"mura dicom-node: warning: {warning}", file=sys.stderr, flush=True)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s mura dicom-node: %(message)s", stream=sys.stderr
    )
    for chatty in ("pynetdicom", "highdicom"):  # the node logs what matters, once per event
        logging.getLogger(chatty).setLevel(logging.CRITICAL if chatty == "pynetdicom" else logging.WARNING)
    node = DicomNode(settings, _analyser(args), targets)

    def request_stop(*_: object) -> None:
        # Set from another thread: a handler runs in the main thread, which may be inside
        # `node.stop.wait()` holding the event's (non-reentrant) lock; setting it here could deadlock
        # (seen once in CI: the node never stopped on SIGTERM).
        threading.Thread(target=node.stop.set, name="mura-dicom-stop", daemon=True).start()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, request_stop)

    def ready() -> None:
        allowed = ", ".join(settings.allowed_calling) or "any calling AE title"
        tls = "" if node.tls is None else (", TLS" + (" + client certificates" if settings.tls_ca else ""))
        names = ", ".join(d.name for d in targets)  # names carry no secret (see mura.pacs.delivery)
        print(
            f"mura dicom-node: {settings.ae_title} listening on {settings.host}:{settings.port} "
            f"({allowed}{tls}); results to {names}; spool {settings.spool_dir}",
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

    def analyse(paths: list[Path], prior: Any):
        return study_results(
            predictor, paths, explainer=explainer, operating_point=args.operating_point, prior=prior
        )

    return analyse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `mura dicom-node`."""
    from mura.pacs.node_settings import NodeSettings

    fields = NodeSettings.model_fields
    p = subparsers.add_parser(
        "dicom-node",
        help="DICOM Storage SCP: analyse received studies, send SR + Secondary Captures on",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--checkpoint", nargs="+", required=True, metavar="CKPT", help="checkpoint(s); several = ensemble"
    )
    p.add_argument("--port", type=int, required=True, help=fields["port"].description)
    p.add_argument("--ae-title", required=True, metavar="AET", help=fields["ae_title"].description)
    p.add_argument("--forward", default=None, metavar="AET@HOST:PORT", help="C-STORE results to this SCP")
    p.add_argument(
        "--forward-tls-ca",
        type=Path,
        default=None,
        metavar="PEM",
        help="C-STORE to --forward over DICOM TLS; its certificate must be signed by this CA",
    )
    p.add_argument("--forward-tls-cert", type=Path, default=None, metavar="PEM", help="client certificate")
    p.add_argument("--forward-tls-key", type=Path, default=None, metavar="PEM", help="its private key")
    p.add_argument(
        "--stow",
        default=None,
        metavar="URL",
        help="also/instead STOW-RS results to this DICOMweb URL (no user:password@ in it)",
    )
    p.add_argument(
        "--stow-credentials-file",
        type=Path,
        default=None,
        metavar="FILE",
        help="one line user:password for --stow, mode 600 (or set MURA_STOW_USER and MURA_STOW_PASSWORD)",
    )
    p.add_argument(
        "--allow",
        dest="allowed_calling",
        nargs="+",
        default=None,
        metavar="AET",
        help="accept only these calling AE titles (default: ANY calling AE title is accepted; AE titles "
        "are not authentication, client certificates are: --tls-ca)",
    )
    p.add_argument("--host", default=fields["host"].default, help=fields["host"].description)
    p.add_argument(
        "--spool",
        default=None,
        metavar="DIR",
        help=f"{fields['spool_dir'].description}; default $XDG_DATA_HOME/mura/dicom-node/AET-PORT "
        "(~/.local/share/... without it), created 0700",
    )
    for name in TLS_FLAGS:
        p.add_argument(
            SETTING_FLAGS[name],
            dest=name,
            type=Path,
            default=None,
            metavar="PEM",
            help=fields[name].description,
        )
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
    p.set_defaults(func=run_dicom_node, parameter_flags=PARAMETER_FLAGS)

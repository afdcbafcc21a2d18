"""Subcommand `mura serve`: the HTTP API and web page around one loaded model."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mura.errors import MuraError

PARAMETER_FLAGS = {"head_timeout_s": "--head-timeout-s", "max_idle": "--max-idle-connections"}


def _warn(message: str) -> None:
    print(f"mura serve: warning: {message}", file=sys.stderr, flush=True)


def _warn_about_exposure(args: argparse.Namespace) -> None:
    """A server reachable from the network without a token, TLS or a host name is a choice to say aloud."""
    from mura.network import is_loopback
    from mura.service.security import allowed_hosts

    if is_loopback(args.host):
        return
    if args.auth_token_file is None:
        _warn(
            f"listening on {args.host} without --auth-token-file: whoever reaches the port can use the model"
        )
    if args.tls_cert is None:
        _warn("without --tls-cert, images and answers cross the network unencrypted")
    if not args.allowed_host:
        hosts = ", ".join(allowed_hosts(args.host))
        _warn(f"only requests for {hosts} are accepted; name the host clients use with --allowed-host")


def run_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from mura.service.loading import app_from_checkpoints
    from mura.service.security import allowed_hosts, load_tokens
    from mura.service.server import ConnectionLimits, uvicorn_options

    if args.max_upload_mb <= 0 or args.max_megapixels <= 0 or args.workers < 1 or args.max_queue < 0:
        raise MuraError("--max-upload-mb and --max-megapixels must be > 0, --workers >= 1, --max-queue >= 0")
    if args.body_timeout_s <= 0 or args.max_reading < 1:
        raise MuraError("--body-timeout-s must be > 0 and --max-reading >= 1")
    limits = ConnectionLimits(head_timeout_s=args.head_timeout_s, max_idle=args.max_idle_connections)
    request_slots = args.workers + args.max_queue + args.max_reading
    options = uvicorn_options(limits, request_slots, tls_cert=args.tls_cert, tls_key=args.tls_key)
    tokens = load_tokens(args.auth_token_file) if args.auth_token_file else None
    _warn_about_exposure(args)
    app = app_from_checkpoints(
        args.checkpoint,
        device=args.device,
        runtime=args.runtime,
        tta=args.tta,
        max_upload_bytes=int(args.max_upload_mb * 1024 * 1024),
        max_pixels=int(args.max_megapixels * 1_000_000),
        max_queue=args.max_queue,
        workers=args.workers,
        body_timeout_s=args.body_timeout_s,
        max_reading=args.max_reading,
        auth_tokens=tokens,
        allowed_hosts=allowed_hosts(args.host, args.allowed_host),
        docs=args.docs,
    )
    scheme = "https" if args.tls_cert else "http"
    docs = " (API docs at /docs)" if args.docs else " (API schema at /openapi.json)"
    print(f"mura serve: model loaded; open {scheme}://{args.host}:{args.port}/{docs}", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, **options)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `mura serve`."""
    p = subparsers.add_parser("serve", help="serve a model over HTTP with a web page (FastAPI + uvicorn)")
    p.add_argument(
        "--checkpoint",
        nargs="+",
        required=True,
        metavar="CKPT",
        help="checkpoint(s) (.pt or exported .onnx); several form an ensemble",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max-upload-mb", type=float, default=32.0, help="largest request body (413 above)")
    p.add_argument(
        "--max-megapixels",
        type=float,
        default=64.0,
        help="largest image a header may declare (422 above: decompression-bomb guard)",
    )
    p.add_argument("--workers", type=int, default=1, help="inference threads")
    p.add_argument(
        "--max-queue", type=int, default=8, help="requests that may wait for a worker (503 beyond)"
    )
    p.add_argument(
        "--body-timeout-s",
        type=float,
        default=30.0,
        help="a request body must arrive within this many seconds (408 after); no model slot is held",
    )
    p.add_argument("--max-reading", type=int, default=16, help="request bodies read at once (503 beyond)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--runtime", default="auto", choices=("auto", "torch", "onnx"))
    p.add_argument("--tta", action="store_true", help="average with the horizontally flipped image")
    p.add_argument(
        "--head-timeout-s",
        type=float,
        default=10.0,
        help="a request head must arrive within this many seconds of connecting or of the last answer",
    )
    p.add_argument(
        "--max-idle-connections",
        type=int,
        default=100,
        help="connections waiting for a request; beyond it the longest-waiting one is closed",
    )
    p.add_argument(
        "--auth-token-file",
        type=Path,
        metavar="PATH",
        help="require `Authorization: Bearer TOKEN` on /v1/, TOKEN a line of this file (chmod 600)",
    )
    p.add_argument("--tls-cert", type=Path, metavar="PEM", help="serve HTTPS with this certificate (chain)")
    p.add_argument("--tls-key", type=Path, metavar="PEM", help="the certificate's private key")
    p.add_argument(
        "--allowed-host",
        action="append",
        default=[],
        metavar="NAME",
        help="a Host name clients use (repeatable); localhost, 127.0.0.1, ::1 and --host always are",
    )
    p.add_argument(
        "--docs", action="store_true", help="serve Swagger UI at /docs (its assets come from a CDN)"
    )
    p.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"))
    p.set_defaults(func=run_serve, parameter_flags=PARAMETER_FLAGS)

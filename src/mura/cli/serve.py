"""Subcommand `mura serve`: the HTTP API and web page around one loaded model."""

from __future__ import annotations

import argparse

from mura.errors import MuraError


def run_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from mura.service.loading import app_from_checkpoints

    if args.max_upload_mb <= 0 or args.max_megapixels <= 0 or args.workers < 1 or args.max_queue < 0:
        raise MuraError("--max-upload-mb and --max-megapixels must be > 0, --workers >= 1, --max-queue >= 0")
    if args.body_timeout_s <= 0 or args.max_reading < 1:
        raise MuraError("--body-timeout-s must be > 0 and --max-reading >= 1")
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
    )
    print(f"mura serve: model loaded; open http://{args.host}:{args.port}/ (API docs at /docs)", flush=True)
    # A hard cap on open connections too (uvicorn answers 503 beyond it), well above the model's queue
    # so the page, /healthz and quick refusals stay reachable while the model is busy.
    limit = 4 * (args.workers + args.max_queue) + 32
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, limit_concurrency=limit)
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
    p.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"))
    p.set_defaults(func=run_serve)

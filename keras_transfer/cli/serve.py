"""``keras-transfer serve``: the command line of :mod:`keras_transfer.serving.server`."""

from __future__ import annotations

import argparse
import re


def _positive(kind, name: str, low, high=None):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} takes a number. Received: {text!r}") from None
        if value < low or (high is not None and value > high):
            span = f"{low}..{high}" if high is not None else f"at least {low}"
            raise argparse.ArgumentTypeError(f"{name} must be {span}. Received: {text}")
        return value
    return parse


def _model_name(text: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", text):
        raise argparse.ArgumentTypeError(f"--model-name takes letters, digits, '_', '.' and '-' (it is part of "
                                         f"the URLs). Received: {text!r}")
    return text


def cmd_serve(args) -> int:
    from aiohttp import web

    from keras_transfer.serving import server

    shaping = [f for f, v in (("--max-batch-size", args.max_batch_size), ("--batch-timeout-ms", args.batch_timeout_ms))
               if v is not None]
    if shaping and not args.batching:
        raise ValueError(f"{' and '.join(shaping)} shape request batching, which is off without --enable-batching. "
                         f"Received: {' '.join(shaping)} without --enable-batching")
    max_batch = args.max_batch_size or 32
    timeout_ms = 2.0 if args.batch_timeout_ms is None else args.batch_timeout_ms
    name = args.model_name or server.default_name(args.export_dir)
    model = server.ModelServer(args.export_dir, name, batching=args.batching, max_batch_size=max_batch,
                               batch_timeout=timeout_ms / 1000, poll_seconds=args.poll_seconds)
    app = server.application(model, max_body_bytes=int(args.max_body_mb * (1 << 20)))
    base = f"http://{args.host}:{args.port}"
    batching = f"on (up to {max_batch} examples, {timeout_ms:g} ms)" if args.batching else "off"
    versions = "serves this one version only" if model.fixed else f"picks up new versions in {model.export_dir}"
    print(f"serving {name} version {model.current.number} from {model.current.path}\n"
          f"  page:    {base}/\n"
          f"  predict: POST {base}/v1/models/{name}:predict  (signatures: {', '.join(sorted(model.current.specs))})\n"
          f"  batching {batching}; {versions}; Ctrl-C stops", flush=True)
    web.run_app(app, host=args.host, port=args.port, print=None, access_log=None)
    return 0


def add_serve_command(sub) -> None:
    p = sub.add_parser("serve", help="serve an export over TF Serving's REST API, with a page to try it",
                       description="Answer TF Serving's REST API (GET /v1/models/NAME, .../metadata, POST "
                                   "/v1/models/NAME:predict with rows or columns, {\"b64\": ...} for files) for the "
                                   "export's signatures, and a page at / to drop an image on. The newest version "
                                   "folder is served; a newer one is picked up without a restart.")
    p.add_argument("export_dir", metavar="EXPORT_DIR", help="an export folder (RUN_DIR/export) or one version of it")
    p.add_argument("--port", type=_positive(int, "--port", 0, 65535), default=8501, help="(default: %(default)s, TF Serving's REST port)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on; 0.0.0.0 for every interface (default: %(default)s)")
    p.add_argument("--model-name", type=_model_name, default=None,
                   help="NAME in the URLs (default: the run folder's name for RUN_DIR/export, else the folder's)")
    p.add_argument("--enable-batching", dest="batching", action="store_true",
                   help="join concurrent requests into batched calls (off by default: on 2 CPU cores it measured "
                        "slower at 32 clients, benchmarks/bench_serve.py; try it where a call's fixed cost dominates)")
    p.add_argument("--max-batch-size", type=_positive(int, "--max-batch-size", 1, 4096), default=None,
                   help="most examples in one batched call (default: 32)")
    p.add_argument("--batch-timeout-ms", type=_positive(float, "--batch-timeout-ms", 0, 1000), default=None,
                   help="how long a batch waits for more requests (default: 2)")
    p.add_argument("--max-body-mb", type=_positive(float, "--max-body-mb", 0.01, 4096), default=32.0,
                   help="larger request bodies get 413 (default: %(default)s)")
    p.add_argument("--poll-seconds", type=_positive(float, "--poll-seconds", 0.05, 3600), default=1.0,
                   help="how often to look for a new version folder (default: %(default)s)")
    p.set_defaults(func=cmd_serve)

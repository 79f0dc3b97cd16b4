"""sisr serve: a local web page and HTTP API for upscaling, models kept loaded (docs/serve.md).

``sisr serve [--host 127.0.0.1] [--port 8000] [--model NAME|FILE ...] [--device auto] [--open]``

Needs the optional extra: ``pip install 'sisr[serve]'``. The work is ``sisr.serve`` (the library's
``upscale_files`` per image); this module parses the arguments.
"""

from __future__ import annotations

import argparse
import os
import sys

TOKEN_ENV = "SISR_SERVE_TOKEN"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1; another one needs --token or --insecure)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000; 0: any free port)")
    parser.add_argument("--model", action="append", default=[], metavar="NAME|FILE",
                        help="a model to offer: registry name or weights file (repeat; the first is the default; "
                             "default: every model that runs without your weights, defian-s first)")
    parser.add_argument("--device", default="auto", help="auto (cuda > mps > cpu), cpu, cuda, cuda:N or mps")
    parser.add_argument("--open", action="store_true", help="open the page in the default browser")
    parser.add_argument("--token", default=os.environ.get(TOKEN_ENV),
                        help=f"bearer token every API call must carry (default: ${TOKEN_ENV})")
    parser.add_argument("--insecure", action="store_true",
                        help="allow a non-loopback --host without a token (anyone who reaches it can use it)")
    parser.add_argument("--concurrency", type=int, default=1, metavar="N", help="images upscaled at once (default 1)")
    parser.add_argument("--queue", type=int, default=32, metavar="N",
                        help="requests waiting beyond those (default 32; more are answered 429)")
    parser.add_argument("--max-upload-mb", type=float, default=50.0, metavar="MB", help="largest upload (default 50)")
    parser.add_argument("--max-pixels", type=int, default=4096 * 4096, metavar="N",
                        help="largest input image in pixels (default 16777216 = 4096x4096)")
    parser.add_argument("--sync-max-pixels", type=int, default=2048 * 1024, metavar="N",
                        help="largest input POST /v1/upscale answers directly (default 2097152; larger: /v1/jobs)")
    parser.add_argument("--model-cache", type=int, default=3, metavar="N", help="networks kept loaded (default 3)")
    parser.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN",
                        help="let pages of ORIGIN (http(s)://host[:port], or *) call the API (repeat; default: none)")
    parser.add_argument("--job-ttl", type=float, default=3600.0, metavar="S",
                        help="seconds a finished job's result is kept (default 3600)")
    parser.add_argument("--log-level", default="warning", choices=("debug", "info", "warning", "error"),
                        help="server log (info: one line per request; default warning)")


def run(args: argparse.Namespace) -> int:
    from ..serve import INSTALL_HINT, missing_dependency

    missing = missing_dependency()
    if missing is not None:
        print(f"sisr serve: error: {missing} is not installed; install the server with: {INSTALL_HINT}",
              file=sys.stderr)
        return 1
    from ..serve.server import serve
    from ..serve.settings import ServeSettings

    settings = ServeSettings(host=args.host, port=args.port, token=args.token or None, insecure=args.insecure,
                             models=tuple(args.model), device=args.device, concurrency=args.concurrency,
                             queue=args.queue, max_upload_mb=args.max_upload_mb, max_pixels=args.max_pixels,
                             sync_max_pixels=args.sync_max_pixels, model_cache=args.model_cache,
                             cors_origins=tuple(args.cors_origin), job_ttl_s=args.job_ttl)
    return serve(settings, open_browser=args.open, log_level=args.log_level)

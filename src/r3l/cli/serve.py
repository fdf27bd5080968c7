"""``r3l serve``: the local web page."""

from __future__ import annotations

import argparse
import sys

from r3l.cli.common import non_negative_int
from r3l.errors import R3LError


def add_parser(sub) -> None:
    p = sub.add_parser("serve", help="a local web page to try a denoiser on your own image",
                       description="Start a web page: upload an image or pick a sample, optionally add noise of "
                                   "a chosen sigma (then PSNR/SSIM as r3l eval computes them), denoise, compare "
                                   "with a slider, play R3L's per-step action maps, download the result at full "
                                   "resolution and bit depth. Listens on loopback unless --host says otherwise.")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1, this machine "
                                                       "only; 0.0.0.0 exposes the page to the network)")
    p.add_argument("--port", type=non_negative_int, default=8000, help="port (default 8000; 0: any free port)")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    p.add_argument("--checkpoint", action="append", help="offer this checkpoint (repeatable)")
    p.add_argument("--model", action="append", metavar="NAME",
                   help="offer this registry model (repeatable; default: every installed model)")
    p.add_argument("--max-upload-mb", type=float, default=100.0, help="largest upload accepted (default 100)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from r3l.runtime import pick_device
    from r3l.web.server import model_loaders, serve

    device = str(pick_device(args.device))
    loaders = model_loaders(args.checkpoint or [], args.model or [], device)
    if args.max_upload_mb <= 0:
        raise R3LError(f"--max-upload-mb {args.max_upload_mb:g}: expected a positive number")

    def ready(url: str) -> None:
        print(f"serving r3l on {url} (models: {', '.join(loaders)}); Ctrl-C stops it", flush=True)
        if args.host not in ("127.0.0.1", "localhost", "::1"):
            print(f"r3l: warning: listening on {args.host}: the page is reachable from other machines",
                  file=sys.stderr, flush=True)

    serve(loaders, args.host, args.port, device, args.max_upload_mb, ready)
    return 0

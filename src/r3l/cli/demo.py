"""``r3l demo``: train a small model on scikit-image's samples on the CPU and show it."""

from __future__ import annotations

import argparse
from pathlib import Path

from r3l.cli.common import non_negative_int, positive_float


def add_parser(sub) -> None:
    p = sub.add_parser("demo", help="train a small model on scikit-image's samples on the CPU and show it",
                       description="Trains a small R3L model on scikit-image's bundled images (a few minutes "
                                   "on a CPU), evaluates it on held-out samples and writes demo.png (noisy | "
                                   "denoised | clean) and demo.json (PSNRs).")
    p.add_argument("--out-dir", default="demo_out", help="where to write the results (default demo_out)")
    p.add_argument("--episodes", type=non_negative_int, default=150, help="training episodes (default 150)")
    p.add_argument("--sigma", type=positive_float, default=25.0, help="noise level (default 25)")
    p.add_argument("--device", default="cpu", help="cpu (default), auto, cuda")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from r3l.training.demo import run_demo

    run_demo(Path(args.out_dir), args.episodes, args.device, args.sigma, progress=not args.quiet)
    return 0

"""``r3l benchmark``: the paper's noise-mismatch tables for a list of methods."""

from __future__ import annotations

import argparse
from pathlib import Path

from r3l.cli.common import non_negative_int


def add_parser(sub) -> None:
    p = sub.add_parser("benchmark", help="the paper's noise-mismatch tables for a list of methods",
                       description="Evaluate R3L/R3N/DnCNN checkpoints, KAIR's DnCNN, BM3D and the noisy input "
                                   "over several test sigmas on the same seeded noisy images; writes table.md "
                                   "(with the published numbers), results.csv, summary.json, psnr_vs_sigma.png "
                                   "and examples.png. Interrupted runs continue from cache.jsonl.")
    p.add_argument("--config", required=True, help="benchmark YAML (see benchmarks/paper_sigma25.yaml)")
    p.add_argument("--out", help="output folder (default benchmark_results/<name>)")
    p.add_argument("--max-images", type=non_negative_int, help="first N test images only")
    p.add_argument("--device", help="auto, cpu, cuda or cuda:N (default: the config's, else auto)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from r3l.evaluation.benchmark import load_benchmark_config, run_benchmark

    cfg = load_benchmark_config(args.config, {"max_images": args.max_images, "device": args.device})
    out = Path(args.out or Path("benchmark_results") / cfg.name)
    summary = run_benchmark(cfg, out, progress=not args.quiet)
    for name, m in summary["methods"].items():
        print(f"{name:>12}: average {m['average']:.2f} dB over sigma {', '.join(f'{s:g}' for s in cfg.sigmas)}"
              f"  ({m['seconds_per_image']:.3f} s/image)")
    print(f"wrote {out}/table.md, results.csv, summary.json, examples.png"
          + (", psnr_vs_sigma.png" if summary["plot"] else " (no plot: pip install matplotlib)")
          + f" in {summary['wall_seconds']:.1f} s")
    return 0

"""Does a config learn? Train it for N episodes (or M seconds) and print the learning curve as JSON.

    python benchmarks/learning.py --config configs/r3l_gray_sigma25.yaml --episodes 2000 --val-every 500
    python benchmarks/learning.py --config configs/r3l_gray_sigma25.yaml --seconds 480 --set train.precision=fp32

The JSON holds the validation curve (greedy PSNR on ``data.val``), the entropy and training-batch PSNR gain
per log interval, the final explained variance, episodes per second (validation excluded), the seconds spent
validating, peak GPU memory, and the precision and compilation the trainer resolved. ``metrics.jsonl`` in the
run directory grows while it trains, so a run that is cut off still leaves its curve.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from common import device_name, emit, peak_device_mib
from r3l.config import load_config
from r3l.errors import R3LError
from r3l.runtime import configure_torch
from r3l.training.trainer import Trainer

CURVES = {"entropy": "losses/entropy", "gain": "charts/psnr_gain", "explained_variance": "losses/explained_variance"}


def read_metrics(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def summarise(rows: list[dict]) -> dict:
    """Curves ``[[episode, value], ...]`` from a run's ``metrics.jsonl`` rows."""
    out: dict = {"val_psnr": [[r["episode"], r["val/psnr"]] for r in rows if "val/psnr" in r],
                 "val_seconds": [[r["episode"], r["time/val_s"]] for r in rows if "time/val_s" in r]}
    for name, key in CURVES.items():
        out[name] = [[r["episode"], r[key]] for r in rows if key in r]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--set", action="append", default=[], help="config override key=value")
    parser.add_argument("--episodes", type=int, help="train.episodes (the learning-rate schedule's length)")
    parser.add_argument("--seconds", type=float, help="stop after this much training time (at a log interval)")
    parser.add_argument("--val-every", type=int, help="train.val_every")
    parser.add_argument("--run-dir", default=None, help="where the run is written (default runs/learning/<name>)")
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args(argv)
    overrides = list(args.set) + ["train.progress=false"]
    if args.episodes:
        overrides.append(f"train.episodes={args.episodes}")
    if args.val_every:
        overrides.append(f"train.val_every={args.val_every}")
    try:
        cfg = load_config(args.config, overrides)
        run_dir = Path(args.run_dir or f"runs/learning/{cfg.name}")
        configure_torch(cfg.train)
        trainer = Trainer(cfg, run_dir)
        started = time.perf_counter()
        last = trainer.train(time_limit=args.seconds)
        seconds = time.perf_counter() - started
        done = trainer.episodes_done
        rows = read_metrics(run_dir / "metrics.jsonl")
        curves = summarise(rows)
        if trainer.val_images and (not curves["val_psnr"] or curves["val_psnr"][-1][0] != done):
            tick = time.perf_counter()
            curves["val_psnr"].append([done, trainer.validate()])
            curves["val_seconds"].append([done, time.perf_counter() - tick])
    except R3LError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    val_time = sum(s for _, s in curves["val_seconds"])
    train_time = seconds - val_time
    result = {
        "config": args.config,
        "overrides": args.set,
        "device": device_name(trainer.device),
        "precision": trainer.precision.name,
        "compile": [trainer.compile, trainer.compile_mode],
        "seed": cfg.seed,
        "episodes": done,
        "seconds": seconds,
        "episodes_per_s": done / train_time if train_time > 0 else None,
        "validation_seconds": val_time,
        "peak_gpu_mib": peak_device_mib(trainer.device),
        "final": {k: last.get(v) for k, v in CURVES.items()},
        "final_val_psnr": curves["val_psnr"][-1][1] if curves["val_psnr"] else None,
        "torch": torch.__version__,
        **curves,
    }
    emit(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

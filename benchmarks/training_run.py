"""Wall-clock time of a real training run, measured from its run folder, and the whole training it implies.

    r3l train --config configs/r3l_gray_sigma25.yaml --run-dir runs/timed    # stop it whenever you like
    python benchmarks/training_run.py runs/timed

Reads ``metrics.jsonl`` (``time/elapsed_s`` at each log line, ``time/val_s`` for each validation) and
``config.yaml``. Seconds per episode come from the last log line with validations taken out; the whole-training
estimate is ``train.episodes`` such episodes plus one validation per ``train.val_every`` episodes (and one at the
end), each as long as the mean measured one. ``--episodes`` and ``--val-every`` estimate another length. The
run's first episodes include start-up work (cuDNN autotuning, worker start), so a short run overestimates.

Prints one JSON object (and writes it to --out if given).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
from pathlib import Path

import yaml

from common import emit


def summarize(run_dir: Path, episodes: int | None = None, val_every: int | None = None) -> dict:
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    timed = [line for line in lines if "time/elapsed_s" in line]
    if not timed:
        raise SystemExit(f"{run_dir / 'metrics.jsonl'}: no time/elapsed_s lines (the run predates wall-clock logging)")
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    last = timed[-1]
    done, elapsed = last["episode"], last["time/elapsed_s"]
    vals = [(line["episode"], line["time/val_s"]) for line in lines if "time/val_s" in line]
    val_before = sum(s for e, s in vals if e < done)
    started = max(timed[0]["episode"] - cfg["train"]["log_every"], 0)  # the first logged interval's first episode
    per_episode = (elapsed - val_before) / (done - started)
    total = episodes or cfg["train"]["episodes"]
    every = val_every or cfg["train"]["val_every"]
    n_val = total // every + (total % every != 0)
    mean_val = sum(s for _, s in vals) / len(vals) if vals else math.nan
    return {
        "benchmark": "training_run",
        "run": str(run_dir), "date": datetime.date.today().isoformat(),
        "config": cfg.get("name"), "precision": cfg["train"].get("precision"), "compile": cfg["train"].get("compile"),
        "batch": cfg["data"]["batch_size"], "crop": cfg["data"]["crop"],
        "episodes_timed": done - started, "elapsed_s": elapsed,
        "validations": len(vals), "validation_s_mean": mean_val,
        "episode_s": per_episode,
        "training_episodes": total, "val_every": every,
        "training_estimate_min": (total * per_episode + n_val * (mean_val if vals else 0.0)) / 60,
        "last_val_psnr": next((line["val/psnr"] for line in reversed(lines) if "val/psnr" in line), None),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--episodes", type=int, help="whole-training length to estimate (default: the run's)")
    parser.add_argument("--val-every", type=int, help="validation interval to estimate with (default: the run's)")
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args()
    emit(summarize(args.run_dir, args.episodes, args.val_every), args.out)


if __name__ == "__main__":
    main()

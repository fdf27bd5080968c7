"""How long ``r3l denoise`` of a small image takes as a whole process, against ``python -c "import torch"``.

A command's start is mostly imports, so it is measured as a ratio to PyTorch's own import on the same machine in
the same run (alternated, median of ``--repeats``): ``first`` with an empty onnxruntime graph cache (the first
command after installing r3l), ``warm`` with the cache filled by the run before. Also ``r3l --help`` (which must
not import PyTorch). Prints JSON (``--out`` writes it too).

    python benchmarks/startup.py --repeats 5 --out benchmarks/results/startup_cpu.json
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from common import emit  # noqa: E402


def seconds(command: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--size", type=int, default=64, help="the image's side")
    parser.add_argument("--out")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        image = Path(tmp) / "in.png"
        rng = np.random.default_rng(0)
        Image.fromarray((rng.random((args.size, args.size)) * 255).astype(np.uint8)).save(image)
        r3l = [sys.executable, "-m", "r3l"]
        denoise = [*r3l, "denoise", str(image), "-o", str(Path(tmp) / "out.png"), "--strength", "1"]
        torch_import = [sys.executable, "-c", "import torch"]
        times: dict[str, list[float]] = {"torch_import": [], "first": [], "warm": [], "help": []}
        for k in range(args.repeats):
            env = {**os.environ, "R3L_CACHE_DIR": str(Path(tmp) / f"cache{k}")}
            times["torch_import"].append(seconds(torch_import, env))
            times["first"].append(seconds(denoise, env))
            times["warm"].append(seconds(denoise, env))
            times["help"].append(seconds([*r3l, "--help"], env))
    median = {name: statistics.median(values) for name, values in times.items()}
    emit({
        "benchmark": "startup", "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
        "image": f"{args.size}x{args.size} gray", "repeats": args.repeats,
        "median_s": median,
        "ratio_to_torch_import": {name: median[name] / median["torch_import"] for name in ("first", "warm", "help")},
        "all_s": times,
    }, args.out)


if __name__ == "__main__":
    main()

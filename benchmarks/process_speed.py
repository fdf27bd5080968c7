"""Whole-process ``r3l denoise`` of a few images with the default model, against the same command with KAIR's
DnCNN (``--model dncnn --weights dncnn_25.pth``), on this machine in the same run.

    python benchmarks/process_speed.py --data $R3L_DATA/BSD68 --dncnn $R3L_WEIGHTS/dncnn_25.pth \\
        --out benchmarks/results/process_speed_cpu.json

The two commands alternate (``--repeats`` times, median kept), each a fresh process on ``--count`` images of
``--data``, so start-up, reading, denoising and writing are all in the time. Reported with it: the two networks'
multiply-adds per image (``torch.utils.flop_counter``, all of R3N's recurrent steps), whose ratio is what the
time ratio comes to once start-up is small beside the work, and the CPU's instruction-set flags that decide
the speed of its fp32 and bf16 convolutions (AVX-512, AVX512-BF16, AMX).
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

import torch
from torch.utils.flop_counter import FlopCounterMode

from common import emit
from cpu_speed import cpu_model
from r3l.inference.denoiser import Denoiser

FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_tile", "asimd", "sve")


def cpu_flags() -> list[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    present = set()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            present |= set(line.split(":", 1)[1].split())
    return [flag for flag in FLAGS if flag in present]


def multiply_adds(net: torch.nn.Module, size: tuple[int, int]) -> float:
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        net(torch.rand(1, 1, *size))
    return counter.get_total_flops() / 2


def seconds(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="a folder of test images")
    parser.add_argument("--dncnn", required=True, help="KAIR's dncnn_25.pth")
    parser.add_argument("--count", type=int, default=4, help="images per command")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out")
    args = parser.parse_args()
    images = sorted(p for p in Path(args.data).iterdir() if p.suffix.lower() in (".png", ".jpg", ".tif"))
    images = [str(p) for p in images[: args.count]]
    r3l = [sys.executable, "-m", "r3l", "denoise", *images, "-q", "--strength", "1"]
    times: dict[str, list[float]] = {"default": [], "dncnn": []}
    with tempfile.TemporaryDirectory() as tmp:
        seconds([*r3l, "--out-dir", f"{tmp}/warm-up"])  # fills the onnxruntime graph cache, as any later run has it
        seconds([*r3l, "--out-dir", f"{tmp}/warm-up", "--model", "dncnn", "--weights", args.dncnn])
        for k in range(args.repeats):
            times["default"].append(seconds([*r3l, "--out-dir", f"{tmp}/default{k}"]))
            times["dncnn"].append(seconds([*r3l, "--out-dir", f"{tmp}/dncnn{k}", "--model", "dncnn",
                                           "--weights", args.dncnn]))
    median = {name: statistics.median(values) for name, values in times.items()}
    default = Denoiser.pretrained(engine="torch")
    dncnn = Denoiser.from_dncnn_weights(args.dncnn, engine="torch")
    macs = {"default": multiply_adds(default.net, (321, 481)), "dncnn": multiply_adds(dncnn.net, (321, 481))}
    emit({
        "benchmark": "process_speed", "cpu": cpu_model(), "flags": cpu_flags(), "cpus": os.cpu_count(),
        "machine": platform.machine(), "default_model": default.name, "images": len(images),
        "median_s": median, "time_ratio_default_to_dncnn": median["default"] / median["dncnn"],
        "multiply_adds_per_481x321_image": macs, "multiply_add_ratio": macs["default"] / macs["dncnn"],
        "all_s": times,
    }, args.out)


if __name__ == "__main__":
    main()

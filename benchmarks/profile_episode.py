"""Where one R3L training episode spends its time: a torch.profiler trace summarised as JSON.

Reports the top operators by self time on the device (CUDA kernels) or, on the CPU, by self CPU time; on CUDA
also how busy the GPU was: the union of kernel intervals against the wall time, the rest being gaps (launch
overhead, host work, synchronisation), and the number of kernel launches per episode.

    python benchmarks/profile_episode.py --preset seed --device cuda --out profile.json --trace trace.json

``--trace`` also writes the Chrome trace (open it in https://ui.perfetto.dev).
"""

from __future__ import annotations

import argparse
import datetime
import time

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

from common import EpisodeSetup, add_episode_args, device_name, emit, sync


def busy_microseconds(intervals: list[tuple[float, float]]) -> float:
    """Length of the union of ``[start, end)`` intervals."""
    total, reach = 0.0, float("-inf")
    for start, end in sorted(intervals):
        if end <= reach:
            continue
        total += end - max(start, reach)
        reach = end
    return total


def top_operators(prof, on_device: bool, count: int, episodes: int) -> list[dict]:
    averages = prof.key_averages()
    key = "self_device_time_total" if on_device else "self_cpu_time_total"
    rows = sorted(averages, key=lambda e: getattr(e, key), reverse=True)[:count]
    total = sum(getattr(e, key) for e in averages) or 1.0
    return [
        {"name": e.key, "ms_per_episode": getattr(e, key) / 1e3 / episodes,
         "share": getattr(e, key) / total, "calls_per_episode": e.count / episodes}
        for e in rows
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=2, help="profiled episodes (after one warm-up)")
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--trace", help="write the Chrome trace here")
    add_episode_args(parser)
    args = parser.parse_args()
    setup = EpisodeSetup(args, args.episodes + 1)
    device, on_device = setup.device, setup.device.type == "cuda"

    setup.episode(0)
    sync(device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_device else [])
    with profile(activities=activities) as prof:
        start = time.perf_counter()
        for e in range(1, args.episodes + 1):
            setup.episode(e)
        sync(device)
        wall_s = time.perf_counter() - start
    if args.trace:
        prof.export_chrome_trace(args.trace)

    result = {
        "benchmark": "profile_episode",
        "preset": args.preset,
        "device": device_name(device),
        "torch": torch.__version__,
        "date": datetime.date.today().isoformat(),
        "precision": setup.trainer.precision.name,
        "compile": setup.trainer.compile, "compile_mode": setup.trainer.compile_mode,
        "episodes": args.episodes,
        "wall_ms_per_episode": wall_s * 1e3 / args.episodes,
        "top": top_operators(prof, on_device, args.top, args.episodes),
    }
    if on_device:
        kernels = [e for e in prof.events() if e.device_type == DeviceType.CUDA]
        busy_us = busy_microseconds([(k.time_range.start, k.time_range.end) for k in kernels])
        result.update({
            "kernels_per_episode": len(kernels) / args.episodes,
            "gpu_busy_ms_per_episode": busy_us / 1e3 / args.episodes,
            "gpu_idle_share": 1.0 - busy_us / 1e6 / wall_s,
        })
    emit(result, args.out)


if __name__ == "__main__":
    main()

"""Can the data pipeline keep up? Training batches per second from ``r3l``'s loader (random crops, flips,
rotations) with 0…N worker processes, against the rate an episode consumes them.

    python benchmarks/data_loader.py --data ${R3L_DATA}/Train400 --workers 0 2 6 --episode-s 0.19

With pinned memory and a CUDA device it also times the host-to-device copy of each batch.
"""

from __future__ import annotations

import argparse
import datetime
import os
import time

import torch

from common import device_name, emit, sync
from r3l.io.data import DataConfig, load_images, make_train_loader
from r3l.runtime import pick_device


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="skimage", help="training images (a folder, or skimage)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--crop", type=int, default=70)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--batches", type=int, default=200, help="timed batches per setting")
    parser.add_argument("--episode-s", type=float, default=0.19, help="episode time the loader must keep up with")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args()

    device = pick_device(args.device)
    cuda = device.type == "cuda"
    images = load_images(args.data, 1, "--data")
    rows = []
    for workers in args.workers:
        cfg = DataConfig(train=args.data, batch_size=args.batch, crop=args.crop, workers=workers)
        loader = make_train_loader(images, cfg, 0, 0, args.batches + 5, pin_memory=cuda)
        batches = iter(loader)
        for _ in range(5):  # start the workers and fill their queues
            next(batches)
        start = time.perf_counter()
        copy_s = 0.0
        for clean in batches:
            if cuda:
                tick = time.perf_counter()
                clean.to(device, non_blocking=True)
                sync(device)
                copy_s += time.perf_counter() - tick
        elapsed = time.perf_counter() - start
        rate = args.batches / elapsed
        rows.append({
            "workers": min(workers, os.cpu_count() or 1), "batches_per_s": rate,
            "keeps_up": rate >= 1.0 / args.episode_s,
            "copy_ms_per_batch": copy_s * 1e3 / args.batches if cuda else None,
        })
    emit({
        "benchmark": "data_loader",
        "device": device_name(device),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "date": datetime.date.today().isoformat(),
        "data": args.data, "images": len(images), "batch": args.batch, "crop": args.crop,
        "needed_batches_per_s": 1.0 / args.episode_s,
        "settings": rows,
    }, args.out)


if __name__ == "__main__":
    main()

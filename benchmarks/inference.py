"""Time greedy denoising of a test folder (load excluded) and of one large tiled image.

    python benchmarks/inference.py --data $R3L_DATA/BSD68 --device cuda
    python benchmarks/inference.py --data $R3L_DATA/BSD68 --checkpoint runs/x/best.safetensors --large 4096

Without --checkpoint an untrained R3L network of the paper's size is timed (the work does not depend on the
weights). Prints one JSON object (and writes it to --out if given): seconds for the whole folder, megapixels
per second, peak memory, and for --large the tiled time, peak memory and agreement with untiled inference on
a crop that fits untiled.
"""

from __future__ import annotations

import argparse
import datetime
import time
from collections import defaultdict

import torch

from common import device_name, emit, peak_device_mib, peak_host_mib, sync
from r3l.degradation import noisy_version
from r3l.inference.denoiser import PRECISIONS, Denoiser
from r3l.io.data import load_images
from r3l.models.spec import PAPER_SPECS, build_network
from r3l.runtime import pick_device

PAPER_R3L = PAPER_SPECS["r3l"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="folder of test images (e.g. BSD68)")
    parser.add_argument("--checkpoint", help="r3l checkpoint; default: an untrained paper-size R3L")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-images", type=int, default=0)
    parser.add_argument("--large", type=int, default=0, help="also denoise one LARGE×LARGE image, tiled")
    parser.add_argument("--tile", type=int, default=Denoiser.TILE)
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32",
                        help="network arithmetic (bf16/fp16: autocast); also reports the share of pixels whose "
                             "output differs from fp32")
    parser.add_argument("--compile", action="store_true", help="torch.compile the network (compile time excluded)")
    parser.add_argument("--out")
    args = parser.parse_args()

    device = pick_device(args.device)
    if args.checkpoint:
        den = Denoiser.from_checkpoint(args.checkpoint, device, args.precision, args.compile)
    else:
        torch.manual_seed(0)
        den = Denoiser(build_network(PAPER_R3L), PAPER_R3L, device, precision=args.precision, compile=args.compile)
    den.tile = args.tile
    images = load_images(args.data, den.channels, "--data", args.max_images)
    groups = defaultdict(list)
    for im in images:
        groups[im.native.shape].append(torch.from_numpy(noisy_version(im.float, im.name, 25, 0)).permute(2, 0, 1))
    batches = [torch.stack(g).to(device) for g in groups.values()]  # loading and transfer are not timed
    pixels = sum(b.shape[0] * b.shape[2] * b.shape[3] for b in batches)

    for _ in range(2 if args.compile else 1):  # warm-up (and compilation: a second pass for the dynamic shapes)
        for b in batches:
            den(b)
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for _ in range(args.repeats):
        for b in batches:
            den(b)
    sync(device)
    seconds = (time.perf_counter() - start) / args.repeats
    peak_device = peak_device_mib(device)
    differing = None
    if args.precision != "fp32":
        outputs = [den(b) for b in batches]
        den.precision = "fp32"
        changed = sum(int((den(b) != o).sum()) for b, o in zip(batches, outputs))
        den.precision = args.precision
        differing = changed / (pixels * den.channels)
    result = {
        "benchmark": "inference",
        "device": device_name(device),
        "torch": torch.__version__, "date": datetime.date.today().isoformat(), "model": den.arch.to_dict(),
        "precision": args.precision, "compile": args.compile,
        "channels_last": den.memory_format == torch.channels_last,
        "data": str(args.data), "images": len(images), "shapes": len(batches),
        "seconds": seconds, "megapixels_per_s": pixels / seconds / 1e6,
        "output_share_differing_from_fp32": differing,
        "peak_device_mib": peak_device,
        "peak_host_mib": peak_host_mib(),
    }
    if args.large:
        g = torch.Generator().manual_seed(0)
        big = torch.rand(1, den.channels, args.large, args.large, generator=g)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        sync(device)
        start = time.perf_counter()
        out = den(big)
        sync(device)
        large_seconds = time.perf_counter() - start
        large_peak = peak_device_mib(device)
        large_host = peak_host_mib()
        crop = big[:, :, : args.tile, : args.tile + 37]
        saved, den.tile = den.tile, 10**9
        untiled = den(crop)
        den.tile = saved
        result["large"] = {
            "size": args.large, "tile": args.tile, "margin": den.radius, "seconds": large_seconds,
            "peak_device_mib": large_peak, "peak_host_mib": large_host,
            "crop_identical_to_untiled": bool(torch.equal(den(crop), untiled)),
            "output_shape": list(out.shape),
        }
    emit(result, args.out)


if __name__ == "__main__":
    main()

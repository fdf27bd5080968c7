"""Time an exported denoiser in onnxruntime against r3l's own PyTorch inference, side by side, on the CPU.

    python benchmarks/export_speed.py --data $R3L_DATA/BSD68 --images 8 [--checkpoint CKPT] [--threads 2]

Without --checkpoint an untrained R3L network of the paper's size is timed (the work does not depend on the
weights). Both runtimes denoise the same noisy images one at a time (σ 25, seed 0) after one warm-up image,
alternating per image so that both see the same machine state. Prints one JSON object (and writes it to --out):
seconds per image for each, their ratio, and how many 8-bit output pixels differ.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from common import emit
from r3l.degradation import noisy_version
from r3l.inference.denoiser import Denoiser
from r3l.inference.export import ONNX_OPSET, export_onnx, onnx_session
from r3l.io.data import load_images
from r3l.models.spec import PAPER_SPECS, build_network


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="folder of test images (e.g. BSD68)")
    parser.add_argument("--images", type=int, default=8, help="timed images (after one warm-up)")
    parser.add_argument("--checkpoint", help="an r3l checkpoint (default: untrained paper-size R3L)")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads for both runtimes (0: default)")
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.checkpoint:
        denoiser = Denoiser.from_checkpoint(args.checkpoint, "cpu")
    else:
        torch.manual_seed(0)
        denoiser = Denoiser(build_network(PAPER_SPECS["r3l"]), PAPER_SPECS["r3l"], "cpu")
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        path = export_onnx(denoiser.whole_program(), Path(tmp) / "model.onnx")
        export_s = time.perf_counter() - start
        import onnxruntime

        session = onnx_session(path)
        if args.threads:
            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = args.threads
            options.log_severity_level = 3
            session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        images = load_images(args.data, denoiser.channels, "--data", args.images + 1)
        noisy = [torch.from_numpy(np.ascontiguousarray(noisy_version(im.float, im.name, 25, 0)))
                 .permute(2, 0, 1)[None] for im in images]
        times = {"pytorch": [], "onnxruntime": []}
        off = total = 0
        for k, x in enumerate(noisy):
            t0 = time.perf_counter()
            ours = denoiser(x)
            t1 = time.perf_counter()
            theirs = torch.from_numpy(session.run(None, {"x": x.numpy()})[0])
            t2 = time.perf_counter()
            if k:  # the first image warms both up
                times["pytorch"].append(t1 - t0)
                times["onnxruntime"].append(t2 - t1)
            off += int((torch.round(ours * 255) != torch.round(theirs * 255)).sum())
            total += ours.numel()
    per_image = {k: float(np.mean(v)) for k, v in times.items()}
    emit({
        "benchmark": "export_speed", "date": datetime.date.today().isoformat(), "cpu": platform.processor() or
        "cpu", "threads": torch.get_num_threads() if not args.threads else args.threads,
        "torch": torch.__version__, "onnxruntime": onnxruntime.__version__, "opset": ONNX_OPSET,
        "model": denoiser.arch.to_dict(), "trained": bool(args.checkpoint), "images": len(times["pytorch"]),
        "image_shape": list(noisy[-1].shape), "export_s": export_s,
        "seconds_per_image": per_image,
        "onnxruntime_speedup": per_image["pytorch"] / per_image["onnxruntime"],
        "pixels_off": off, "pixels": total,
    }, args.out)


if __name__ == "__main__":
    main()

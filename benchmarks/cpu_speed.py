"""r3l on a CPU, side by side in one run: seconds per image for each inference engine, and training episodes
per minute for each arithmetic and memory layout.

    python benchmarks/cpu_speed.py --data $R3L_DATA/BSD68 --dncnn $R3L_WEIGHTS/dncnn_25.pth \\
        --ircnn $R3L_WEIGHTS/ircnn/zhang_cvpr17_denoise_25_gray.caffemodel \\
        --train-config configs/r3n_gray_sigma25_ircnn.yaml --train-config configs/r3l_gray_sigma25_ircnn.yaml \\
        --out benchmarks/results/cpu_speed_2cores.json

Inference: the same σ-25 noisy images (seed 0) through R3L (the paper's size; with --ircnn its encoder and head
start from IRCNN's weights, so its greedy actions are those of a working denoiser, as a trained model's are; else
untrained), the shipped R3N, KAIR's DnCNN and BM3D. Each R3L/R3N engine — PyTorch fp32 contiguous (the
reference), fp32 channels-last, bf16 autocast contiguous and channels-last, onnxruntime — denoises each image in
turn after one warm-up image, the engines alternating per image so that all see the same machine state (each
``--repeats`` times, the fastest kept: on a shared machine one run can be slowed by others). Reported per engine:
seconds per image, mean PSNR, and the share of 8-bit output pixels that differ from the reference.
R3L's ratio to DnCNN's PyTorch time (KAIR runs it in fp32, contiguous) and to its arithmetic floor (its
multiply-adds, counted by ``torch.utils.flop_counter``, at the rate of one 4096² matrix product on this machine,
fp32 and bf16) close the section.

Training: each --train-config (its data and weights from $R3L_DATA / $R3L_WEIGHTS) at fp32 and bf16 ×
contiguous and channels-last, ``--episodes`` timed episodes after one warm-up, at ``--threads`` threads; what
``train.precision: auto`` and ``train.channels_last: auto`` resolve to here. With --validate-data, one training
validation of the first config's network on that folder, on the ``auto`` engine and on PyTorch. Prints one JSON
object (and writes it to --out).
"""

from __future__ import annotations

import argparse
import datetime
import platform
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from common import emit
from r3l.degradation import noisy_version
from r3l.errors import R3LError
from r3l.inference.denoiser import Denoiser
from r3l.io.data import load_images
from r3l.metrics import psnr, to_uint8
from r3l.models.spec import PAPER_SPECS, build_network
from r3l.runtime import cpu_has_native_bf16, cpu_prefers_channels_last

TORCH_SETTINGS = {  # name: (precision, channels_last)
    "torch_fp32": ("fp32", False), "torch_fp32_channels_last": ("fp32", True),
    "torch_bf16": ("bf16", False), "torch_bf16_channels_last": ("bf16", True),
}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def cpu_flags() -> list[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "avx512_vnni")
                return [f for f in line.split(":", 1)[1].split() if f in wanted]
    except OSError:
        pass
    return []


def matmul_peak(dtype: torch.dtype, n: int = 4096, repeats: int = 4) -> float:
    """FLOP/s of the best of ``repeats`` n × n matrix products."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def r3l_network(ircnn: str | None) -> tuple[torch.nn.Module, object]:
    spec = PAPER_SPECS["r3l"]
    torch.manual_seed(0)
    net = build_network(spec)
    if ircnn:
        from r3l.models.ircnn import IrcnnStart

        spec.entry.from_ircnn(net, ircnn, IrcnnStart(25.0, "residual", 16.0, spec.action_step))
    return net, spec


def denoisers(args: argparse.Namespace) -> dict[str, dict[str, Denoiser]]:
    """Per model, its denoiser on each engine."""
    models: dict[str, dict[str, Denoiser]] = {}
    net, spec = r3l_network(args.ircnn)
    shipped = None
    try:
        from r3l.models.zoo import find_model

        shipped = find_model("r3n-gray-s25").path
    except R3LError:  # no shipped R3N installed: its rows are left out
        pass
    for model in ["r3l", "r3n"] if shipped else ["r3l"]:
        engines = {}
        for name, (precision, layout) in TORCH_SETTINGS.items():
            options = {"precision": precision, "channels_last": layout, "engine": "torch"}
            engines[name] = (Denoiser(net, spec, "cpu", **options) if model == "r3l"
                             else Denoiser.from_checkpoint(shipped, "cpu", **options))
        engines["onnxruntime"] = (Denoiser(net, spec, "cpu", engine="onnxruntime") if model == "r3l"
                                  else Denoiser.from_checkpoint(shipped, "cpu", engine="onnxruntime"))
        models[model] = engines
    if args.dncnn:
        models["dncnn"] = {
            "torch_fp32": Denoiser.from_dncnn_weights(args.dncnn, "cpu", engine="torch", channels_last=False),
            "torch_bf16_channels_last": Denoiser.from_dncnn_weights(args.dncnn, "cpu", engine="torch",
                                                                    precision="bf16", channels_last=True),
            "onnxruntime": Denoiser.from_dncnn_weights(args.dncnn, "cpu", engine="onnxruntime"),
        }
    return models


def inference(args: argparse.Namespace) -> dict:
    images = load_images(args.data, 1, "--data", args.images + 1)
    pairs = [(im.float, noisy_version(im.float, im.name, 25, 0)) for im in images]
    if args.size:  # the top-left crop of each image (a quick check of the script)
        h, w = args.size
        pairs = [(np.ascontiguousarray(c[:h, :w]), np.ascontiguousarray(n[:h, :w])) for c, n in pairs]
    models = denoisers(args)
    prepared = {}
    for model, engines in models.items():
        for name, den in engines.items():
            start = time.perf_counter()
            den.prepare()
            prepared[f"{model}/{name}"] = time.perf_counter() - start
    times = {m: {e: [] for e in engines} for m, engines in models.items()}
    quality = {m: {e: [] for e in engines} for m, engines in models.items()}
    off = {m: {e: 0 for e in engines} for m, engines in models.items()}
    pixels = 0
    for k, (clean, noisy) in enumerate(pairs):
        x = torch.from_numpy(np.ascontiguousarray(noisy)).permute(2, 0, 1)[None]
        for model, engines in models.items():
            reference = None
            for name, den in engines.items():
                seconds = float("inf")
                for _ in range(args.repeats):  # the best of a few: this machine's speed varies from second to second
                    start = time.perf_counter()
                    out = den(x)
                    seconds = min(seconds, time.perf_counter() - start)
                out8 = to_uint8(out[0].permute(1, 2, 0).numpy())
                reference = out8 if reference is None else reference
                if k:  # the first image warms every engine up
                    times[model][name].append(seconds)
                    quality[model][name].append(psnr(out8, to_uint8(clean)))
                    off[model][name] += int((out8 != reference).sum())
        if k:
            pixels += x.numel()
    result: dict = {"images": args.images, "image_shape": list(pairs[-1][1].shape), "sigma": 25,
                    "prepare_s": prepared, "models": {}}
    for model, engines in models.items():
        result["models"][model] = {name: {"seconds_per_image": float(np.mean(times[model][name])),
                                          "psnr": float(np.mean(quality[model][name])),
                                          "pixels_differing_from_torch_fp32": off[model][name] / pixels}
                                   for name in engines}
    if args.bm3d_images:
        result["models"]["bm3d"] = bm3d_speed(pairs[1 : 1 + args.bm3d_images])
    result["floor"] = floor(models["r3l"]["torch_fp32"], pairs[-1][1])
    r3l = result["models"]["r3l"]
    if "dncnn" in result["models"]:
        kair = result["models"]["dncnn"]["torch_fp32"]["seconds_per_image"]
        result["r3l_over_dncnn_pytorch"] = {n: v["seconds_per_image"] / kair for n, v in r3l.items()}
    result["r3l_over_floor"] = {
        precision: {n: v["seconds_per_image"] / result["floor"][f"{precision}_s"] for n, v in r3l.items()}
        for precision in ("fp32", "bf16")}
    return result


def bm3d_speed(pairs) -> dict:
    try:
        import bm3d
    except ImportError:
        return {"skipped": "bm3d is not installed (pip install 'r3l[bm3d]')"}
    times, quality = [], []
    for clean, noisy in pairs:
        start = time.perf_counter()
        out = bm3d.bm3d(noisy[:, :, 0], sigma_psd=25 / 255)
        times.append(time.perf_counter() - start)
        quality.append(psnr(to_uint8(np.clip(out, 0, 1)[:, :, None]), to_uint8(clean)))
    return {"bm3d_package": {"seconds_per_image": float(np.mean(times)), "psnr": float(np.mean(quality)),
                     "images": len(pairs)}}


def floor(den: Denoiser, noisy: np.ndarray) -> dict:
    """R3L's multiply-adds for one image and the time they take at this machine's matrix-product rate."""
    x = torch.from_numpy(np.ascontiguousarray(noisy)).permute(2, 0, 1)[None]
    with FlopCounterMode(display=False) as counter:
        den(x)
    flops = counter.get_total_flops()
    peak32, peak16 = matmul_peak(torch.float32), matmul_peak(torch.bfloat16)
    return {"multiply_adds": flops / 2, "fp32_matmul_gflops": peak32 / 1e9, "bf16_matmul_gflops": peak16 / 1e9,
            "fp32_s": flops / peak32, "bf16_s": flops / peak16}


def training(args: argparse.Namespace) -> dict:
    from r3l.config import load_config
    from r3l.io.data import EpisodeBatches
    from r3l.runtime import configure_torch
    from r3l.training.trainer import Trainer

    out = {}
    for path in args.train_config:
        rows = {}
        for precision in ("fp32", "bf16"):
            for layout in ("off", "on"):
                cfg = load_config(path, [f"train.precision={precision}", f"train.channels_last={layout}",
                                         f"train.threads={args.threads}", "train.progress=false",
                                         "train.tensorboard=false", "data.val=", "train.device=cpu"])
                configure_torch(cfg.train)
                trainer = Trainer(cfg, Path(args.run_root) / f"{cfg.name}_{precision}_{layout}", force=True)
                batches = EpisodeBatches(trainer.train_images, cfg.data, cfg.seed, args.episodes + 1)
                generator = torch.Generator()
                trainer.run_episode(0, batches[0], generator)
                start = time.perf_counter()
                for e in range(1, args.episodes + 1):
                    trainer.run_episode(e, batches[e], generator)
                seconds = (time.perf_counter() - start) / args.episodes
                rows[f"{precision}_{'channels_last' if layout == 'on' else 'contiguous'}"] = {
                    "seconds_per_episode": seconds, "episodes_per_minute": 60 / seconds}
        reference = rows["fp32_contiguous"]["episodes_per_minute"]
        for row in rows.values():
            row["speedup_over_fp32_contiguous"] = row["episodes_per_minute"] / reference
        cfg = load_config(path, ["data.val="])
        out[cfg.name] = {"config": path, "batch": cfg.data.batch_size, "crop": cfg.data.crop,
                         "episodes": args.episodes, "settings": rows}
    return out


def validation(args: argparse.Namespace) -> dict:
    """Seconds of one validation of the first training config's network on --validate-data (all its images,
    the config's σ), on the engine ``auto`` picks and on PyTorch."""
    import os

    from r3l.config import load_config
    from r3l.runtime import configure_torch
    from r3l.training.trainer import Trainer

    cfg = load_config(args.train_config[0], [f"data.val={args.validate_data}", "data.val_max_images=0",
                                            f"train.threads={args.threads}", "train.progress=false",
                                            "train.tensorboard=false", "train.device=cpu"])
    configure_torch(cfg.train)
    trainer = Trainer(cfg, Path(args.run_root) / f"{cfg.name}_validation", force=True)
    out = {"config": args.train_config[0], "images": len(trainer.val_images)}
    for engine in ("auto", "torch"):
        os.environ["R3L_ENGINE"] = engine
        start = time.perf_counter()
        value = trainer.validate()
        out[engine] = {"seconds": time.perf_counter() - start, "psnr": value}
    os.environ.pop("R3L_ENGINE")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="folder of test images (e.g. BSD68)")
    parser.add_argument("--images", type=int, default=4, help="timed images per engine (after one warm-up)")
    parser.add_argument("--repeats", type=int, default=2, help="runs per image and engine; the fastest counts")
    parser.add_argument("--dncnn", help="KAIR's dncnn_25.pth (the DnCNN rows)")
    parser.add_argument("--ircnn", help="IRCNN's σ-25 gray caffemodel: R3L starts from its weights")
    parser.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), help="time crops of this size")
    parser.add_argument("--bm3d-images", type=int, default=1, help="images BM3D denoises (0: no BM3D row)")
    parser.add_argument("--train-config", action="append", default=[], help="a training config to time")
    parser.add_argument("--episodes", type=int, default=4, help="timed training episodes per setting")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: PyTorch's default)")
    parser.add_argument("--run-root", default="/tmp/r3l-cpu-speed", help="where the timed trainings write")
    parser.add_argument("--validate-data", help="also time a training validation on this folder (e.g. BSD68)")
    parser.add_argument("--skip-inference", action="store_true")
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    import onnxruntime

    from r3l.algos.optim import resolve_precision

    result = {
        "benchmark": "cpu_speed", "date": datetime.date.today().isoformat(), "cpu": cpu_model(),
        "cpu_flags": cpu_flags(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "native_bf16": cpu_has_native_bf16(), "threads": torch.get_num_threads(), "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "auto": {"train.precision": resolve_precision(torch.device("cpu"), "auto"),
                 "channels_last": cpu_prefers_channels_last()},
    }
    if not args.skip_inference:
        result["inference"] = inference(args)
    if args.train_config:
        result["training"] = training(args)
    if args.validate_data and args.train_config:
        result["validation"] = validation(args)
    emit(result, args.out)


if __name__ == "__main__":
    main()

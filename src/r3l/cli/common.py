"""What the subcommands share: argument types, the model arguments and loading the denoiser they name, and
small file helpers. Nothing here imports PyTorch at module level (``r3l --help`` stays fast)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from r3l.errors import R3LError


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a non-negative finite number, got {text!r}")
    return value


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative whole number, got {text!r}")
    return value


def add_model_args(p: argparse.ArgumentParser) -> None:
    """--checkpoint, --model, --weights and the inference options of eval and denoise."""
    p.add_argument("--checkpoint", help="an r3l checkpoint (.safetensors)")
    p.add_argument("--model", metavar="NAME",
                   help="a model of the registry (r3l models lists them; without --checkpoint and --model, "
                        "the default for the image, gray or colour, which r3l models marks), or dncnn / ircnn / "
                        "pixelrl with --weights for KAIR's DnCNN, IRCNN's denoiser or pixelRL's published model")
    p.add_argument("--weights", help="the weights file for --model dncnn (KAIR's dncnn_25.pth), --model ircnn "
                                     "(a .caffemodel, or KAIR's ircnn_gray.pth) or --model pixelrl (pixelRL's "
                                     "pretrained_<sigma>.npz)")
    p.add_argument("--weights-sigma", type=float, default=25.0,
                   help="--model ircnn with KAIR's ircnn_gray.pth: the noise level of the model to take "
                        "(default 25)")
    p.add_argument("--decode", choices=["greedy", "expected"], default="greedy",
                   help="R3L: each step adds the most likely action's residual (greedy, default, the paper's) "
                        "or the policy's mean residual (expected; pixelRL: the mean of its actions' outcomes)")
    p.add_argument("--self-ensemble", action="store_true",
                   help="average the estimates of the 8 flips/rotations of the input (8x the work)")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    p.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32",
                   help="network arithmetic: fp32 (default, exact), or bf16/fp16 autocast (faster on GPUs; "
                        "a few greedy actions may differ)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the network: faster on GPUs for many images, after tens of seconds "
                        "of compilation")
    p.add_argument("--engine", choices=["auto", "torch", "onnxruntime"], default="auto",
                   help="what runs the network: onnxruntime (the whole inference as one graph, on a CPU, "
                        "fp32; pip install 'r3l[fast]'), torch, or auto (default: onnxruntime where it "
                        "applies and is installed, else torch; the environment variable R3L_ENGINE changes "
                        "what auto means). See docs/performance.md")
    p.add_argument("--verbose", action="store_true",
                   help="say what each model runs on (engine, precision, memory layout, threads)")


def load_denoiser(args: argparse.Namespace, channels: int = 1):
    """--checkpoint, a third-party network (--model dncnn/ircnn/pixelrl --weights), or a registry model (--model
    NAME; without one, the default model for images of ``channels`` channels); ``open_denoiser`` checks them."""
    from r3l.inference.denoiser import open_denoiser

    options = {"precision": args.precision, "compile": args.compile, "self_ensemble": args.self_ensemble,
               "engine": getattr(args, "engine", "torch"), "decoding": args.decode}  # `r3l export`: no --engine
    denoiser = open_denoiser(args.checkpoint, args.model, args.weights, channels,
                             getattr(args, "weights_sigma", 25.0), args.device, **options)  # export: no --weights-sigma
    denoiser.prepare()
    if getattr(args, "verbose", False):
        name = denoiser.name or (f"{args.model}" if args.model else str(args.checkpoint))
        print(f"{name} ({denoiser.arch.name}) on {denoiser.describe()}", file=sys.stderr)
    return denoiser


def data_root() -> str:
    root = os.environ.get("R3L_DATA")
    if not root:
        raise R3LError("R3L_DATA is not set: pass --data-root (the folder holding BSD68)")
    return root


def read_json(path: str, flag: str) -> dict:
    import json

    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        raise R3LError(f"{flag} {path}: not a readable JSON file") from None
    if not isinstance(data, dict):
        raise R3LError(f"{flag} {path}: expected a JSON object")
    return data

"""``r3l export``: a denoiser's whole inference as one ONNX graph or torch.export program."""

from __future__ import annotations

import argparse

from r3l.cli.common import load_denoiser
from r3l.errors import R3LError


def add_parser(sub) -> None:
    p = sub.add_parser("export", help="export a denoiser's whole inference to ONNX or torch.export",
                       description="Write one graph holding every step of the inference (greedy R3L: each step's "
                                   "argmax action added; R3N, DnCNN: one pass), with dynamic batch, height and "
                                   "width. Input 'x': N x C x H x W float in [0, 1]; output: the denoised batch. "
                                   "ONNX needs pip install 'r3l[export]'. See docs/deployment.md.")
    p.add_argument("--checkpoint", help="an r3l checkpoint (.safetensors)")
    p.add_argument("--model", metavar="NAME", help="a model of the registry (r3l models), or dncnn with --weights")
    p.add_argument("--weights", help="KAIR's DnCNN weights file for --model dncnn")
    p.add_argument("--onnx", metavar="OUT", help="write an ONNX file")
    p.add_argument("--pt2", metavar="OUT", help="write a torch.export program (load with torch.export.load)")
    p.add_argument("--steps", type=int, help="R3L: recurrent steps in the graph (default: the model's)")
    p.add_argument("--decode", choices=["greedy", "expected"], default="greedy", help="R3L step rule (see denoise)")
    p.add_argument("--self-ensemble", action="store_true", help="put the x8 flip/rotation ensemble in the graph")
    p.add_argument("--dynamic-size", action=argparse.BooleanOptionalAction, default=True,
                   help="dynamic batch, height and width (default); --no-dynamic-size fixes them to --size")
    p.add_argument("--size", type=int, nargs=2, default=[64, 64], metavar=("H", "W"),
                   help="the example input's height and width (the fixed size with --no-dynamic-size)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from r3l.inference.export import ONNX_OPSET, export_onnx, export_pt2

    if bool(args.onnx) == bool(args.pt2):
        raise R3LError("give one of --onnx OUT.onnx or --pt2 OUT.pt2")
    if args.steps is not None and args.steps < 1:
        raise R3LError(f"--steps {args.steps}: expected a positive whole number")
    args.device, args.precision, args.compile = "cpu", "fp32", False
    denoiser = load_denoiser(args)
    size = tuple(args.size)
    if args.onnx:
        path = export_onnx(denoiser.whole_program(args.steps), args.onnx, args.dynamic_size, size)
        kind = f"ONNX opset {ONNX_OPSET}"
    else:
        path = export_pt2(denoiser.whole_program(args.steps), args.pt2, args.dynamic_size, size)
        kind = "torch.export program"
    shape = "N x C x H x W (dynamic N, H, W)" if args.dynamic_size else f"N x C x {size[0]} x {size[1]}"
    print(f"wrote {path}: {kind}, {denoiser.arch.describe()}, input 'x' {shape} float in [0, 1]")
    return 0

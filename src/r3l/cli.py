"""The ``r3l`` command line: train, eval, denoise, demo."""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from pathlib import Path

from r3l.errors import R3LError, warn


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a non-negative finite number, got {text!r}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative whole number, got {text!r}")
    return value


def cmd_train(args: argparse.Namespace) -> int:
    from r3l.config import load_config
    from r3l.runtime import configure_torch
    from r3l.trainer import Trainer

    from r3l import distributed

    from r3l.io.checkpoint import previous_path

    cfg = load_config(args.config, args.set or [])
    run_dir = Path(args.run_dir or Path("runs") / cfg.name)
    last_path = run_dir / "last.safetensors"
    has_checkpoint = last_path.exists() or previous_path(last_path).exists()
    # Under torchrun --max-restarts, a restarted worker continues the run from its last checkpoint.
    resume = args.resume or (distributed.restarted() and has_checkpoint)
    if not resume and has_checkpoint:
        raise R3LError(f"{run_dir}: run directory already holds a checkpoint; pass --resume or another --run-dir")
    if args.force and not args.resume:
        raise R3LError("--force only applies to --resume")
    world = distributed.from_environment(cfg.train.device)
    trainer = None
    try:
        configure_torch(cfg)
        trainer = Trainer(cfg, run_dir, resume=resume, force=args.force, world=world)
        if world.main:
            print(f"training {cfg.name} on {trainer.describe()}", flush=True)
        if resume and world.main:
            print(f"resuming {run_dir} at episode {trainer.start_episode} of {cfg.train.episodes}", flush=True)
        last = trainer.train()
    finally:
        # DistributedDataParallel holds the process group and its threads: release it while the group exists,
        # not at interpreter exit (where a worker could abort with "terminate called without an active
        # exception" and torchrun count the run as failed).
        trainer = None
        distributed.shutdown()
    if world.main:
        summary = ", ".join(f"{k.split('/')[-1]} {v:.3f}" for k, v in last.items()
                            if k in ("charts/psnr_gain", "val/psnr"))
        where = f" on {world.size} processes" if world.active else ""
        print(f"trained {cfg.train.episodes} episodes in {run_dir}{where} ({summary})")
    return 0


#: Of the third-party networks (:data:`r3l.denoiser.WEIGHT_FORMATS`), the ones that are policies (``--decode``
#: applies).
POLICY_WEIGHT_MODELS = ("pixelrl",)


def _check_model_args(args: argparse.Namespace) -> None:
    """Refuse contradictory model arguments before anything is loaded."""
    from r3l.denoiser import WEIGHT_FORMATS

    if args.checkpoint and (args.model or args.weights):
        raise R3LError("give either --checkpoint CKPT or --model NAME, not both")
    if args.weights and args.model not in WEIGHT_FORMATS:
        raise R3LError("--weights FILE needs --model dncnn, --model ircnn or --model pixelrl")
    if args.model in WEIGHT_FORMATS and not args.weights:
        raise R3LError(f"--model {args.model} needs --weights PATH ({WEIGHT_FORMATS[args.model]})")
    if args.decode != "greedy" and args.model in WEIGHT_FORMATS and args.model not in POLICY_WEIGHT_MODELS:
        raise R3LError(f"--decode {args.decode} applies to R3L policies, not to --model {args.model}")


def _load_denoiser(args: argparse.Namespace, channels: int = 1):
    """--checkpoint, a third-party network (--model dncnn/ircnn/pixelrl --weights), or a registry model (--model
    NAME; without one, the default model for images of ``channels`` channels)."""
    from r3l.denoiser import open_denoiser

    _check_model_args(args)
    options = {"precision": args.precision, "compile": args.compile, "self_ensemble": args.self_ensemble,
               "engine": getattr(args, "engine", "torch"), "decoding": args.decode}  # `r3l export`: no --engine
    denoiser = open_denoiser(args.checkpoint, args.model, args.weights, channels,
                             getattr(args, "weights_sigma", 25.0), args.device, **options)  # export: no --weights-sigma
    denoiser.prepare()
    if getattr(args, "verbose", False):
        print(f"{denoiser.arch.name} model on {denoiser.describe()}", file=sys.stderr)
    return denoiser


class _Denoisers:
    """The denoiser for each image of ``r3l denoise``: the one named, or the default model that fits the image
    (gray or colour), each loaded once."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.fixed = bool(args.checkpoint or args.model)
        self.first = _load_denoiser(args)  # a clear error before any work if no model can be loaded
        self.first_name = args.model or str(args.checkpoint)
        if not self.fixed:
            from r3l.models.zoo import default_model

            self.first_name = default_model(1).name
        self.loaded = {self.first_name: self.first}
        self.names: dict[int, str] = {1: self.first_name}
        """The default model's name per channel count (the registry is read once for each)."""

    def __call__(self, image) -> tuple[object, str]:
        """The denoiser for ``image`` and its model's name."""
        if self.fixed:
            return self.first, self.first_name
        from r3l.models.zoo import default_model

        channels = 3 if image.ndim == 3 and image.shape[2] >= 3 else 1
        if channels not in self.names:
            self.names[channels] = default_model(channels).name
        name = self.names[channels]
        if name not in self.loaded:
            self.loaded[name] = _load_denoiser(self.args, channels)
        return self.loaded[name], name


#: The level ``r3l eval`` uses when no --sigma is given, per noise model.
DEFAULT_LEVELS = {"gaussian": 25.0, "poisson": 30.0, "salt_pepper": 0.1, "spatial_gaussian": 50.0, "mixed": 25.0}


def cmd_eval(args: argparse.Namespace) -> int:
    from r3l.io.data import load_images
    from r3l.tasks import DenoiseEnv
    from r3l.degradation import noise_model
    from r3l.evaluation.protocol import evaluate, summarize, write_csv
    from r3l.io.files import write_json

    denoiser = _load_denoiser(args)
    images = load_images(args.data, denoiser.channels, "--data", args.max_images)
    model = noise_model(args.noise, "--noise")
    sigmas = args.sigma or [DEFAULT_LEVELS[args.noise]]
    for sigma in sigmas:
        model.check_level(sigma, "--sigma")
    label = model.level_name if args.noise == "gaussian" else f"{args.noise} {model.level_name}"
    noise, degrade = args.noise, None
    if denoiser.env is not None and not isinstance(denoiser.env, DenoiseEnv):
        # another task (docs/custom-tasks.md): its own start state, seeded per image, replaces the noise
        noise, degrade, label = denoiser.arch.task, denoiser.env.test_input, denoiser.arch.task
    for sigma in sigmas if degrade is None and args.noise == "gaussian" else []:
        note = denoiser.sigma_warning(sigma)
        if note:
            warn(f"--sigma {sigma:g}: {note}")
    rows = evaluate(denoiser, images, sigmas, args.seed, args.save_images, progress=not args.quiet, noise=noise,
                    degrade=degrade)
    summary = summarize(rows)
    for sigma, s in summary.items():
        print(f"{label if degrade else f'{label} {sigma:>5}'}: PSNR {s['psnr']:.2f} dB  SSIM {s['ssim']:.4f}  "
              f"({'input' if degrade else 'noisy'} {s['psnr_noisy']:.2f} dB)  {s['images']} images  {args.data}")
    if args.csv:
        write_csv(rows, args.csv)
    if args.json:
        write_json({"data": str(args.data), "noise": noise, "seed": args.seed, "model": denoiser.arch.to_dict(),
                    "summary": summary, "images": rows}, args.json)
    return 0


def _outputs(args: argparse.Namespace) -> list[tuple[Path, Path]]:
    """(input, output) pairs, checked before any work: every output name distinct and of a known format.

    With --out-dir every output keeps its input's file name; two inputs of the same name (``dA/x.png``,
    ``dB/x.png``) are refused before any work rather than one overwriting the other.
    """
    from r3l.io.images import list_images, output_bits

    inputs = [Path(p) for p in args.inputs]
    if args.output:
        if len(inputs) != 1 or inputs[0].is_dir():
            raise R3LError("-o/--output takes one input file; use --out-dir for several or for a folder")
        pairs = [(inputs[0], Path(args.output))]
    elif not args.out_dir:
        raise R3LError("give -o OUTPUT (one input) or --out-dir DIR")
    else:
        out_dir, pairs = Path(args.out_dir), []
        for path in inputs:
            if path.is_dir():
                pairs += [(f, out_dir / f.name) for f in list_images(path)]
            else:
                pairs.append((path, out_dir / path.name))
    seen: dict[Path, Path] = {}
    unique = []
    for src, dst in pairs:
        key = dst.resolve()
        if key in seen:
            if seen[key].resolve() == src.resolve():
                continue  # the same file given twice
            raise R3LError(f"{seen[key]} and {src} would both be written to {dst}; denoise them into separate "
                           "--out-dir folders")
        if src.resolve() == key:
            raise R3LError(f"{dst}: output would overwrite its input")
        output_bits(dst, 8)
        seen[key] = src
        unique.append((src, dst))
    return unique


def _explain_dirs(args: argparse.Namespace, pairs: list[tuple[Path, Path]]) -> list[Path | None]:
    """Where --explain writes each image's maps: DIR/<input stem>; two inputs of one stem are refused."""
    if not args.explain:
        return [None] * len(pairs)
    dirs, seen = [], {}
    for src, _ in pairs:
        folder = Path(args.explain) / src.stem
        if folder in seen:
            raise R3LError(f"--explain: {seen[folder]} and {src} would both write {folder}; explain them in "
                           "separate runs")
        seen[folder] = src
        dirs.append(folder)
    return dirs


def _warn_noise_level(denoiser, image, src) -> None:
    """One warning line if the image's estimated Gaussian noise lies outside the model's training range."""
    note = denoiser.image_noise_warning(image)
    if note:
        warn(f"{src}: {note}")


def cmd_denoise(args: argparse.Namespace) -> int:
    from r3l.io.images import output_bits, read_image_with_alpha, write_image

    _check_model_args(args)
    pairs = _outputs(args)
    explain_dirs = _explain_dirs(args, pairs)
    denoisers = _Denoisers(args)
    if args.explain and denoisers.first.env is None:
        raise R3LError(f"--explain needs an R3L checkpoint; this model is {denoisers.first.arch.name} "
                       "(nothing written)")
    failed, used = 0, {}
    for (src, dst), explain_dir in zip(pairs, explain_dirs):
        try:
            image, alpha, info = read_image_with_alpha(src)
            output_bits(dst, info.bits)
            denoiser, name = denoisers(image)
            _warn_noise_level(denoiser, image, src)
            out = denoiser.denoise(image)
            if not denoisers.fixed:  # the default model that fits each image: say which
                used[name] = used.get(name, 0) + 1
            write_image(dst, out, bits=info.bits, alpha=alpha)
            if explain_dir is not None:
                from r3l.evaluation.explain import explain

                explain(denoiser, image, explain_dir)
        except R3LError as exc:
            if len(pairs) == 1:
                raise
            failed += 1
            print(f"r3l: warning: skipped {exc}", file=sys.stderr)
    done = len(pairs) - failed
    models = ", ".join(f"{name} ({count})" for name, count in used.items())
    print(f"denoised {done} of {len(pairs)} image(s)" + (f" with {models}" if used else "")
          + (f"; {failed} failed" if failed else ""))
    return 1 if failed else 0


def cmd_serve(args: argparse.Namespace) -> int:
    from r3l.runtime import pick_device
    from r3l.web.server import model_loaders, serve

    device = str(pick_device(args.device))
    loaders = model_loaders(args.checkpoint or [], args.model or [], device)
    if args.max_upload_mb <= 0:
        raise R3LError(f"--max-upload-mb {args.max_upload_mb:g}: expected a positive number")

    def ready(url: str) -> None:
        print(f"serving r3l on {url} (models: {', '.join(loaders)}); Ctrl-C stops it", flush=True)
        if args.host not in ("127.0.0.1", "localhost", "::1"):
            print(f"r3l: warning: listening on {args.host}: the page is reachable from other machines",
                  file=sys.stderr, flush=True)

    serve(loaders, args.host, args.port, device, args.max_upload_mb, ready)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from r3l.export import ONNX_OPSET, export_onnx, export_pt2

    if bool(args.onnx) == bool(args.pt2):
        raise R3LError("give one of --onnx OUT.onnx or --pt2 OUT.pt2")
    if args.steps is not None and args.steps < 1:
        raise R3LError(f"--steps {args.steps}: expected a positive whole number")
    _check_model_args(args)
    args.device, args.precision, args.compile = "cpu", "fp32", False
    denoiser = _load_denoiser(args)
    size = tuple(args.size)
    if args.onnx:
        path = export_onnx(denoiser, args.onnx, args.steps, args.dynamic_size, size)
        kind = f"ONNX opset {ONNX_OPSET}"
    else:
        path = export_pt2(denoiser, args.pt2, args.steps, args.dynamic_size, size)
        kind = "torch.export program"
    shape = "N x C x H x W (dynamic N, H, W)" if args.dynamic_size else f"N x C x {size[0]} x {size[1]}"
    print(f"wrote {path}: {kind}, {denoiser.arch.describe()}, input 'x' {shape} float in [0, 1]")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from r3l.evaluation.cards import pack_model, subset_psnr
    from r3l.models.zoo import default_model, list_models, zoo_table

    if args.action == "pack":
        if args.names:
            raise R3LError("r3l models pack takes --name NAME, not a model name after pack")
        missing = [flag for flag, value in (("--checkpoint", args.checkpoint), ("--name", args.name),
                                            ("--out", args.out)) if not value]
        if missing:
            raise R3LError(f"r3l models pack needs {', '.join(missing)}")
        if args.check_sigma is not None and not 0 <= args.check_sigma < 1000:
            raise R3LError(f"--check-sigma {args.check_sigma:g}: expected a noise level in [0, 1000)")
        training = _read_json(args.training, "--training") if args.training else {}
        psnr = {}
        if args.benchmark:
            row = args.row or args.name
            methods = _read_json(args.benchmark, "--benchmark").get("methods", {})
            if row not in methods:
                raise R3LError(f"{args.benchmark}: no method named {row!r} in this benchmark summary "
                               f"(it has {', '.join(methods) or 'none'}; --row picks one)")
            psnr = {k: round(v["psnr"], 4) for k, v in methods[row].get("sigmas", {}).items()}
        results: dict[str, dict[str, float]] = {}
        for path in args.eval or []:
            report = _read_json(path, "--eval")
            summary, data = report.get("summary"), report.get("data")
            if not isinstance(summary, dict) or not isinstance(data, str):
                raise R3LError(f"--eval {path}: not the JSON of r3l eval --json (no data and summary)")
            results.setdefault(Path(data).name, {}).update({k: round(v["psnr"], 4) for k, v in summary.items()})
        card = pack_model(args.checkpoint, args.name, args.description, args.data_root or _data_root(),
                          args.out, [i for i in args.images.split(",") if i], sigma=args.check_sigma,
                          training=training, bsd68_psnr=psnr, data=args.check_data, results=results,
                          opponent_colour=args.opponent_colour)
        print(f"packed {card.name} into {args.out}: subset PSNR {card.check.psnr:.2f} dB "
              f"({len(card.check.images)} {card.check.data} images, sigma {card.check.sigma:g})")
        return 0
    models = list_models()
    if args.names:
        known = {card.name for card in models}
        unknown = [name for name in args.names if name not in known]
        if unknown:
            raise R3LError(f"model {unknown[0]!r} not found; available: {', '.join(sorted(known)) or 'none'}")
        models = [card for card in models if card.name in set(args.names)]
    if args.action == "table":
        print(zoo_table(models))
        return 0
    if args.json:
        from r3l.io.files import to_json

        print(to_json([{**c.to_dict(), "path": str(c.path)} for c in models], indent=2))
        return 0
    if not models:
        print("no trained models are installed; R3L_MODELS adds folders of models")
        return 0
    failed = 0
    defaults = {default_model(1).name: "gray", default_model(3).name: "colour"}
    if len(defaults) == 1:
        defaults = {name: "" for name in defaults}
    for card in models:
        at = card.bsd68_psnr.get("25")
        line = f"{card.name:<18} {card.arch['name']:<6} {card.arch['channels']}ch  sigma {card.sigma}  "
        line += f"BSD68@25 {at:.2f} dB  " if at is not None else ""
        kind = defaults.get(card.name)
        line += (f"(default{' ' + kind if kind else ''})  " if kind is not None else "") + card.description
        if args.action == "check":
            measured = subset_psnr(card, args.data_root or _data_root())
            ok = abs(measured - card.check.psnr) <= 0.01
            failed += not ok
            line += f"  check {measured:.4f} vs {card.check.psnr:.4f} dB: {'ok' if ok else 'MISMATCH'}"
        print(line)
    return 1 if failed else 0


def _data_root() -> str:
    root = os.environ.get("R3L_DATA")
    if not root:
        raise R3LError("R3L_DATA is not set: pass --data-root (the folder holding BSD68)")
    return root


def _read_json(path: str, flag: str) -> dict:
    import json

    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        raise R3LError(f"{flag} {path}: not a readable JSON file") from None
    if not isinstance(data, dict):
        raise R3LError(f"{flag} {path}: expected a JSON object")
    return data


def cmd_demo(args: argparse.Namespace) -> int:
    from r3l.demo import run_demo

    run_demo(Path(args.out_dir), args.episodes, args.device, args.sigma, progress=not args.quiet)
    return 0


def cmd_benchmark(args: argparse.Namespace) -> int:
    from r3l.evaluation.benchmark import load_benchmark_config, run_benchmark

    cfg = load_benchmark_config(args.config, {"max_images": args.max_images, "device": args.device})
    out = Path(args.out or Path("benchmark_results") / cfg.name)
    summary = run_benchmark(cfg, out, progress=not args.quiet)
    for name, m in summary["methods"].items():
        print(f"{name:>12}: average {m['average']:.2f} dB over sigma {', '.join(f'{s:g}' for s in cfg.sigmas)}"
              f"  ({m['seconds_per_image']:.3f} s/image)")
    print(f"wrote {out}/table.md, results.csv, summary.json, examples.png"
          + (", psnr_vs_sigma.png" if summary["plot"] else " (no plot: pip install matplotlib)")
          + f" in {summary['wall_seconds']:.1f} s")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from r3l.version import __version__

    parser = argparse.ArgumentParser(
        prog="r3l", description="Pixel-wise deep RL for images: R3L denoising by residual recovery (PPO).")
    parser.add_argument("--version", action="version", version=f"r3l {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("train", help="train a model from a YAML config",
                       description="Train an R3L denoiser. Writes last/best checkpoints, config.yaml, "
                                   "metrics.jsonl and TensorBoard logs into the run directory.")
    p.add_argument("--config", required=True, help="YAML config file (see configs/)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a config key, e.g. --set ppo.lr=1e-4 --set data.batch_size=16 (repeatable)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --run-dir from its last checkpoint (same episode, same LR)")
    p.add_argument("--force", action="store_true",
                   help="with --resume: accept a config that differs from the run's (each change is reported); "
                        "without it such a resume is refused")
    p.add_argument("--run-dir", help="run directory (default: runs/<name>)")
    p.set_defaults(func=cmd_train)

    def add_model_args(p: argparse.ArgumentParser) -> None:
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

    p = sub.add_parser("eval", help="PSNR/SSIM on a test folder with the literature's protocol",
                       description="Evaluate on a folder of clean images: seeded noise per image (Gaussian "
                                   "unless --noise says otherwise), "
                                   "output clipped and rounded to 8 bits, PSNR and SSIM without border crop.")
    add_model_args(p)
    p.add_argument("--data", required=True, help="folder of clean test images (e.g. $R3L_DATA/BSD68)")
    p.add_argument("--sigma", type=_positive_float, action="append",
                   help="noise level (repeatable): sigma on the 0-255 scale for gaussian, spatial_gaussian (its "
                        "largest sigma) and mixed; the peak for poisson; the density for salt_pepper (defaults: "
                        + ", ".join(f"{k} {v:g}" for k, v in DEFAULT_LEVELS.items()) + ")")
    p.add_argument("--noise", choices=list(DEFAULT_LEVELS), default="gaussian",
                   help="noise model (default gaussian, the literature's protocol; see docs/tasks.md)")
    p.add_argument("--seed", type=_non_negative_int, default=0, help="noise seed (default 0)")
    p.add_argument("--max-images", type=_non_negative_int, default=0, help="first N images only (0: all)")
    p.add_argument("--csv", help="write per-image results to this CSV file")
    p.add_argument("--json", help="write the summary and per-image results to this JSON file")
    p.add_argument("--save-images", metavar="DIR", help="write the denoised images into DIR/sigma<S>/")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("denoise", help="denoise image files (no ground truth needed)",
                       description="Denoise images of any size, gray or colour, 8- or 16-bit. Each output "
                                   "keeps its input's size, channel count and bit depth.")
    add_model_args(p)
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders")
    p.add_argument("-o", "--output", help="output file (one input)")
    p.add_argument("--out-dir", help="output folder (any number of inputs; names are kept)")
    p.add_argument("--explain", metavar="DIR",
                   help="R3L only: write DIR/<image>/step1.png ... (the residual each pixel chose at each step, "
                        "blue = darker, red = brighter) and DIR/<image>/estimate.gif (the estimate over the steps)")
    p.set_defaults(func=cmd_denoise)

    p = sub.add_parser("serve", help="a local web page to try a denoiser on your own image",
                       description="Start a web page: upload an image or pick a sample, optionally add noise of "
                                   "a chosen sigma (then PSNR/SSIM as r3l eval computes them), denoise, compare "
                                   "with a slider, play R3L's per-step action maps, download the result at full "
                                   "resolution and bit depth. Listens on loopback unless --host says otherwise.")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1, this machine "
                                                       "only; 0.0.0.0 exposes the page to the network)")
    p.add_argument("--port", type=_non_negative_int, default=8000, help="port (default 8000; 0: any free port)")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    p.add_argument("--checkpoint", action="append", help="offer this checkpoint (repeatable)")
    p.add_argument("--model", action="append", metavar="NAME",
                   help="offer this registry model (repeatable; default: every installed model)")
    p.add_argument("--max-upload-mb", type=float, default=100.0, help="largest upload accepted (default 100)")
    p.set_defaults(func=cmd_serve)

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
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("models", help="list the trained models r3l has (shipped and R3L_MODELS folders)",
                       description="List the model registry: each model's name, architecture, training sigma, "
                                   "BSD68 PSNR and file. `check` measures each model's stored subset PSNR again; "
                                   "`pack` turns a checkpoint into a registry entry (weights + card); `table` "
                                   "prints the models as a Markdown table (docs/models.md).")
    p.add_argument("action", nargs="?", choices=["list", "check", "pack", "table"], default="list")
    p.add_argument("names", nargs="*", metavar="NAME", help="list/check/table: only these models (default all)")
    p.add_argument("--json", action="store_true", help="list: print the cards as JSON")
    p.add_argument("--data-root", help="check/pack: the folder holding BSD68 (default $R3L_DATA)")
    p.add_argument("--checkpoint", help="pack: the checkpoint to pack")
    p.add_argument("--name", help="pack: the model's name, e.g. r3l-gray-s25")
    p.add_argument("--description", default="", help="pack: one line saying what the model is")
    p.add_argument("--images", default="test001,test002,test003,test004",
                   help="pack: comma-separated BSD68 image names of the subset check (default the first four)")
    p.add_argument("--check-data", default="BSD68",
                   help="pack: the data set (a folder of --data-root) of the subset check (default BSD68)")
    p.add_argument("--opponent-colour", action="store_true",
                   help="pack: make a colour model of a gray R3N checkpoint, which denoises each channel of an "
                        "opponent colour space as a gray image (docs/models.md)")
    p.add_argument("--check-sigma", type=float,
                   help="pack: the noise level of the subset check (default the training sigma; for a blind model "
                        "the middle of its range)")
    p.add_argument("--out", help="pack: the registry folder to write into")
    p.add_argument("--training", help="pack: a JSON file of how it was made (device, minutes, ...) for the card")
    p.add_argument("--benchmark", help="pack: a summary.json of r3l benchmark whose row for --name gives the "
                                       "card's BSD68 PSNR per sigma")
    p.add_argument("--row", help="pack: the benchmark method whose row is the model's (default --name)")
    p.add_argument("--eval", action="append", metavar="JSON",
                   help="pack: an `r3l eval --json` report of the whole model on a data set (e.g. Set12) for the "
                        "card's results (repeatable)")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("benchmark", help="the paper's noise-mismatch tables for a list of methods",
                       description="Evaluate R3L/R3N/DnCNN checkpoints, KAIR's DnCNN, BM3D and the noisy input "
                                   "over several test sigmas on the same seeded noisy images; writes table.md "
                                   "(with the published numbers), results.csv, summary.json, psnr_vs_sigma.png "
                                   "and examples.png. Interrupted runs continue from cache.jsonl.")
    p.add_argument("--config", required=True, help="benchmark YAML (see benchmarks/paper_sigma25.yaml)")
    p.add_argument("--out", help="output folder (default benchmark_results/<name>)")
    p.add_argument("--max-images", type=_non_negative_int, help="first N test images only")
    p.add_argument("--device", help="auto, cpu, cuda or cuda:N (default: the config's, else auto)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_benchmark)

    p = sub.add_parser("demo", help="train a small model on scikit-image's samples on the CPU and show it",
                       description="Trains a small R3L model on scikit-image's bundled images (a few minutes "
                                   "on a CPU), evaluates it on held-out samples and writes demo.png (noisy | "
                                   "denoised | clean) and demo.json (PSNRs).")
    p.add_argument("--out-dir", default="demo_out", help="where to write the results (default demo_out)")
    p.add_argument("--episodes", type=_non_negative_int, default=150, help="training episodes (default 150)")
    p.add_argument("--sigma", type=_positive_float, default=25.0, help="noise level (default 25)")
    p.add_argument("--device", default="cpu", help="cpu (default), auto, cuda")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    from r3l.errors import plain_warnings

    parser = build_parser()
    args = parser.parse_args(argv)
    plain_warnings()
    try:
        return args.func(args)
    except R3LError as exc:
        if args.debug:
            traceback.print_exc()
        message = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        print(f"r3l: error: {message.removeprefix('r3l.errors.R3LError: ')}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("r3l: interrupted", file=sys.stderr)
        return 130
    except MemoryError:
        print("r3l: error: out of memory", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

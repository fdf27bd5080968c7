"""``r3l eval``: PSNR/SSIM on a folder of clean images with the literature's protocol."""

from __future__ import annotations

import argparse

from r3l.cli.common import add_model_args, load_denoiser, non_negative_int, positive_float
from r3l.errors import warn


class _NoiseModelsHelp(argparse.HelpFormatter):
    """Fills ``{noise_models}`` in a help text with the noise models of :mod:`r3l.degradation`, each with its
    level's meaning and default: read when help is printed, so that building the parser needs no PyTorch."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = super()._get_help_string(action) or ""
        if "{noise_models}" in text:
            from r3l.degradation import NOISES

            listed = "; ".join(f"{m.name}: {m.level_help}, default {m.default_level:g}" for m in NOISES.values())
            text = text.replace("{noise_models}", listed)
        return text


def noise_name(text: str) -> str:
    """``--noise``: a noise model of :mod:`r3l.degradation`."""
    from r3l.degradation import NOISES

    if text not in NOISES:
        raise argparse.ArgumentTypeError(f"{text!r} is not one of {', '.join(NOISES)}")
    return text


def add_parser(sub) -> None:
    p = sub.add_parser("eval", help="PSNR/SSIM on a test folder with the literature's protocol",
                       description="Evaluate on a folder of clean images: seeded noise per image (Gaussian "
                                   "unless --noise says otherwise), "
                                   "output clipped and rounded to 8 bits, PSNR and SSIM without border crop.",
                       formatter_class=_NoiseModelsHelp)
    add_model_args(p)
    p.add_argument("--data", required=True, help="folder of clean test images (e.g. $R3L_DATA/BSD68)")
    p.add_argument("--sigma", type=positive_float, action="append",
                   help="noise level (repeatable), as the noise model reads it (see --noise)")
    p.add_argument("--noise", type=noise_name, default="gaussian",
                   help="noise model (default gaussian, the literature's protocol; see docs/tasks.md): "
                        "{noise_models}")
    p.add_argument("--seed", type=non_negative_int, default=0, help="noise seed (default 0)")
    p.add_argument("--max-images", type=non_negative_int, default=0, help="first N images only (0: all)")
    p.add_argument("--csv", help="write per-image results to this CSV file")
    p.add_argument("--json", help="write the summary and per-image results to this JSON file")
    p.add_argument("--save-images", metavar="DIR", help="write the denoised images into DIR/sigma<S>/")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from r3l.degradation import noise_model
    from r3l.evaluation.protocol import evaluate, summarize, write_csv
    from r3l.io.data import load_images
    from r3l.io.files import write_json

    denoiser = load_denoiser(args)
    images = load_images(args.data, denoiser.channels, "--data", args.max_images)
    model = noise_model(args.noise, "--noise")
    sigmas = args.sigma or [model.default_level]
    for sigma in sigmas:
        model.check_level(sigma, "--sigma")
    label = model.level_name if args.noise == "gaussian" else f"{args.noise} {model.level_name}"
    noise, degrade = args.noise, None
    if denoiser.env is not None and not denoiser.env.denoises:
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

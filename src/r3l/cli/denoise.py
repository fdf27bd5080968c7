"""``r3l denoise``: denoise image files (no ground truth), each with the model that fits it."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from r3l.cli.common import add_model_args, check_model_args, load_denoiser
from r3l.errors import R3LError, warn


def add_parser(sub) -> None:
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
    p.set_defaults(func=run)


class _Denoisers:
    """The denoiser for each image of ``r3l denoise``: the one named, or the default model that fits the image
    (gray or colour), each loaded once."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.fixed = bool(args.checkpoint or args.model)
        self.first = load_denoiser(args)  # a clear error before any work if no model can be loaded
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
            self.loaded[name] = load_denoiser(self.args, channels)
        return self.loaded[name], name


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


def run(args: argparse.Namespace) -> int:
    from r3l.io.images import output_bits, read_image_with_alpha, write_image

    check_model_args(args)
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

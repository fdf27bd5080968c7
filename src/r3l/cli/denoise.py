"""``r3l denoise``: denoise image files (no ground truth), each with the model that fits it."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from r3l.cli.common import add_model_args, load_denoiser
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
    p.add_argument("--strength", type=strength, default="auto", metavar="S",
                   help="how much of the model's change to keep, 0-1 (1: its whole output, 0: the input), or "
                        "auto (default): from each image's estimated noise level, full for visible noise and less "
                        "for a nearly clean photo, whose detail any denoiser smooths (r3l says what it chose)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def strength(text: str) -> float | str:
    if text == "auto":
        return text
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected auto or a number in [0, 1], got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected auto or a number in [0, 1], got {text!r}")
    return value


class _Denoisers:
    """The denoiser for each image of ``r3l denoise``: the one named, or the default model that fits the image
    (gray or colour), each loaded once, when the first image that needs it comes."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.fixed = bool(args.checkpoint or args.model or args.weights)  # (weights alone: open_denoiser refuses)
        self.loaded: dict[str, object] = {}
        self.names: dict[int, str] = {}
        """The default model's name per channel count (the registry is read once for each)."""
        if self.fixed:  # a clear error before any work if the model cannot be loaded
            self.loaded[args.model or str(args.checkpoint)] = load_denoiser(args)
        else:
            self.default_name(1)  # a clear error before any work if no model is installed

    def default_name(self, channels: int) -> str:
        from r3l.models.zoo import default_model

        if channels not in self.names:
            self.names[channels] = default_model(channels).name
        return self.names[channels]

    def is_policy(self) -> bool:
        """Whether the named model, or the gray default, is a policy (R3L: ``--explain`` shows its actions)."""
        if self.fixed:
            return next(iter(self.loaded.values())).env is not None
        from r3l.models.zoo import find_model

        return find_model(self.default_name(1)).arch.entry.policy

    def __call__(self, image) -> tuple[object, str]:
        """The denoiser for ``image`` and its model's name."""
        if self.fixed:
            return next(iter(self.loaded.items()))[::-1]
        channels = 3 if image.ndim == 3 and image.shape[2] >= 3 else 1
        name = self.default_name(channels)
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
    for path in inputs:
        if not path.exists():
            raise R3LError(f"{path}: no such file or folder (nothing written)")
    if args.output:
        if len(inputs) != 1 or inputs[0].is_dir():
            raise R3LError("-o/--output takes one input file; use --out-dir for several or for a folder")
        if Path(args.output).is_dir():
            raise R3LError(f"-o {args.output}: is a folder; give a file name, or --out-dir {args.output} to "
                           "write the input's name into it (nothing written)")
        pairs = [(inputs[0], Path(args.output))]
    elif not args.out_dir:
        raise R3LError("give -o OUTPUT (one input) or --out-dir DIR")
    else:
        out_dir, pairs = Path(args.out_dir), []
        if out_dir.exists() and not out_dir.is_dir():
            raise R3LError(f"--out-dir {out_dir}: is a file, not a folder (nothing written)")
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
        if dst.is_dir():
            raise R3LError(f"{dst}: a folder of that name is in the way of the output (nothing written)")
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


class _ProgressBar:
    """A progress bar over one image's tiles on a terminal (tqdm on stderr); nothing when stderr is not a
    terminal or with --quiet."""

    def __init__(self, args: argparse.Namespace, src: Path):
        self.bar = None
        if not args.quiet and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(desc=src.name, unit="tile", leave=False, file=sys.stderr)

    def update(self, done: int, total: int) -> None:
        if self.bar is not None:
            self.bar.total = total
            self.bar.update(done - self.bar.n)

    def __enter__(self) -> "_ProgressBar":
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.close()


def _strength(args: argparse.Namespace, denoiser, image, src) -> float:
    """The strength for ``image``: --strength, or the automatic one, said on stderr when it is below 1; and the
    warning of a noise level outside the model's training range when the model's output is used in full."""
    if args.strength != "auto":
        return args.strength
    chosen, sigma = denoiser.strength_for(image)
    if chosen == 0.0:
        warn(f"{src}: noise sigma about {sigma:.0f} (estimated): too little to remove without smoothing detail, "
             "left as it is (--strength 1 denoises it anyway)")
    elif chosen < 1.0:
        warn(f"{src}: noise sigma about {sigma:.0f} (estimated): light noise, denoised at strength {chosen:.2f} "
             "to keep detail (--strength 1 for the model's whole output)")
    else:
        note = denoiser.sigma_warning(sigma, estimated=True)
        if note:
            warn(f"{src}: {note}")
    return chosen


def run(args: argparse.Namespace) -> int:
    from r3l.io.images import output_bits, read_image_with_alpha, write_image

    pairs = _outputs(args)
    explain_dirs = _explain_dirs(args, pairs)
    denoisers = _Denoisers(args)
    if args.explain and not denoisers.is_policy():
        raise R3LError("--explain needs an R3L checkpoint or model (a policy, whose actions it shows); this "
                       "model is not one (nothing written)")
    failed, used = 0, {}
    for (src, dst), explain_dir in zip(pairs, explain_dirs):
        try:
            image, alpha, info = read_image_with_alpha(src)
            if output_bits(dst, info.bits) != info.bits:
                warn(f"{src}: a {info.bits}-bit float image, written to {dst.name} as 16-bit integers (a .tif "
                     "output keeps it float)")
            denoiser, name = denoisers(image)
            with _ProgressBar(args, src) as bar:
                out = denoiser.denoise(image, bar.update, strength=_strength(args, denoiser, image, src))
            if not denoisers.fixed:  # the default model that fits each image: say which
                used[name] = used.get(name, 0) + 1
            write_image(dst, out, bits=info.bits, alpha=alpha, metadata=info)
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

"""The ``r3l`` command line: one module per subcommand (``add_parser`` and ``run``), the model arguments they
share in :mod:`r3l.cli.common`. Nothing is imported at module level that loads PyTorch."""

from __future__ import annotations

import argparse
import os
import sys
import traceback

from r3l.errors import R3LError

#: The subcommands in the order ``r3l --help`` lists them.
COMMANDS = ("train", "evaluate", "denoise", "serve", "export", "models", "benchmark", "demo")


def build_parser() -> argparse.ArgumentParser:
    import importlib

    from r3l.version import __version__

    parser = argparse.ArgumentParser(
        prog="r3l", description="Pixel-wise deep RL for images: R3L denoising by residual recovery (PPO).")
    parser.add_argument("--version", action="version", version=f"r3l {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"r3l.cli.{name}").add_parser(sub)
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
    except BrokenPipeError:  # the reader went away (`r3l models | head`): stop quietly, as other tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())

"""``r3l models``: list, check, pack and tabulate the registry of trained models."""

from __future__ import annotations

import argparse
from pathlib import Path

from r3l.cli.common import data_root, read_json
from r3l.errors import R3LError


def add_parser(sub) -> None:
    p = sub.add_parser("models", help="list the trained models r3l has (shipped and R3L_MODELS folders)",
                       description="List the model registry: each model's name, architecture, training sigma, "
                                   "BSD68 PSNR and file. `check` measures each model's stored subset PSNR again; "
                                   "`pack` turns a checkpoint into a registry entry (weights + card); `table` "
                                   "prints the models as a Markdown table (docs/models.md); `average` writes the "
                                   "mean of the weights of several checkpoints of one run (its snapshots).")
    p.add_argument("action", nargs="?", choices=["list", "check", "pack", "table", "average"], default="list")
    p.add_argument("names", nargs="*", metavar="NAME",
                   help="list/check/table: only these models (default all); average: the checkpoints to average")
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
    p.add_argument("--out", help="pack: the registry folder to write into; average: the checkpoint to write")
    p.add_argument("--training", help="pack: a JSON file of how it was made (device, minutes, ...) for the card")
    p.add_argument("--benchmark", help="pack: a summary.json of r3l benchmark whose row for --name gives the "
                                       "card's BSD68 PSNR per sigma")
    p.add_argument("--action-step", type=float,
                   help="average: decode the mean of a Gaussian R3L policy on actions of this many gray levels "
                        "over the same range (e.g. 0.125)")
    p.add_argument("--row", help="pack: the benchmark method whose row is the model's (default --name)")
    p.add_argument("--eval", action="append", metavar="JSON",
                   help="pack: an `r3l eval --json` report of the whole model on a data set (e.g. Set12) for the "
                        "card's results (repeatable)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.action == "average":
        return average(args)
    return pack(args) if args.action == "pack" else show(args)


def average(args: argparse.Namespace) -> int:
    """``r3l models average CKPT... --out FILE``: the mean of the checkpoints' weights, written atomically."""
    from r3l.models.checkpoint import average_checkpoints, on_action_grid, save_checkpoint

    if not args.out:
        raise R3LError("r3l models average needs --out FILE (the averaged checkpoint to write)")
    ckpt = average_checkpoints(args.names)
    grid = ""
    if args.action_step is not None:
        ckpt = on_action_grid(ckpt, args.action_step)
        grid = f", decoded on {ckpt.arch.task_options['n_actions']} actions of {args.action_step:g} gray levels"
    save_checkpoint(args.out, ckpt)
    print(f"wrote {args.out}: the mean of {len(args.names)} checkpoints (episodes "
          f"{', '.join(str(e) for e in ckpt.info['averaged_episodes'])}){grid}")
    return 0


def _card_results(args: argparse.Namespace) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """The card's BSD68 PSNR per σ (from --benchmark's row) and its other data sets' (from --eval reports)."""
    psnr = {}
    if args.benchmark:
        row = args.row or args.name
        methods = read_json(args.benchmark, "--benchmark").get("methods", {})
        if row not in methods:
            raise R3LError(f"{args.benchmark}: no method named {row!r} in this benchmark summary "
                           f"(it has {', '.join(methods) or 'none'}; --row picks one)")
        psnr = {k: round(v["psnr"], 4) for k, v in methods[row].get("sigmas", {}).items()}
    results: dict[str, dict[str, float]] = {}
    for path in args.eval or []:
        report = read_json(path, "--eval")
        summary, data = report.get("summary"), report.get("data")
        if not isinstance(summary, dict) or not isinstance(data, str):
            raise R3LError(f"--eval {path}: not the JSON of r3l eval --json (no data and summary)")
        results.setdefault(Path(data).name, {}).update({k: round(v["psnr"], 4) for k, v in summary.items()})
    return psnr, results


def pack(args: argparse.Namespace) -> int:
    """``r3l models pack``: a checkpoint into a registry folder, with its card."""
    from r3l.evaluation.cards import pack_model

    if args.names:
        raise R3LError("r3l models pack takes --name NAME, not a model name after pack")
    missing = [flag for flag, value in (("--checkpoint", args.checkpoint), ("--name", args.name),
                                        ("--out", args.out)) if not value]
    if missing:
        raise R3LError(f"r3l models pack needs {', '.join(missing)}")
    if args.check_sigma is not None and not 0 <= args.check_sigma < 1000:
        raise R3LError(f"--check-sigma {args.check_sigma:g}: expected a noise level in [0, 1000)")
    training = read_json(args.training, "--training") if args.training else {}
    psnr, results = _card_results(args)
    card = pack_model(args.checkpoint, args.name, args.description, args.data_root or data_root(),
                      args.out, [i for i in args.images.split(",") if i], sigma=args.check_sigma,
                      training=training, bsd68_psnr=psnr, data=args.check_data, results=results,
                      opponent_colour=args.opponent_colour)
    print(f"packed {card.name} into {args.out}: subset PSNR {card.check.psnr:.2f} dB "
          f"({len(card.check.images)} {card.check.data} images, sigma {card.check.sigma:g})")
    return 0


def _selected(names: list[str]):
    """The installed models, or those of ``names`` (an unknown name is an error)."""
    from r3l.models.zoo import list_models

    models = list_models()
    if names:
        known = {card.name for card in models}
        unknown = [name for name in names if name not in known]
        if unknown:
            raise R3LError(f"model {unknown[0]!r} not found; available: {', '.join(sorted(known)) or 'none'}")
        models = [card for card in models if card.name in set(names)]
    return models


def show(args: argparse.Namespace) -> int:
    """``r3l models [list|check|table]``: a line per model (``check``: its subset PSNR measured again)."""
    from r3l.evaluation.cards import subset_psnr
    from r3l.models.zoo import default_model, zoo_table

    models = _selected(args.names)
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
        line = f"{card.name:<18} {card.arch.name:<6} {card.arch.channels}ch  sigma {card.sigma}  "
        line += f"BSD68@25 {at:.2f} dB  " if at is not None else ""
        kind = defaults.get(card.name)
        line += (f"(default{' ' + kind if kind else ''})  " if kind is not None else "") + card.description
        if args.action == "check":
            measured = subset_psnr(card, args.data_root or data_root())
            ok = abs(measured - card.check.psnr) <= 0.01
            failed += not ok
            line += f"  check {measured:.4f} vs {card.check.psnr:.4f} dB: {'ok' if ok else 'MISMATCH'}"
        print(line)
    return 1 if failed else 0

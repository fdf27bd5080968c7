"""``r3l train``: train a model from a YAML config (resume, torchrun)."""

from __future__ import annotations

import argparse
from pathlib import Path

from r3l.errors import R3LError


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train a model from a YAML config",
                       description="Train a model of a pixel-wise task from a YAML config: R3L (reinforcement "
                                   "learning: PPO, or its critic-free group baseline), R3N or DnCNN (supervised), "
                                   "pixelRL, or a task and model of your own. Writes last/best checkpoints, "
                                   "config.yaml, metrics.jsonl and TensorBoard logs into the run directory.")
    p.add_argument("--config", help="a YAML config file, or the name of one that ships with r3l "
                                    "(--list-configs shows them)")
    p.add_argument("--list-configs", action="store_true",
                   help="list the configs that ship with r3l, with what each trains, and exit")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a config key, e.g. --set algo.lr=1e-4 --set data.batch_size=16 (repeatable)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --run-dir from its last checkpoint (same episode, same LR)")
    p.add_argument("--force", action="store_true",
                   help="with --resume: accept a config that differs from the run's (each change is reported); "
                        "without it such a resume is refused")
    p.add_argument("--run-dir", help="run directory (default: runs/<name>)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from r3l import distributed
    from r3l.config import config_path, load_config, shipped_configs
    from r3l.runtime import configure_torch, pick_device
    from r3l.training.trainer import Trainer, resume_candidates

    if args.list_configs:
        for name, summary in shipped_configs().items():
            print(f"{name:32s} {summary}")
        return 0
    if not args.config:
        raise R3LError("give --config FILE or the name of a shipped config (r3l train --list-configs)")
    cfg = load_config(config_path(args.config), args.set or [])
    run_dir = Path(args.run_dir or Path("runs") / cfg.name)
    has_checkpoint = bool(resume_candidates(run_dir))
    # Under torchrun --max-restarts, a restarted worker continues the run from its last checkpoint.
    resume = args.resume or (distributed.restarted() and has_checkpoint)
    if not resume and has_checkpoint:
        raise R3LError(f"{run_dir}: run directory already holds a checkpoint; pass --resume or another --run-dir")
    if args.force and not args.resume:
        raise R3LError("--force only applies to --resume")
    world = distributed.from_environment(cfg.train.device)
    trainer = None
    try:
        device = configure_torch(cfg.train, pick_device(distributed.device_for(world, cfg.train.device)))
        trainer = Trainer(cfg, run_dir, resume=resume, force=args.force, world=world, device=device)
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

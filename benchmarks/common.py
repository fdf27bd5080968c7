"""What the benchmark scripts share: device synchronisation, the device's name, JSON output, episode set-up."""

from __future__ import annotations

import argparse
import platform
import resource

import torch

from r3l.config import from_dict
from r3l.io.data import EpisodeBatches
from r3l.io.files import to_json
from r3l.runtime import configure_torch, pick_device
from r3l.training.trainer import Trainer


def sync(device: torch.device) -> None:
    """Wait for queued GPU work, so that wall-clock timings cover it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"


def emit(result: dict, out: str | None) -> None:
    """Print the result as JSON and, with ``out``, write it there too."""
    text = to_json(result, indent=2)
    print(text)
    if out:
        with open(out, "w") as handle:
            handle.write(text + "\n")


def peak_host_mib() -> float:
    """The process's peak resident memory so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def peak_device_mib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def add_episode_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", choices=["seed", "default"], default="seed")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--batch", type=int, help="override data.batch_size")
    parser.add_argument("--crop", type=int, help="override data.crop")
    parser.add_argument("--set", action="append", default=[], help="extra config overrides key=value")
    parser.add_argument("--out", help="also write the JSON here")


class EpisodeSetup:
    """A trainer for the preset on scikit-image's samples (no data set needed) and ``episode(e)``, which plays
    and learns from episode ``e`` and reads one number back, as a log line would."""

    def __init__(self, args: argparse.Namespace, episodes: int):
        self.device = device = pick_device(args.device)
        overrides = [f"train.device={device}", "train.progress=false", "train.tensorboard=false",
                     "data.train=skimage", "data.val=", "model.init=scratch", *args.set]
        if args.batch:
            overrides.append(f"data.batch_size={args.batch}")
        if args.crop:
            overrides.append(f"data.crop={args.crop}")
        self.cfg = cfg = from_dict({"preset": args.preset}, overrides)
        configure_torch(cfg.train)
        self.trainer = Trainer(cfg, "/tmp/r3l-bench-episode")
        self.batches = EpisodeBatches(self.trainer.train_images, cfg.data, cfg.seed, episodes)
        self.generator = torch.Generator(device=device)

    def episode(self, e: int) -> None:
        clean = self.batches[e].to(self.device, non_blocking=True)
        stats = self.trainer.run_episode(e, clean, self.generator)
        stats["losses/policy_loss"].item()  # the one sync a log line would make

"""Time one R3L training episode against the network work it contains.

An episode is a rollout (``steps`` forward passes without gradients) plus a PPO update (``epochs`` ×
``minibatches`` forward + backward + Adam steps over every state). The "network floor" runs exactly those
forward/backward/Adam calls on the same tensor shapes with a trivial loss, and nothing else. Their ratio says
how much the environment, sampling, GAE, losses and data loading add on top.

    python benchmarks/episode.py --preset seed            # batch 32, 70×70, 6 steps, K = 15 (slow on a CPU)
    python benchmarks/episode.py --preset default --device cuda --episodes 20

Prints one JSON object (and writes it to --out if given).
"""

from __future__ import annotations

import argparse
import datetime
import time

import torch
from common import device_name, emit, sync

from r3l.config import from_dict
from r3l.denoiser import pick_device
from r3l.optim import autocast
from r3l.trainer import Trainer



def network_floor(trainer: Trainer, clean: torch.Tensor, repeats: int) -> float:
    """Seconds per episode of the network's own work: rollout forwards + the update's forward/backward/step."""
    net, opt, cfg = trainer.net, trainer.ppo.optimizer, trainer.cfg
    steps, batch = cfg.env.steps, clean.shape[0]
    per_mb = batch // cfg.ppo.minibatches
    states = clean.unsqueeze(0).expand(steps, *clean.shape).contiguous()

    def once() -> None:
        with torch.no_grad(), autocast(trainer.device, trainer.precision):
            for t in range(steps):
                net(states[t])
        for _ in range(cfg.ppo.epochs):
            for m in range(cfg.ppo.minibatches):
                x = states[:, m * per_mb : (m + 1) * per_mb].reshape(-1, *clean.shape[1:])
                with autocast(trainer.device, trainer.precision):
                    logits, values = net(x)
                loss = logits.float().mean() + values.float().mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

    once()
    sync(trainer.device)
    start = time.perf_counter()
    for _ in range(repeats):
        once()
    sync(trainer.device)
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=["seed", "default"], default="seed")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--episodes", type=int, default=2, help="timed episodes (after one warm-up)")
    parser.add_argument("--batch", type=int, help="override data.batch_size")
    parser.add_argument("--crop", type=int, help="override data.crop")
    parser.add_argument("--set", action="append", default=[], help="extra config overrides key=value")
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args()

    device = pick_device(args.device)
    overrides = [f"train.device={device}", "train.progress=false", "train.tensorboard=false",
                 "data.train=skimage", "data.val=", "model.init=scratch", *args.set]
    if args.batch:
        overrides.append(f"data.batch_size={args.batch}")
    if args.crop:
        overrides.append(f"data.crop={args.crop}")
    cfg = from_dict({"preset": args.preset}, overrides)
    trainer = Trainer(cfg, "/tmp/r3l-bench-episode")
    from r3l.data import EpisodeBatches

    batches = EpisodeBatches(trainer.train_images, cfg.data, cfg.seed, args.episodes + 1)
    generator = torch.Generator(device=device)

    def episode(e: int) -> None:
        clean = batches[e].to(device, non_blocking=True)
        stats = trainer.run_episode(e, clean, generator)
        stats["losses/policy_loss"].item()  # the one sync a log line would make

    episode(0)
    sync(device)
    start = time.perf_counter()
    for e in range(1, args.episodes + 1):
        episode(e)
    sync(device)
    episode_s = (time.perf_counter() - start) / args.episodes
    clean = batches[0].to(device)
    floor_s = network_floor(trainer, clean, args.episodes)

    pixels = cfg.data.batch_size * cfg.model.channels * cfg.data.crop**2
    result = {
        "benchmark": "episode",
        "preset": args.preset,
        "device": device_name(device),
        "cpu_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "date": datetime.date.today().isoformat(),
        "batch": cfg.data.batch_size, "crop": cfg.data.crop, "steps": cfg.env.steps,
        "epochs": cfg.ppo.epochs, "minibatches": cfg.ppo.minibatches, "features": cfg.model.features,
        "precision": trainer.precision, "channels_last": trainer.channels_last,
        "timed_episodes": args.episodes,
        "episode_s": episode_s,
        "network_floor_s": floor_s,
        "ratio": episode_s / floor_s,
        "pixel_steps_per_s": pixels * cfg.env.steps / episode_s,
    }
    emit(result, args.out)


if __name__ == "__main__":
    main()

"""Time one R3L training episode against the network work it contains.

An episode is a rollout (``steps`` forward passes without gradients) plus a PPO update (``epochs`` ×
``minibatches`` forward + backward + Adam steps over every state). The "network floor" runs exactly those
forward/backward/Adam calls on the same tensor shapes with a trivial loss, and nothing else. Their ratio says
how much the environment, sampling, GAE, losses and data loading add on top.

    python benchmarks/episode.py --preset seed            # batch 32, 70×70, 6 steps, K = 15 (slow on a CPU)
    python benchmarks/episode.py --preset default --device cuda --episodes 20

Also reported: pixel-steps per second, the achieved TFLOP/s (the network's FLOPs, counted by
``torch.utils.flop_counter``, over the episode's time) and peak memory. ``--set train.precision=fp16`` or
``--set train.compile=all`` measure those paths.

Prints one JSON object (and writes it to --out if given).
"""

from __future__ import annotations

import argparse
import datetime
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from common import EpisodeSetup, add_episode_args, device_name, emit, peak_device_mib, peak_host_mib, sync
from r3l.training.trainer import Trainer


def network_work(trainer: Trainer, clean: torch.Tensor):
    """One episode's network work alone: rollout forwards + the update's forward/backward/Adam step."""
    net, opt, cfg = trainer.forward, trainer.optimizer, trainer.cfg
    steps, batch = cfg.env.steps, clean.shape[0]
    per_mb = batch // cfg.algo.minibatches
    states = clean.unsqueeze(0).expand(steps, *clean.shape).contiguous()

    def once() -> None:
        with torch.no_grad(), trainer.precision.autocast():
            for t in range(steps):
                net(states[t])
        for _ in range(cfg.algo.epochs):
            for m in range(cfg.algo.minibatches):
                x = states[:, m * per_mb : (m + 1) * per_mb].reshape(-1, *clean.shape[1:])
                with trainer.precision.autocast():
                    logits, values = net(x)
                loss = logits.float().mean() + values.float().mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

    return once


def network_floor(once, device: torch.device, repeats: int) -> float:
    """Seconds per call of ``once`` after a warm-up call."""
    once()
    sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        once()
    sync(device)
    return (time.perf_counter() - start) / repeats


def network_flops(trainer: Trainer, clean: torch.Tensor) -> int:
    """FLOPs of one episode's network work, counted on the eager network (compiled code hides its ops)."""
    forward = trainer.forward
    trainer.forward = trainer.net
    try:
        with FlopCounterMode(display=False) as counter:
            network_work(trainer, clean)()
    finally:
        trainer.forward = forward
    return counter.get_total_flops()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=2, help="timed episodes (after one warm-up)")
    parser.add_argument("--training-episodes", type=int,
                        help="episodes of a whole training, for training_estimate_min (default: 30,001 for the seed "
                             "preset as in the paper, 10,000 for the default preset as in "
                             "configs/r3l_gray_sigma25.yaml)")
    add_episode_args(parser)
    args = parser.parse_args()
    training_episodes = args.training_episodes or (30001 if args.preset == "seed" else 10000)
    setup = EpisodeSetup(args, args.episodes + 1)
    trainer, cfg, device, episode = setup.trainer, setup.cfg, setup.device, setup.episode

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    episode(0)
    sync(device)
    start = time.perf_counter()
    for e in range(1, args.episodes + 1):
        episode(e)
    sync(device)
    episode_s = (time.perf_counter() - start) / args.episodes
    peak_device = peak_device_mib(device)
    clean = setup.batches[0].to(device)
    floor_s = network_floor(network_work(trainer, clean), device, args.episodes)
    flops = network_flops(trainer, clean)

    pixels = cfg.data.batch_size * cfg.model.channels * cfg.data.crop**2
    result = {
        "benchmark": "episode",
        "preset": args.preset,
        "device": device_name(device),
        "cpu_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "date": datetime.date.today().isoformat(),
        "batch": cfg.data.batch_size, "crop": cfg.data.crop, "steps": cfg.env.steps,
        "epochs": cfg.algo.epochs, "minibatches": cfg.algo.minibatches, "features": cfg.model.features,
        "precision": trainer.precision.name, "channels_last": trainer.channels_last, "compile": trainer.compile,
        "compile_mode": trainer.compile_mode,
        "timed_episodes": args.episodes,
        "episode_s": episode_s,
        "network_floor_s": floor_s,
        "ratio": episode_s / floor_s,
        "pixel_steps_per_s": pixels * cfg.env.steps / episode_s,
        "network_gflop_per_episode": flops / 1e9,
        "achieved_tflops": flops / episode_s / 1e12,
        "floor_tflops": flops / floor_s / 1e12,
        "peak_device_mib": peak_device,
        "peak_host_mib": peak_host_mib(),
        "training_episodes": training_episodes,
        "training_estimate_min": episode_s * training_episodes / 60,
    }
    emit(result, args.out)


if __name__ == "__main__":
    main()

"""The training loop: wires the environment, the actor-critic, PPO, the data and the checkpoints."""

from __future__ import annotations

import copy
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from tqdm import tqdm

from r3l.algos import ALGORITHMS
from r3l.algos.optim import Precision, learning_rate, resolve_precision, set_lr
from r3l.config import Config, config_class, upgrade_sections
from r3l.distributed import SINGLE, World, device_for
from r3l.errors import R3LError, warn
from r3l.evaluation.protocol import evaluate, summarize
from r3l.inference.denoiser import Denoiser
from r3l.io.data import NamedImage, check_crop, load_images, make_train_loader
from r3l.io.files import atomic_write_bytes
from r3l.models.build import build_model
from r3l.models.checkpoint import (
    Checkpoint,
    load_checkpoint,
    load_weights,
    optimizer_state,
    previous_path,
    restore_optimizer,
    save_checkpoint,
)
from r3l.models.spec import build_network, spec_from_config
from r3l.runtime import cpu_prefers_channels_last, pick_device, resolve_compile
from r3l.schema import flatten, resumable_keys
from r3l.tasks import make_env
from r3l.training.logger import MetricLogger

COUNTERS = ("health/skipped_steps", "health/bad_update", "health/scale_overflows")


def compiled(fn, what: str, mode: str):
    """``torch.compile(fn)`` unless ``what`` is ``off``; shapes are static (a rollout and an update minibatch are
    two shapes, each compiled once)."""
    if what == "off":
        return fn
    return torch.compile(fn, mode=None if mode == "default" else mode, dynamic=False)


def check_resume_config(saved: dict, current: dict, path: Path, force: bool) -> None:
    """Refuse to resume with a config that changes the run (``force``: warn for each change instead). The keys a
    resumed run may change are the fields marked resumable (:func:`r3l.schema.resumable`): they decide what is
    logged, saved and validated, where and how fast it runs, but not the sequence of updates. Any other change
    makes the run something else than the continuation of the one it resumes."""
    # A key the saved config lacks (written by an older r3l) had its default then.
    # A key of the saved config that this run's components no longer have (an option of an older r3l's single
    # model section that this model never read, say) is not compared.
    saved = copy.deepcopy(saved)
    upgrade_sections(saved)
    cls = config_class(current["env"]["name"], current["model"]["name"], current["algo"]["name"])
    free = resumable_keys(cls)
    old, new = {**flatten(cls().to_dict()), **flatten(saved)}, flatten(current)
    changed = [key for key in sorted(new) if key not in free and old.get(key, "(absent)") != new.get(key, "(absent)")]
    if not changed:
        return
    diff = "; ".join(f"{key}: {old.get(key, '(absent)')!r} -> {new.get(key, '(absent)')!r}" for key in changed)
    if not force:
        raise R3LError(f"{path}: the config differs from the run's ({diff}); resuming would not continue the same "
                       "run: use the run's own config.yaml, or --force to resume with the change")
    for key in changed:
        warn(f"resuming with a changed {key}: {old.get(key, '(absent)')!r} -> {new.get(key, '(absent)')!r}")


def episode_seed(seed: int, episode: int) -> int:
    """A 63-bit seed for one episode's actions and noise, independent of every other (seed, episode).

    (The 0 in the entropy keeps the seeds of earlier r3l versions, whose runs resume unchanged.)"""
    return int(np.random.SeedSequence([seed, 0, episode]).generate_state(2, np.uint64)[0] >> np.uint64(1))


def resume_candidates(run_dir: str | Path) -> list[Path]:
    """The checkpoints a run directory can be resumed from, newest first: ``last.safetensors``, then the one it
    replaced (:func:`r3l.models.checkpoint.previous_path`). ``r3l train`` refuses a new run over any of them."""
    last = Path(run_dir) / "last.safetensors"
    return [path for path in (last, previous_path(last)) if path.exists()]


def save_config(cfg: Config, path: str | Path) -> None:
    """Write ``cfg`` as the YAML that ``r3l train --config`` reads, atomically."""
    atomic_write_bytes(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False).encode())


def algorithm_class(cfg: Config):
    """The class of the configured algorithm (``algo.name``)."""
    return ALGORITHMS[cfg.algo.name]


def algorithm_options(cfg: Config):
    """The configured algorithm's options (the ``algo`` section)."""
    return cfg.algo


def compile_plan(cfg: Config, device: torch.device) -> tuple[str, str]:
    """:func:`r3l.runtime.resolve_compile` for the configured model's algorithm."""
    return resolve_compile(cfg.train, device, algorithm_class(cfg).compiles_whole_update)


class _Interval:
    """One log interval's statistics, kept on the device: every episode's stats (their means, or totals for
    :data:`COUNTERS`), the longest run of skipped updates so far, and the pixel-steps since it began."""

    def __init__(self, device: torch.device):
        self.pending: dict[str, list[torch.Tensor]] = {}
        self.bad_run = torch.zeros((), device=device)
        self.longest_bad = torch.zeros((), device=device)
        self.tick, self.pixel_steps = time.perf_counter(), 0

    def add(self, stats: dict[str, torch.Tensor], pixel_steps: int) -> None:
        self.bad_run = torch.where(stats["health/bad_update"] > 0, self.bad_run + 1, torch.zeros_like(self.bad_run))
        self.longest_bad = torch.maximum(self.longest_bad, self.bad_run)
        for name, value in stats.items():
            self.pending.setdefault(name, []).append(value)
        self.pixel_steps += pixel_steps

    def means(self) -> dict[str, float]:
        last = {k: float(torch.stack(v).float().mean()) for k, v in self.pending.items()}
        for name in COUNTERS:  # totals over the interval, not means
            last[name] *= len(self.pending[name])
        return last

    def restart(self, now: float) -> None:
        self.pending.clear()
        self.tick, self.pixel_steps = now, 0


class Trainer:
    """Trains the configured model in ``run_dir`` (``last.safetensors``, ``best.safetensors``, ``config.yaml``,
    ``metrics.jsonl``, ``tensorboard/``): R3L with pixel-wise PPO, R3N and DnCNN with MSE."""

    def __init__(self, cfg: Config, run_dir: str | Path, resume: bool = False, force: bool = False,
                 world: World = SINGLE, device: torch.device | None = None):
        """Load the data, build (or resume) the network and its algorithm. Process-wide torch settings
        (threads, determinism, cuDNN, TF32) are :func:`r3l.runtime.configure_torch`'s, which the CLI calls.

        ``world`` (:func:`r3l.distributed.from_environment`) makes this one of several processes under
        ``torchrun``: each learns from its part of every global batch through DistributedDataParallel, validates
        its share of the images, and only rank 0 writes files. ``device``: the one the caller picked (and
        configured) for this process; by default picked here from ``train.device``."""
        self.cfg, self.run_dir, self.world = cfg, Path(run_dir), world
        self.last_path, self.best_path = self.run_dir / "last.safetensors", self.run_dir / "best.safetensors"
        self.device = device if device is not None else pick_device(device_for(world, cfg.train.device))
        if world.active:
            world.shard(cfg.data.batch_size)  # a clear error now if the batch does not split evenly
        cuda = self.device.type == "cuda"
        layout = cfg.train.channels_last
        cpu = self.device.type == "cpu"
        self.channels_last = layout == "on" or (layout == "auto" and (cuda or (cpu and cpu_prefers_channels_last())))
        torch.manual_seed(cfg.seed)  # the network's initial weights

        self.train_images, self.val_images = self._load_data(cfg)
        self.val_by_sigma: dict[str, float] = {}

        self.env = make_env(cfg.env)
        self.arch = spec_from_config(cfg.model, cfg.env)
        """The network's spec, built once: the network, the resumed checkpoint's check and the anchor use it."""
        self.start_episode, self.best_psnr = 0, float("-inf")
        if resume:
            path, ckpt = self._resume_checkpoint()
            check_resume_config(ckpt.config, cfg.to_dict(), path, force)
            self.net = build_network(self.arch)
            load_weights(self.net, ckpt, self.arch, path)
        else:
            self.net = build_model(self.arch, cfg.model)
        self.net_memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        self.net.to(self.device, memory_format=self.net_memory_format)
        self.precision = Precision(self.device, resolve_precision(self.device, cfg.train.precision))
        """The arithmetic of the network's passes (``self.precision.name``) and the guarded optimiser step."""
        self.compile, self.compile_mode = compile_plan(cfg, self.device)
        self.forward = self._training_forward()
        """The network as training calls it (compiled, or wrapped for DDP); validation and checkpoints use
        ``self.net``."""
        algorithm = algorithm_class(cfg)
        self.algo = algorithm(self.net, algorithm_options(cfg), self.env, self.precision, self.forward, self.compile,
                              self.compile_mode, world)
        self.optimizer = self.algo.optimizer
        if resume:
            if getattr(self.algo, "anchor", None) is not None:  # the anchor is where the config starts
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(cfg.seed)
                    start = build_model(self.arch, cfg.model)
                self.algo.anchor_to(start.to(self.device, memory_format=self.net_memory_format))
            restore_optimizer(self.optimizer, ckpt, path)
            if self.precision.loss_scale is not None and "loss_scale" in ckpt.info:
                self.precision.loss_scale.load_state_dict(ckpt.info["loss_scale"])
            self.start_episode = ckpt.episode
            self.best_psnr = self._best_so_far(ckpt)
        if world.main:
            try:
                self.run_dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise R3LError(f"{self.run_dir}: cannot create the run directory ({exc.strerror or exc})") from None
            save_config(cfg, self.run_dir / "config.yaml")

    def _training_forward(self):
        """``self.net`` compiled as planned, or under torchrun wrapped in DistributedDataParallel, which averages
        the gradients in backward (compiling through it is left out: its graph breaks at every bucket, and CUDA
        graphs cannot hold the collectives)."""
        if not self.world.active:
            return compiled(self.net, self.compile, self.compile_mode)
        from torch.nn.parallel import DistributedDataParallel

        self.compile = "off"
        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(self.net, device_ids=ids)

    @staticmethod
    def _load_data(cfg: Config) -> tuple[list[NamedImage], list[NamedImage]]:
        """The training images and the validation images (a folder, or ``data.holdout`` training images)."""
        train = load_images(cfg.data.train, cfg.model.channels, "data.train")
        held_out: list[NamedImage] = []
        if cfg.data.holdout:
            if cfg.data.holdout >= len(train):
                raise R3LError(f"data.holdout: {cfg.data.holdout} of {len(train)} training images "
                               "would leave none to train on")
            held_out = train[-cfg.data.holdout:]
            train = train[:-cfg.data.holdout]
        check_crop(train, cfg.data.crop)
        val: list[NamedImage] = []
        if cfg.data.val == "holdout":
            if not held_out:
                raise R3LError("data.val: holdout needs data.holdout > 0 (how many training images to hold out)")
            val = held_out[:cfg.data.val_max_images] if cfg.data.val_max_images else held_out
        elif cfg.data.val:
            val = load_images(cfg.data.val, cfg.model.channels, "data.val", cfg.data.val_max_images)
        return train, val

    def describe(self) -> str:
        """What the training runs on, as resolved from ``auto``: e.g. ``cpu, bf16 autocast, channels-last, 2
        threads, not compiled``."""
        parts = [str(self.device), "fp32" if self.precision.name == "fp32" else f"{self.precision.name} autocast",
                 "channels-last" if self.channels_last else "contiguous"]
        if self.device.type == "cpu":
            parts.append(f"{torch.get_num_threads()} threads")
        parts.append("not compiled" if self.compile == "off" else f"compiled ({self.compile}, {self.compile_mode})")
        return ", ".join(parts)

    def _resume_checkpoint(self) -> tuple[Path, Checkpoint]:
        """The newest checkpoint that loads and verifies: ``last``, else the one it replaced."""
        candidates = resume_candidates(self.run_dir)
        if not candidates:
            raise R3LError(f"{self.last_path}: nothing to resume (no checkpoint in this run directory)")
        errors = []
        for path in candidates:
            try:
                ckpt = load_checkpoint(path, with_training_state=True)
            except R3LError as exc:
                errors.append(str(exc))
                continue
            if errors:
                warn(f"{errors[0]}; resuming from {path.name} (episode {ckpt.episode})")
            return path, ckpt
        raise R3LError("; ".join(errors) + "; no usable checkpoint to resume from")

    def _best_so_far(self, ckpt: Checkpoint) -> float:
        """The best validation PSNR, also when ``best`` was written after the checkpoint being resumed."""
        def recorded(info: dict) -> float:  # strict JSON holds "no validation yet" (-inf) as null
            value = info.get("best_val_psnr")
            return float("-inf") if value is None else float(value)

        best = recorded(ckpt.info)
        if self.best_path.is_file():
            try:
                best = max(best, recorded(load_checkpoint(self.best_path).info))
            except R3LError:
                pass
        return best

    def _checkpoint(self, episode: int, with_optimizer: bool) -> Checkpoint:
        state, groups = optimizer_state(self.optimizer) if with_optimizer else (None, None)
        info = {"best_val_psnr": self.best_psnr}
        if with_optimizer and self.precision.loss_scale is not None:
            info["loss_scale"] = self.precision.loss_scale.state_dict()
        return Checkpoint(self.arch, self.net.state_dict(), self.cfg.to_dict(), episode, info, state, groups)

    def val_sigmas(self) -> list[float]:
        """The validation levels: ``data.val_sigma`` (one or a list), else the task's
        (:meth:`~r3l.tasks.base.BatchImageEnv.validation_level`: a denoising task's training level, the middle of
        a range)."""
        cfg = self.cfg
        given = cfg.data.val_sigma if isinstance(cfg.data.val_sigma, list) else [cfg.data.val_sigma]
        if any(given):
            return [float(s) for s in given]
        return [self.env.validation_level()]

    def validate(self) -> float:
        """The mean validation PSNR over :meth:`val_sigmas` (each level's is in :attr:`val_by_sigma`)."""
        cfg = self.cfg
        self.net.eval()
        denoiser = Denoiser(self.net, self.arch, self.device, channels_last=self.channels_last)
        # Validation batches are whole images, shapes the training crops never have: with cuDNN autotuning on,
        # the first validation would time every convolution algorithm on gigabyte-sized activations (the
        # largest part of a slow first validation on a GPU). Its heuristic choice is used instead.
        # Each rank validates its share of the images; the rows are gathered, so every rank gets the number a
        # single process would (each image's noise is seeded by its name).
        mine = self.val_images[self.world.rank :: self.world.size]
        with torch.backends.cudnn.flags(enabled=torch.backends.cudnn.enabled, benchmark=False,
                                        deterministic=torch.backends.cudnn.deterministic,
                                        allow_tf32=torch.backends.cudnn.allow_tf32):
            rows = self.world.gather(evaluate(denoiser, mine, self.val_sigmas(), cfg.data.val_seed, progress=False,
                                              noise=cfg.env.name, degrade=self.env.test_input))
        self.net.train()
        self.val_by_sigma = {sigma: s["psnr"] for sigma, s in summarize(rows).items()}
        return float(np.mean(list(self.val_by_sigma.values())))

    def run_episode(self, episode: int, clean: torch.Tensor, generator: torch.Generator) -> dict:
        """One episode of the algorithm (a rollout and PPO update, or a supervised step); diagnostics stay on
        the device."""
        generator.manual_seed(episode_seed(self.cfg.seed, episode))
        lr = learning_rate(self.algo.lr_config, episode, self.cfg.train.episodes)
        warming_up = episode < getattr(self.algo.lr_config, "value_warmup", 0)
        set_lr(self.optimizer, lr, only="value" if warming_up else None)
        stats = self.algo.learn(clean, generator)
        stats["charts/learning_rate"] = lr
        return stats

    def train(self, stop_at: int | None = None, time_limit: float | None = None) -> dict[str, float]:
        """Run episodes ``start … train.episodes−1`` (or until ``stop_at``); returns the last logged metrics.

        ``time_limit`` (seconds) ends the run at the first log interval past it, with a checkpoint; the learning
        rate keeps following the schedule of ``train.episodes``.
        """
        cfg, tc = self.cfg, self.cfg.train
        end = tc.episodes if stop_at is None else min(stop_at, tc.episodes)
        loader = make_train_loader(self.train_images, cfg.data, cfg.seed, self.start_episode, end,
                                   pin_memory=self.device.type == "cuda")
        main = self.world.main
        logger = MetricLogger(self.run_dir, tc.tensorboard) if main else None
        generator = torch.Generator(device=self.device)
        last: dict[str, float] = {}
        self.net.train()
        interval = _Interval(self.device)
        started = interval.tick
        bar = tqdm(total=tc.episodes, initial=self.start_episode, desc="train", unit="ep",
                   disable=not (tc.progress and main))
        try:
            for episode, clean in enumerate(loader, start=self.start_episode):
                clean = clean.to(self.device, non_blocking=True)
                stats = self.run_episode(episode, clean, generator)
                lr = stats.pop("charts/learning_rate")
                interval.add(stats, clean.numel() * self.env.steps * getattr(self.algo, "group", 1))
                done = episode + 1
                bar.update(1)
                if done % tc.log_every == 0 or done == end:
                    last = self._close_interval(interval, done, lr, started)
                    if main:
                        logger.log(done, last)
                    if "charts/psnr_gain" in last:
                        bar.set_postfix(gain=f"{last['charts/psnr_gain']:.2f}dB")
                if self.val_images and (done % tc.val_every == 0 or done == tc.episodes):
                    last["val/psnr"] = self._validate_and_keep_best(done, logger)
                out_of_time = time_limit is not None and done % tc.log_every == 0 and \
                    self.world.any(time.perf_counter() - started > time_limit, self.device)
                if main and tc.snapshot_every and done % tc.snapshot_every == 0:
                    save_checkpoint(self.run_dir / "snapshots" / f"episode_{done:06d}.safetensors",
                                    self._checkpoint(done, with_optimizer=False))
                if main and (done % tc.save_every == 0 or done == end or out_of_time):
                    save_checkpoint(self.last_path, self._checkpoint(done, with_optimizer=True), keep_previous=True)
                if out_of_time:
                    end = done
                    break
        finally:
            bar.close()
            if logger is not None:
                logger.close()
        if not self.val_images and main:
            save_checkpoint(self.best_path, self._checkpoint(end, with_optimizer=False))
        self.world.barrier()  # no rank leaves (and, under torchrun, ends) before rank 0 has written
        self.episodes_done = end
        return last

    def _close_interval(self, interval: "_Interval", done: int, lr: float, started: float) -> dict[str, float]:
        """The log interval's metrics, averaged over the ranks; stops the run after too many bad updates."""
        last = self.world.mean(interval.means(), self.device)  # every rank's part of the batch
        if int(interval.longest_bad) >= self.cfg.train.max_bad_updates:
            raise R3LError(
                f"training stopped at episode {done}: {int(interval.longest_bad)} updates in a row had "
                f"non-finite losses, rewards or gradients and were skipped; the last good "
                f"checkpoint is {self.last_path}"
            )
        now = time.perf_counter()
        last["charts/learning_rate"] = lr
        last["charts/pixel_steps_per_s"] = interval.pixel_steps / (now - interval.tick)
        last["time/elapsed_s"] = now - started
        interval.restart(now)
        return last

    def _validate_and_keep_best(self, done: int, logger: MetricLogger | None) -> float:
        """Validate, log it (per σ too), and write ``best.safetensors`` when it is the best so far."""
        val_start = time.perf_counter()
        psnr = self.validate()
        if self.world.main:
            per_sigma = ({f"val/psnr_sigma{k}": v for k, v in self.val_by_sigma.items()}
                         if len(self.val_by_sigma) > 1 else {})
            logger.log(done, {"val/psnr": psnr, **per_sigma, "time/val_s": time.perf_counter() - val_start})
        if psnr > self.best_psnr:
            self.best_psnr = psnr
            if self.world.main:
                save_checkpoint(self.best_path, self._checkpoint(done, with_optimizer=False))
        return psnr

"""What every learning algorithm shares: the interface the trainer uses, and the state each one keeps."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from r3l.algos.optim import LRSchedule, Precision, make_adam
from r3l.distributed import SINGLE, World
from r3l.tasks.base import BatchImageEnv


class Algorithm:
    """A learning algorithm for a network on a task (:mod:`r3l.algos` lists the interface).

    The constructor keeps the network, the options (its config section, also the learning-rate schedule's
    fields), the task, the arithmetic (``precision``), what the passes call (``forward``: the network, compiled or
    wrapped for DDP) and the process group, then makes the optimiser (:meth:`make_optimizer`). ``compile`` and
    ``mode`` are the trainer's ``torch.compile`` plan, for an algorithm that compiles more than the network.
    """

    Options: ClassVar[type[LRSchedule]] = LRSchedule
    """The dataclass of its options: the config section of its name."""
    trains_policies: ClassVar[bool] = False
    """Whether it trains policies (registry entries with ``policy``) or deterministic networks, the two kinds of
    model; the config refuses an algorithm for the other kind."""
    compiles_whole_update: ClassVar[bool] = False
    """Whether ``train.compile: auto`` compiles all of its update on CUDA (else only the network, on request)."""

    def __init__(self, net: nn.Module, cfg: LRSchedule, env: BatchImageEnv, precision: Precision | None = None,
                 forward=None, compile: str = "off", mode: str = "default", world: World = SINGLE):
        self.net, self.cfg, self.env, self.world = net, cfg, env, world
        self.lr_config = cfg
        """The learning-rate schedule's fields (``lr``, ``lr_schedule``, ``lr_power``)."""
        self.precision = precision or Precision(next(net.parameters()).device, "fp32")
        self.forward = net if forward is None else forward
        self.optimizer = self.make_optimizer()

    def make_optimizer(self) -> torch.optim.Optimizer:
        """Adam over the network's trainable parameters at the options' ``lr`` and ``weight_decay``."""
        return make_adam(self.net, self.cfg.lr, weight_decay=getattr(self.cfg, "weight_decay", 0.0))

    @staticmethod
    def check(cfg: LRSchedule, batch_size: int, where: str = "config key") -> None:
        """What the option types cannot say about a run of global batch ``batch_size`` (nothing by default)."""

    def learn(self, clean: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """Learn from one batch of clean images ``(B, C, H, W)`` (an episode, or a step); device-side
        diagnostics."""
        raise NotImplementedError

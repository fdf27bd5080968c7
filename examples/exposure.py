"""Exposure correction as an r3l task: every pixel scales its own intensity until the image is exposed right.

The whole task is this class. r3l's trainer, PPO, checkpoints, ``r3l eval`` and ``r3l denoise`` use it through
the four methods below; see docs/custom-tasks.md for the walk-through.
"""

from dataclasses import dataclass

import torch

from r3l.tasks import BatchImageEnv, TaskOptions


@dataclass
class ExposureOptions(TaskOptions):
    """The task's ``env.*`` keys (checkpoints store them, so inference rebuilds the same task)."""

    n_actions: int = 7
    steps: int = 4
    low: float = 0.4
    """The lowest exposure gain of a start image."""
    high: float = 1.6
    """The highest."""


class ExposureEnv(BatchImageEnv):
    """Start: the clean image times an unknown exposure gain in [low, high] (clipped, as a sensor would).
    Action k multiplies the pixel by ``1.1 ** (k - n_actions // 2)``. Reward: the drop in squared error."""

    Options = ExposureOptions

    def __init__(self, n_actions: int = 7, steps: int = 4, low: float = 0.4, high: float = 1.6):
        self.n_actions, self.steps, self.low, self.high = n_actions, steps, low, high

    def factors(self, device: torch.device) -> torch.Tensor:
        return 1.1 ** (torch.arange(self.n_actions, device=device) - self.n_actions // 2).float()

    def start(self, target, generator=None):
        gain = torch.rand(target.shape[0], 1, 1, 1, device=target.device, generator=generator)
        return (target * (self.low + (self.high - self.low) * gain)).clamp(0.0, 1.0)

    def transition(self, state, actions):
        return state * self.factors(state.device)[actions]

    def reward(self, state, next_state, target):
        return 255.0 * ((state - target).square() - (next_state - target).square())

"""The interface every pixel-wise task implements."""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch


class BatchImageEnv(ABC):
    """A batch of images edited by per-pixel agents.

    All tensors live on one device and have shape ``(B, C, H, W)``; an action is one integer per pixel and
    channel in ``[0, n_actions)``. An episode is ``steps`` calls of :meth:`step` after :meth:`reset`.
    The environment knows nothing of the learning algorithm.
    """

    n_actions: int
    steps: int

    @abstractmethod
    def reset(self, target: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Start an episode on a batch of ground-truth images ``(B, C, H, W)``; return the first state."""

    @abstractmethod
    def transition(self, state: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """The next state for ``actions`` ``(B, C, H, W)`` (int64), without touching the episode.

        Greedy inference applies this alone, so it must not depend on the ground truth.
        """

    @abstractmethod
    def reward(self, state: torch.Tensor, next_state: torch.Tensor) -> torch.Tensor:
        """Per-pixel reward ``(B, C, H, W)`` for moving from ``state`` to ``next_state``."""

    def action_rewards(self, state: torch.Tensor) -> torch.Tensor | None:
        """The reward every action would earn at every pixel from ``state``: ``(B, C, A, H, W)``, or ``None``.

        A task whose reward is a cheap closed form of the state (denoising: the drop in squared error against
        the known clean image) returns it, and PPO can then follow the exact gradient of the expected immediate
        reward instead of a sampled estimate (``ppo.all_action_coef``). The default says it cannot.
        """
        return None

    def step(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, bool]:
        """Apply ``actions``; return ``(next state, per-pixel reward, done)``."""
        if self.t >= self.steps:
            raise RuntimeError("step() after the episode ended; call reset() first")
        next_state = self.transition(self.state, actions)
        reward = self.reward(self.state, next_state)
        self.state = next_state
        self.t += 1
        return next_state, reward, self.t >= self.steps

    state: torch.Tensor
    t: int = 0

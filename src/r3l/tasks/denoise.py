"""R3L's task: denoising by residual recovery."""

from __future__ import annotations

import torch

from r3l.config import EnvConfig
from r3l.tasks.base import BatchImageEnv


class ResidualDenoiseEnv(BatchImageEnv):
    """Gaussian denoising where each action adds a small residual to its pixel.

    Images are float in [0, 1]; σ and ``action_step`` are on the 0–255 scale. Action ``k`` adds
    ``(k - n_actions // 2) * action_step / 255``. The reward per pixel is the drop in squared error,
    ``255 · [(I_t − x)² − (I_{t+1} − x)²]``. States are never clipped during an episode; only the final
    output of inference is (see :mod:`r3l.denoiser`).

    Args:
        sigma: a fixed noise level, or ``(low, high)`` to draw one per image uniformly.
        clip_noisy: clip the noisy start image to [0, 1] (off, as in the paper's code and DnCNN's tests).
    """

    def __init__(
        self,
        sigma: float | tuple[float, float] = 25.0,
        n_actions: int = 27,
        action_step: float = 1.0,
        steps: int = 6,
        clip_noisy: bool = False,
    ) -> None:
        self.sigma = sigma
        self.n_actions = n_actions
        self.action_step = action_step
        self.steps = steps
        self.clip_noisy = clip_noisy

    def residual(self, actions: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The [0, 1]-scale residual each action adds."""
        return (actions.to(dtype) - (self.n_actions // 2)) * (self.action_step / 255.0)

    def sigmas(self, batch: int, device: torch.device, generator: torch.Generator | None) -> torch.Tensor:
        """σ per image on the 0–255 scale, shape (B, 1, 1, 1)."""
        if isinstance(self.sigma, (list, tuple)):
            low, high = self.sigma
            u = torch.rand(batch, 1, 1, 1, device=device, generator=generator)
            return low + (high - low) * u
        return torch.full((batch, 1, 1, 1), float(self.sigma), device=device)

    def start(self, target: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The noisy image: ``target`` plus Gaussian noise of the episode's σ (unclipped unless ``clip_noisy``)."""
        sigma = self.sigmas(target.shape[0], target.device, generator)
        noise = torch.randn(target.shape, device=target.device, dtype=target.dtype, generator=generator)
        noisy = target + noise * (sigma / 255.0)
        return noisy.clamp(0.0, 1.0) if self.clip_noisy else noisy

    def transition(self, state: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return state + self.residual(actions, state.dtype)

    def action_rewards(self, state: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``255 · [e² − (e + d_a)²] = −255 · d_a · (2e + d_a)`` for every residual ``d_a``, with ``e = I_t − x``;
        ``(B, C, A, H, W)``."""
        deltas = self.residual(torch.arange(self.n_actions, device=state.device), torch.float32)
        error = (state.float() - target.float()).unsqueeze(2)
        deltas = deltas.view(1, 1, -1, 1, 1)
        return -255.0 * deltas * (2.0 * error + deltas)

    def reward(self, state: torch.Tensor, next_state: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return 255.0 * ((state - target).square() - (next_state - target).square())

    @classmethod
    def from_config(cls, cfg: EnvConfig) -> "ResidualDenoiseEnv":
        sigma = tuple(cfg.sigma) if isinstance(cfg.sigma, list) else cfg.sigma
        return cls(sigma, cfg.n_actions, cfg.action_step, cfg.steps, cfg.clip_noisy)

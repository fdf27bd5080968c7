"""The denoising tasks: R3L's residual recovery and pixelRL's filter actions, over any noise model."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from r3l.degradation import noise_model, noisy_version
from r3l.errors import R3LError
from r3l.schema import positive
from r3l.tasks.base import BatchImageEnv, TaskOptions
from r3l.tasks.filters import bilateral_filter, box_blur, gaussian_blur, median_blur


def checked_noise(noise: str, sigma: float | list[float] | tuple[float, float], where: str = "config key env"):
    """The noise model named ``noise``, with ``sigma`` (a level, or a ``[low, high]`` range) checked against it;
    an error names ``where``'s key."""
    if isinstance(sigma, (list, tuple)):
        if len(sigma) != 2 or not 0 <= sigma[0] <= sigma[1]:
            raise R3LError(f"{where}.sigma: a range must be [low, high] with 0 <= low <= high, got {list(sigma)}")
    elif sigma < 0:
        raise R3LError(f"{where}.sigma: must not be negative, got {sigma}")
    model = noise_model(noise, f"{where}.noise")
    for level in sigma if isinstance(sigma, (list, tuple)) else (sigma,):
        model.check_level(level, f"{where}.sigma")
    return model


@dataclass
class DenoiseOptions(TaskOptions):
    """The options of the denoising tasks. Noise levels are σ on the 0–255 scale for the Gaussian models."""

    sigma: float | list[float] = 25.0
    """Noise level: σ on the 0–255 scale for the Gaussian noise models, the peak for ``poisson``, the density for
    ``salt_pepper``; a pair ``[lo, hi]`` draws a level per image uniformly from that range (blind training)."""
    noise: str = "gaussian"
    """The noise model, one of :data:`r3l.degradation.NOISES`."""
    clip_noisy: bool = False
    """Clip the noisy input to [0, 1]. The paper's code and the literature's tests leave it unclipped."""

    def check(self, where: str = "config key env") -> None:
        super().check(where)
        checked_noise(self.noise, self.sigma, where)

    def check_test_level(self, level: float, key: str) -> None:
        noise_model(self.noise, "config key env.noise").check_level(level, key)

    def level(self) -> float | tuple[float, float]:
        """``sigma`` as the task takes it (a range as a tuple)."""
        return tuple(self.sigma) if isinstance(self.sigma, list) else self.sigma


@dataclass
class ResidualDenoiseOptions(DenoiseOptions):
    action_step: float = positive(1.0)
    """Each action adds ``(k - n_actions // 2) * action_step / 255``."""


@dataclass
class FilterDenoiseOptions(DenoiseOptions):
    n_actions: int = positive(9)
    """pixelRL's 9 filter actions (the only count the task takes)."""
    steps: int = positive(5)


class DenoiseEnv(BatchImageEnv):
    """What every denoising task shares: the noisy start image and the reward.

    Images are float in [0, 1]. The start state is the clean image degraded by the configured noise model
    (:mod:`r3l.degradation`) at ``sigma``, its level, which is fixed or drawn per image uniformly from a
    ``(low, high)`` range (blind training). The reward per pixel and channel is the drop in squared error,
    ``255 · [(I_t − x)² − (I_{t+1} − x)²]``. States are never clipped during an episode; only the final output
    of inference is (see :mod:`r3l.inference.denoiser`).
    """

    Options = DenoiseOptions
    denoises = True

    def __init__(self, sigma: float | tuple[float, float] = 25.0, n_actions: int = 27, steps: int = 6,
                 clip_noisy: bool = False, noise: str = "gaussian"):
        self.sigma, self.n_actions, self.steps, self.clip_noisy = sigma, n_actions, steps, clip_noisy
        self.noise = checked_noise(noise, sigma)

    def sigmas(self, batch: int, device: torch.device, generator: torch.Generator | None) -> torch.Tensor:
        """The noise level per image, shape (B, 1, 1, 1) (σ on the 0–255 scale for Gaussian noise)."""
        if isinstance(self.sigma, (list, tuple)):
            low, high = self.sigma
            u = torch.rand(batch, 1, 1, 1, device=device, generator=generator)
            return low + (high - low) * u
        return torch.full((batch, 1, 1, 1), float(self.sigma), device=device)

    def start(self, target: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The noisy image (unclipped unless ``clip_noisy``)."""
        level = self.sigmas(target.shape[0], target.device, generator)
        noisy = self.noise.apply(target, level, generator)
        return noisy.clamp(0.0, 1.0) if self.clip_noisy else noisy

    def reward(self, state: torch.Tensor, next_state: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return 255.0 * ((state - target).square() - (next_state - target).square())

    def validation_level(self) -> float:
        """The training level, the middle of a range."""
        return sum(self.sigma) / 2 if isinstance(self.sigma, (list, tuple)) else self.sigma

    def test_input(self, image: np.ndarray, name: str, level: float, seed: int) -> np.ndarray:
        """The evaluation protocol's noisy image at ``level`` (:func:`r3l.degradation.noisy_version`, unclipped)."""
        return noisy_version(image, name, level, seed, self.noise.name)

    def action_rewards(self, state: torch.Tensor, target: torch.Tensor) -> torch.Tensor | None:
        """Every action's reward, ``(B, C, A, H, W)``, from the next state under each action."""
        candidates = self.candidates(state)
        if candidates is None:
            return None
        error = (state.float() - target.float()).unsqueeze(2)
        return 255.0 * (error.square() - (candidates.float() - target.float().unsqueeze(2)).square())


class ResidualDenoiseEnv(DenoiseEnv):
    """R3L's task: each action adds a small residual to its pixel.

    Action ``k`` adds ``(k - n_actions // 2) * action_step / 255`` (``action_step`` on the 0–255 scale).

    Args:
        sigma: the noise level, fixed or ``(low, high)`` to draw one per image uniformly.
        clip_noisy: clip the noisy start image to [0, 1] (off, as in the paper's code and DnCNN's tests).
        noise: the noise model (:data:`r3l.degradation.NOISES`), Gaussian by default.
    """

    residual_actions = True

    Options = ResidualDenoiseOptions

    def __init__(
        self,
        sigma: float | tuple[float, float] = 25.0,
        n_actions: int = 27,
        action_step: float = 1.0,
        steps: int = 6,
        clip_noisy: bool = False,
        noise: str = "gaussian",
    ) -> None:
        super().__init__(sigma, n_actions, steps, clip_noisy, noise)
        self.action_step = action_step

    def residual(self, actions: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The [0, 1]-scale residual each action adds."""
        return (actions.to(dtype) - (self.n_actions // 2)) * (self.action_step / 255.0)

    def step_limit(self) -> float:
        return (self.n_actions // 2) * self.action_step

    def transition(self, state: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return state + self.residual(actions, state.dtype)

    def candidates(self, state: torch.Tensor) -> torch.Tensor:
        deltas = self.residual(torch.arange(self.n_actions, device=state.device), state.dtype)
        return state.unsqueeze(2) + deltas.view(1, 1, -1, 1, 1)

    def expected_transition(self, state: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
        """The state plus the policy's mean residual (no ``A``-fold copy of the state)."""
        values = self.residual(torch.arange(self.n_actions, device=state.device))
        return state + (probs * values.view(1, 1, -1, 1, 1)).sum(dim=2)

    def action_rewards(self, state: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``255 · [e² − (e + d_a)²] = −255 · d_a · (2e + d_a)`` for every residual ``d_a``, with ``e = I_t − x``;
        ``(B, C, A, H, W)``."""
        deltas = self.residual(torch.arange(self.n_actions, device=state.device), torch.float32)
        error = (state.float() - target.float()).unsqueeze(2)
        deltas = deltas.view(1, 1, -1, 1, 1)
        return -255.0 * deltas * (2.0 * error + deltas)

    @classmethod
    def from_config(cls, options: ResidualDenoiseOptions) -> "ResidualDenoiseEnv":
        return cls(options.level(), options.n_actions, options.action_step, options.steps, options.clip_noisy,
                   options.noise)


#: pixelRL's denoising actions, in its order (spec, "pixelRL's denoising action set").
FILTER_ACTIONS = ("minus_one", "keep", "plus_one", "gaussian_0.5", "bilateral_0.1", "median", "gaussian_1.5",
                  "bilateral_1.0", "box")


class FilterDenoiseEnv(DenoiseEnv):
    """pixelRL's denoising task: each pixel picks one of 9 edits of its value.

    Actions (:data:`FILTER_ACTIONS`): subtract 1/255, keep, add 1/255, Gaussian blur 5×5 σ 0.5, bilateral filter
    d 5 σ_color 0.1 σ_space 5, median 5×5, Gaussian blur 5×5 σ 1.5, bilateral d 5 σ_color 1.0 σ_space 5, box 5×5.
    Each filter is applied to the whole current image (every channel on its own, :mod:`r3l.tasks.filters`) and the
    pixel takes its own action's result. 5 steps and the denoising reward, as in pixelRL.
    """

    Options = FilterDenoiseOptions
    N_ACTIONS = len(FILTER_ACTIONS)
    reach = 2

    def __init__(self, sigma: float | tuple[float, float] = 25.0, steps: int = 5, clip_noisy: bool = False,
                 noise: str = "gaussian", n_actions: int = N_ACTIONS):
        if n_actions != self.N_ACTIONS:
            raise R3LError(f"config key env.n_actions: the pixelrl_denoise task has {self.N_ACTIONS} actions, "
                           f"got {n_actions}")
        super().__init__(sigma, self.N_ACTIONS, steps, clip_noisy, noise)

    def candidates(self, state: torch.Tensor) -> torch.Tensor:
        step = 1.0 / 255.0
        outcomes = [
            state - step, state, state + step,
            gaussian_blur(state, 0.5), bilateral_filter(state, 5, 0.1, 5.0), median_blur(state, 5),
            gaussian_blur(state, 1.5), bilateral_filter(state, 5, 1.0, 5.0), box_blur(state, 5),
        ]
        return torch.stack(outcomes, dim=2)

    def transition(self, state: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return self.candidates(state).gather(2, actions.unsqueeze(2)).squeeze(2)

    @classmethod
    def from_config(cls, options: FilterDenoiseOptions) -> "FilterDenoiseEnv":
        return cls(options.level(), options.steps, options.clip_noisy, options.noise, options.n_actions)

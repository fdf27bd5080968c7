"""The interface every pixel-wise task implements."""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from r3l.errors import R3LError
from r3l.metrics import batch_psnr
from r3l.schema import positive


@dataclass
class TaskOptions:
    """The options of a task, its ``env.*`` config keys, which checkpoints store: every task has these two; a task
    with more declares a subclass as its :attr:`BatchImageEnv.Options`, and each is then a config key."""

    n_actions: int = positive(27)
    """Actions per pixel (and channel): odd, so that the middle one can mean "no change"."""
    steps: int = positive(6)
    """Steps per episode, and of inference."""

    def check(self, where: str = "config key env") -> None:
        """What the field types cannot say, as an error naming the key (``where``: the section's name)."""
        if self.n_actions % 2 == 0:
            raise R3LError(f"{where}.n_actions: must be odd so that one action means 'no change', got {self.n_actions}")

    def check_test_level(self, level: float, key: str) -> None:
        """An error naming ``key`` if ``level`` cannot be a test level of this task (:meth:`BatchImageEnv.test_input`'s;
        a task without levels takes any)."""

    def values(self) -> dict[str, Any]:
        """The options as keyword arguments (and as a checkpoint stores them), whatever else the object holds."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(type(self)) if f.name != "name"}


@dataclass
class Episode:
    """One episode on a batch: the ground truth ``target`` it is scored against, the current ``state`` and the
    number of steps taken ``t``. :meth:`BatchImageEnv.step` advances it; nothing else holds episode state."""

    target: torch.Tensor
    state: torch.Tensor
    t: int = 0


class BatchImageEnv(ABC):
    """A batch of images edited by per-pixel agents.

    All tensors live on one device and have shape ``(B, C, H, W)``; an action is one integer per pixel and
    channel in ``[0, n_actions)``. An episode is ``steps`` calls of :meth:`step` after :meth:`reset`. The
    environment knows nothing of the learning algorithm, and the ground truth reaches it as an argument only.

    A task implements :meth:`start`, :meth:`transition` and :meth:`reward`, and is named in a config by its
    registry name or a dotted path (``env.name: mypackage.tasks:MyTask``, see :mod:`r3l.tasks`).
    """

    Options: ClassVar[type[TaskOptions]] = TaskOptions
    """The dataclass of this task's options (``env.*``); :meth:`from_config` receives one."""
    n_actions: int
    steps: int
    reach: int = 0
    """How many pixels away :meth:`transition` reads (a 5×5 filter: 2); tiled inference widens its margins by it."""
    denoises: ClassVar[bool] = False
    """Whether its start state is the clean image with noise of a level added (a denoising task): evaluation then
    adds the noise ``r3l eval --noise/--sigma`` names, and inference warns when that level lies outside the
    training levels; otherwise each test image's start is the task's :meth:`test_input`."""
    residual_actions: ClassVar[bool] = False
    """Whether an action adds a residual to the pixel, so that a policy head can start from a denoiser's residual
    (``model.head_init: residual``), and the ONNX export (``r3l export``, the onnxruntime engine) covers its
    policy."""

    @classmethod
    def from_config(cls, options: TaskOptions) -> "BatchImageEnv":
        """The task for its options: a config's ``env`` section in training, a checkpoint's task options in
        inference. By default ``cls(**options.values())``: every option is a keyword argument."""
        return cls(**options.values())

    @abstractmethod
    def start(self, target: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The first state of an episode on ground-truth images ``target`` (denoising: the noisy image).

        Supervised baselines learn to map this state to ``target`` directly."""

    @abstractmethod
    def transition(self, state: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """The next state for ``actions`` ``(B, C, H, W)`` (int64).

        Greedy inference applies this alone, so it must not depend on the ground truth.
        """

    @abstractmethod
    def reward(self, state: torch.Tensor, next_state: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-pixel reward ``(B, C, H, W)`` for moving from ``state`` to ``next_state`` towards ``target``."""

    def test_input(self, image: np.ndarray, name: str, level: float, seed: int) -> np.ndarray:
        """The start state for the test image ``name`` (``(H, W, C)`` float in [0, 1]) that evaluation and
        validation use: the same for every method and run. By default :meth:`start` with a CPU generator seeded by
        ``seed`` and the name; ``level`` is the evaluation's level (the denoising tasks' noise level), which a
        task without one ignores."""
        from r3l.degradation import image_generator, on_tensor

        return on_tensor(lambda x: self.start(x, image_generator(name, seed)), image)

    def episode_metrics(self, start: torch.Tensor, end: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """What the trainer logs of an episode (or a supervised step) from its first state ``start`` to its last
        ``end``, against ``target`` (all ``(B, C, H, W)``), as device-side scalars: by default the mean PSNR
        gain, ``charts/psnr_gain`` (dB)."""
        return {"charts/psnr_gain": (batch_psnr(end, target) - batch_psnr(start, target)).mean()}

    def validation_level(self) -> float:
        """The level :meth:`test_input` gets in validation when the config names none (``data.val_sigma`` 0):
        by default 0, which a task without levels ignores."""
        return 0.0

    def step_limit(self) -> float | None:
        """The largest change one step can make to a pixel, in gray levels (0–255), or ``None`` when a step's
        change has no fixed bound (a filter's): the scale of ``r3l denoise --explain``'s step maps."""
        return None

    def candidates(self, state: torch.Tensor) -> torch.Tensor | None:
        """The next state under every action, ``(B, C, A, H, W)``, or ``None`` if the task does not enumerate
        them. A task that does gets :meth:`expected_transition` (``r3l denoise --decode expected``) and, for
        denoising, the all-action reward of every action."""
        return None

    def expected_transition(self, state: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
        """The next state averaged over the policy's probabilities ``probs`` ``(B, C, A, H, W)``."""
        candidates = self.candidates(state)
        if candidates is None:
            raise NotImplementedError(f"{type(self).__name__} does not enumerate its actions' outcomes")
        return (probs * candidates).sum(dim=2)

    def action_rewards(self, state: torch.Tensor, target: torch.Tensor) -> torch.Tensor | None:
        """The reward every action would earn at every pixel from ``state``: ``(B, C, A, H, W)``, or ``None``.

        A task whose reward is a cheap closed form of the state (denoising: the drop in squared error against
        the known clean image) returns it, and PPO can then follow the exact gradient of the expected immediate
        reward instead of a sampled estimate (``ppo.all_action_coef``). The default says it cannot.
        """
        return None

    def reset(self, target: torch.Tensor, generator: torch.Generator | None = None) -> Episode:
        """Start an episode on ``target``."""
        return Episode(target, self.start(target, generator))

    def step(self, episode: Episode, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, bool]:
        """Apply ``actions`` to ``episode``; return ``(next state, per-pixel reward, done)``."""
        if episode.t >= self.steps:
            raise RuntimeError("step() after the episode ended; call reset() first")
        next_state = self.transition(episode.state, actions)
        reward = self.reward(episode.state, next_state, episode.target)
        episode.state = next_state
        episode.t += 1
        return next_state, reward, episode.t >= self.steps

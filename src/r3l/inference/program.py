"""The inference program: a network, its task, the decoding and the number of steps, as one module.

Both engines run this one program: PyTorch calls it (``r3l.inference.denoiser.Denoiser``), onnxruntime runs its
export (``r3l.inference.engines``). For a policy (R3L), ``steps`` times "logits → the greedy action (or the
policy's expected next state) → the task's transition"; for a one-pass network (R3N, DnCNN, IRCNN), one pass.
The self-ensemble (:func:`ensemble_mean`) is the same for both.
"""

from __future__ import annotations

import contextlib
from typing import Callable

import torch
from torch import nn

from r3l.errors import R3LError
from r3l.tasks.base import BatchImageEnv

DECODINGS = ("greedy", "expected")


def ensemble_mean(run: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """The self-ensemble: ``run`` on the 8 flips and 90° rotations of ``x`` ``(B, C, H, W)``, each estimate turned
    back and clipped to [0, 1], averaged."""
    total = None
    for k in range(4):
        for flip in (False, True):
            view = torch.rot90(x, k, dims=(2, 3))
            out = run((view.flip(3) if flip else view).contiguous()).clamp(0.0, 1.0)
            out = torch.rot90(out.flip(3) if flip else out, -k, dims=(2, 3))
            total = out if total is None else total + out
    return total / 8


class InferenceProgram(nn.Module):
    """``(B, C, H, W)`` noisy images in [0, 1] → the denoised batch, clipped to [0, 1].

    Args:
        net: the network; a policy's (``env`` given) must have ``policy_logits(state)`` → ``(B, C, A, H, W)``, and
            may have ``greedy_actions(state)`` → ``(B, C, H, W)``, their argmax made cheaper (greedy decoding).
        env: the policy's task (its ``transition`` and, for ``expected`` decoding, ``expected_transition``), or
            ``None`` for a one-pass network.
        channels: the image channels the network takes.
        decoding: ``greedy`` (the argmax action, the paper's) or ``expected`` (the policy's mean next state).
        steps: policy steps (default: the task's).
        self_ensemble: average over the 8 flips and rotations.

    ``act`` is what each pass calls (``torch.compile`` may replace it) and ``autocast`` a context factory around
    each call of it (PyTorch's mixed precision); exported programs keep the defaults, the network in float32.
    """

    def __init__(self, net: nn.Module, env: BatchImageEnv | None, channels: int, decoding: str = "greedy",
                 steps: int | None = None, self_ensemble: bool = False):
        super().__init__()
        if decoding not in DECODINGS:
            raise R3LError(f"decoding {decoding!r}: expected one of {', '.join(DECODINGS)}")
        if env is None and (decoding != "greedy" or steps is not None):
            what = f"decoding {decoding!r}" if decoding != "greedy" else "steps"
            raise R3LError(f"{what} applies to policies (R3L); this network makes one pass")
        if env is not None and not callable(getattr(net, "policy_logits", None)):
            raise R3LError(f"{type(net).__name__} is registered as a policy but has no policy_logits(state)")
        self.net, self.env, self.channels = net, env, channels
        self.decoding, self.self_ensemble = decoding, self_ensemble
        self.steps = (steps or env.steps) if env is not None else 1
        # A bound method, not the module: the parameters stay registered once, as net.<name> (the exported
        # graph's initializer names, which the onnxruntime engine fills with a network's weights). A policy that
        # names its greedy action directly (``greedy_actions(state)`` → ``(B, C, H, W)``) is asked for it instead of
        # all its logits.
        greedy = getattr(net, "greedy_actions", None) if env is not None and decoding == "greedy" else None
        self.acts_directly = callable(greedy)
        self.act: Callable[[torch.Tensor], torch.Tensor] = (
            greedy if self.acts_directly else net.policy_logits if env is not None else net.forward)
        self.autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext

    @property
    def policy(self) -> bool:
        return self.env is not None

    def with_net(self, net: nn.Module, self_ensemble: bool | None = None) -> InferenceProgram:
        """The same program on another network of the same architecture (``self_ensemble`` changed if given)."""
        ensemble = self.self_ensemble if self_ensemble is None else self_ensemble
        steps = self.steps if self.policy else None
        return InferenceProgram(net, self.env, self.channels, self.decoding, steps, ensemble)

    def step(self, state: torch.Tensor) -> torch.Tensor:
        """One policy step from ``state`` ``(B, C, H, W)``."""
        with self.autocast():
            out = self.act(state)
        if self.decoding == "greedy":
            return self.env.transition(state, out if self.acts_directly else out.argmax(dim=2))
        return self.env.expected_transition(state, torch.softmax(out.float(), dim=2))

    def trajectory(self, x: torch.Tensor) -> list[torch.Tensor]:
        """A policy's unclipped estimate after each step: ``steps + 1`` tensors ``(B, C, H, W)``, ``x`` first."""
        states = [x]
        for _ in range(self.steps):
            states.append(self.step(states[-1]))
        return states

    def once(self, x: torch.Tensor) -> torch.Tensor:
        """The unclipped estimate of one view (no self-ensemble)."""
        if self.policy:
            state = x
            for _ in range(self.steps):
                state = self.step(state)
            return state
        with self.autocast():
            return self.act(x).float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ensemble_mean(self.once, x) if self.self_ensemble else self.once(x).clamp(0.0, 1.0)

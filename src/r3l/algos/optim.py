"""Optimiser helpers shared by every training algorithm: Adam, the learning-rate schedule, guarded steps."""

from __future__ import annotations

import contextlib
import inspect
import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from r3l.schema import non_negative, positive

Schedule = Literal["poly", "cosine", "constant"]


@dataclass
class LRSchedule:
    """The learning rate and its schedule, shared by every algorithm's section."""

    lr: float = positive(3e-4)
    lr_schedule: Schedule = "cosine"
    """``poly`` (lr·(1−e/E)^power, the original's), ``cosine`` or ``constant``."""
    lr_power: float = non_negative(0.9)
    lr_warmup: int = non_negative(0)
    """Episodes of linear warm-up from ``lr / lr_warmup`` to the schedule (fine-tuning a pre-trained network:
    Adam's first steps move every weight by about ``lr``, whatever its gradient)."""


def make_adam(net: nn.Module, lr: float, eps: float = 1e-8, weight_decay: float = 0.0,
              lr_scales: dict[str, float] | None = None) -> torch.optim.Adam:
    """Adam with its fused kernel: one launch for every parameter, its step counter on the parameters' device,
    and the skip-on-non-finite input that :func:`guarded_step` uses, so that a step never syncs.

    ``lr_scales`` maps a top-level submodule's name (``encoder``, ``value``, …) to a multiplier of the learning
    rate for its parameters: then each top-level submodule is a parameter group (``group``: its name), whose
    ``lr_scale`` :func:`set_lr` applies."""
    fused = {"fused": True} if _FUSED_ADAM else {}  # older torch releases: the guarded step's slower path
    if not lr_scales:
        return torch.optim.Adam(net.parameters(), lr=lr, eps=eps, weight_decay=weight_decay, **fused)
    groups: dict[str, list[nn.Parameter]] = {}
    for name, param in net.named_parameters():
        groups.setdefault(name.split(".")[0], []).append(param)
    param_groups = [{"params": ps, "group": g, "lr": lr * lr_scales.get(g, 1.0), "lr_scale": lr_scales.get(g, 1.0)}
                    for g, ps in groups.items()]
    return torch.optim.Adam(param_groups, lr=lr, eps=eps, weight_decay=weight_decay, **fused)


_FUSED_ADAM = "fused" in inspect.signature(torch.optim.Adam).parameters and \
    tuple(int(p) for p in torch.__version__.split("+")[0].split(".")[:2]) >= (2, 4)
"""Fused Adam runs on the CPU from torch 2.4; earlier releases that r3l admits take the unfused path."""


def learning_rate(cfg: LRSchedule, episode: int, episodes: int) -> float:
    """The learning rate for ``episode`` (0-based) of ``episodes``; a pure function, so resuming needs no state."""
    progress = min(episode / max(episodes, 1), 1.0)
    warmup = min(1.0, (episode + 1) / cfg.lr_warmup) if cfg.lr_warmup else 1.0
    if cfg.lr_schedule == "poly":
        return warmup * cfg.lr * (1.0 - progress) ** cfg.lr_power
    if cfg.lr_schedule == "cosine":
        return warmup * cfg.lr * 0.5 * (1.0 + math.cos(math.pi * progress))
    return warmup * cfg.lr


def set_lr(optimizer: torch.optim.Optimizer, lr: float, only: str | None = None) -> None:
    """Every group's learning rate: ``lr`` times its ``lr_scale``; with ``only``, zero for every group but that
    one (see :func:`make_adam`)."""
    for group in optimizer.param_groups:
        keep = only is None or group.get("group") == only
        group["lr"] = lr * group.get("lr_scale", 1.0) if keep else 0.0


def guarded_step(optimizer: torch.optim.Optimizer, finite: torch.Tensor) -> None:
    """``optimizer.step()`` that changes nothing (weights, moments, step count) where ``finite`` is false.

    Fused optimisers take the decision on the device through their ``found_inf`` input (the protocol
    ``torch.amp.GradScaler`` uses), inside the one update kernel. For any other optimiser the parameters and
    its state are snapshotted and restored with ``torch.where``. Neither reads a value back to the host.
    """
    if getattr(optimizer, "_step_supports_amp_scaling", False):
        optimizer.found_inf = (~finite).float()
        try:
            optimizer.step()
        finally:
            del optimizer.found_inf
        return
    params = [p for group in optimizer.param_groups for p in group["params"]]
    saved_params = [p.detach().clone() for p in params]
    saved_state = [{k: v.clone() for k, v in optimizer.state[p].items() if torch.is_tensor(v)} for p in params]
    optimizer.step()
    with torch.no_grad():
        for p, old_p, old_state in zip(params, saved_params, saved_state):
            p.copy_(torch.where(finite, p, old_p))
            for key, value in optimizer.state[p].items():
                if torch.is_tensor(value):
                    previous = old_state.get(key, torch.zeros_like(value))
                    value.copy_(torch.where(finite, value, previous))


def clip_gradients(net: nn.Module, max_grad_norm: float) -> torch.Tensor:
    max_norm = max_grad_norm if max_grad_norm > 0 else float("inf")
    return nn.utils.clip_grad_norm_(net.parameters(), max_norm)


class LossScale:
    """Dynamic loss scaling for fp16 training, kept in two device tensors so that it never syncs.

    The loss is multiplied by ``scale`` before backward and the gradients divided by it after. When the
    gradients overflow, the step is skipped (by :func:`guarded_step`) and the scale halved; after
    ``growth_interval`` good steps in a row it doubles. The constants are ``torch.amp.GradScaler``'s; r3l keeps
    its own copy so that the overflow test is the same one that guards every step, and so that the state is
    two plain tensors a checkpoint can hold.
    """

    def __init__(self, device: torch.device, init_scale: float = 2.0**16, growth_interval: int = 2000):
        self.scale = torch.full((), init_scale, device=device)
        self.good_steps = torch.zeros((), device=device, dtype=torch.int64)
        self.growth_interval = growth_interval

    def unscale_(self, net: nn.Module) -> None:
        grads = [p.grad for p in net.parameters() if p.grad is not None]
        if grads:
            torch._foreach_div_(grads, self.scale)

    def update(self, overflow: torch.Tensor) -> None:
        grown = self.good_steps + 1
        grow = ~overflow & (grown >= self.growth_interval)
        self.scale.copy_(torch.where(overflow, self.scale * 0.5, torch.where(grow, self.scale * 2.0, self.scale)))
        self.good_steps.copy_(torch.where(overflow | grow, torch.zeros_like(grown), grown))

    def state_dict(self) -> dict[str, float]:
        return {"scale": float(self.scale), "good_steps": int(self.good_steps)}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.scale.fill_(float(state["scale"]))
        self.good_steps.fill_(int(state["good_steps"]))


class Precision:
    """How the network's arithmetic runs in training, and the guarded optimiser step that goes with it.

    ``fp32``: plain. ``bf16``: forward passes under bf16 autocast. ``fp16``: fp16 autocast with
    :class:`LossScale`. Losses, log-probabilities, GAE and Adam always run in fp32.
    """

    def __init__(self, device: torch.device, precision: str):
        self.device, self.name = device, precision
        self.loss_scale = LossScale(device) if precision == "fp16" else None

    def autocast(self) -> contextlib.AbstractContextManager:
        return autocast(self.device, self.name)

    def step(
        self, loss: torch.Tensor, net: nn.Module, optimizer: torch.optim.Optimizer, max_grad_norm: float
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Backward, clip, and an Adam step undone on the device when anything is non-finite.

        Returns the gradient norm, whether the step was a bad update (a non-finite loss or gradient that
        loss scaling does not explain) and whether it was an fp16 overflow (skipped, scale halved).
        """
        optimizer.zero_grad(set_to_none=True)
        finite_loss = torch.isfinite(loss)
        scale = self.loss_scale
        (loss if scale is None else loss * scale.scale).backward()
        if scale is not None:
            scale.unscale_(net)
        grad_norm = clip_gradients(net, max_grad_norm)
        ok = finite_loss & torch.isfinite(grad_norm)
        guarded_step(optimizer, ok)
        if scale is None:
            return grad_norm, ~ok, torch.zeros_like(ok)
        # A finite loss with non-finite gradients is an overflow while the scale is above 1; below 1 the
        # gradients themselves are broken and it counts as a bad update.
        overflow = finite_loss & ~ok & (scale.scale >= 1.0)
        scale.update(~ok)
        return grad_norm, ~ok & ~overflow, overflow


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The context the network's forward passes run in: bf16 or fp16 autocast, or nothing for fp32."""
    if precision in ("bf16", "fp16"):
        dtype = torch.bfloat16 if precision == "bf16" else torch.float16
        return torch.autocast(device_type=device.type, dtype=dtype)
    return contextlib.nullcontext()


def resolve_precision(device: torch.device, precision: str) -> str:
    """``auto``: bf16 on GPUs that support it, fp16 on older CUDA GPUs; on a CPU, bf16 where it multiplies bf16
    in hardware (AVX512-BF16 or AMX: learning curves as fp32's, with channels-last 2.7–2.8× the episodes per
    minute; docs/performance.md), else fp32."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    from r3l.runtime import cpu_has_native_bf16

    return "bf16" if cpu_has_native_bf16() else "fp32"

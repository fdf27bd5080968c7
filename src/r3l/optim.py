"""Optimiser helpers shared by every training algorithm: Adam, the learning-rate schedule, guarded steps."""

from __future__ import annotations

import contextlib
import math
from typing import Protocol

import torch
from torch import nn


class ScheduleConfig(Protocol):
    lr: float
    lr_schedule: str
    lr_power: float


def make_adam(net: nn.Module, lr: float, eps: float = 1e-8, weight_decay: float = 0.0) -> torch.optim.Adam:
    # capturable keeps Adam's step counter on the GPU, so neither the step nor guarded_step syncs.
    on_cuda = next(net.parameters()).is_cuda
    return torch.optim.Adam(net.parameters(), lr=lr, eps=eps, weight_decay=weight_decay, capturable=on_cuda)


def learning_rate(cfg: ScheduleConfig, episode: int, episodes: int) -> float:
    """The learning rate for ``episode`` (0-based) of ``episodes``; a pure function, so resuming needs no state."""
    progress = min(episode / max(episodes, 1), 1.0)
    if cfg.lr_schedule == "poly":
        return cfg.lr * (1.0 - progress) ** cfg.lr_power
    if cfg.lr_schedule == "cosine":
        return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * progress))
    return cfg.lr


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def guarded_step(optimizer: torch.optim.Optimizer, finite: torch.Tensor) -> None:
    """``optimizer.step()`` whose effect is undone on the device where ``finite`` is false.

    Parameters and the optimiser's state are snapshotted and restored with ``torch.where``, so a non-finite
    loss or gradient never reaches the weights, and no value is read back to the host. r3l's networks are
    small (0.3–0.6 M parameters), so the copies cost little next to the convolutions.
    """
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


def clipped_backward(loss: torch.Tensor, net: nn.Module, max_grad_norm: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Backward, optional gradient-norm clipping (0: off); returns the norm and whether loss and norm are finite."""
    loss.backward()
    max_norm = max_grad_norm if max_grad_norm > 0 else float("inf")
    grad_norm = nn.utils.clip_grad_norm_(net.parameters(), max_norm)
    return grad_norm, torch.isfinite(loss) & torch.isfinite(grad_norm)


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The context the network's forward passes run in: bf16 autocast, or nothing for fp32."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def resolve_precision(device: torch.device, precision: str) -> str:
    if precision != "auto":
        return precision
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return "bf16"
    return "fp32"

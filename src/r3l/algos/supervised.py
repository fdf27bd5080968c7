"""Supervised training of the deterministic baselines (R3N, DnCNN): MSE to the clean image."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from r3l.algos.base import Algorithm
from r3l.algos.optim import LRSchedule
from r3l.schema import non_negative, positive

#: ``log_mse``'s floor on an image's MSE (50 dB PSNR): a clean training image (σ 0 in a blind range) whose
#: estimate is nearly exact does not get an unbounded weight.
LOG_MSE_FLOOR = 1e-5


@dataclass
class SupervisedConfig(LRSchedule):
    """Training of the deterministic baselines (``model.name`` ``r3n`` or ``dncnn``) with MSE."""

    lr: float = positive(1e-3)
    max_grad_norm: float = non_negative(0.0)
    weight_decay: float = non_negative(0.0)
    loss: Literal["mse", "log_mse"] = "mse"
    """``mse``: the batch's mean squared error. ``log_mse``: the mean over images of ``log(MSE_i + 1e-5)``, which
    maximises the mean PSNR and so weighs each image by its own error (a blind model's lightly noisy images count
    as much as its heavily noisy ones; under ``mse`` the heavy noise dominates)."""


class Supervised(Algorithm):
    """One Adam step per batch on ``MSE(net(start), clean)``, where ``start`` is the task's first state (for
    denoising, the noisy image drawn exactly as R3L's episodes draw it). ``train.compile: auto`` leaves it eager
    (only the network can be compiled, on request)."""

    Options = SupervisedConfig
    """Its options: the config's ``algo`` section with ``name: supervised``."""
    cfg: SupervisedConfig

    def loss(self, estimate: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
        """``supervised.loss``: the batch's MSE, or the mean of the images' log-MSE (the mean PSNR's objective)."""
        if self.cfg.loss == "mse":
            return F.mse_loss(estimate, clean)
        per_image = (estimate - clean).square().flatten(1).mean(1)
        return torch.log(per_image + LOG_MSE_FLOOR).mean()

    def learn(self, clean: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """Train on one batch ``(B, C, H, W)``; returns device-side diagnostics."""
        noisy = self.env.start(clean, generator)  # the global batch's noise, as one process would draw it
        if self.world.active:
            shard = self.world.shard(clean.shape[0])
            clean, noisy = clean[shard], noisy[shard]
        with self.precision.autocast():
            estimate = self.forward(noisy).float()
        loss = self.loss(estimate, clean)
        grad_norm, bad, overflow = self.precision.step(loss, self.net, self.optimizer, self.cfg.max_grad_norm)
        skipped = bad.float()
        with torch.no_grad():
            metrics = self.env.episode_metrics(noisy, estimate, clean)
        return {
            f"losses/{self.cfg.loss}": loss.detach(), "losses/grad_norm": grad_norm.detach(), **metrics,
            "health/skipped_steps": skipped, "health/bad_update": skipped, "health/scale_overflows": overflow.float(),
        }

"""Supervised training of the deterministic baselines (R3N, DnCNN): MSE to the clean image."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from r3l.algos.optim import Precision, make_adam
from r3l.config import Config
from r3l.distributed import SINGLE, World
from r3l.metrics import batch_psnr
from r3l.tasks.base import BatchImageEnv


#: ``log_mse``'s floor on an image's MSE (50 dB PSNR): a clean training image (σ 0 in a blind range) whose
#: estimate is nearly exact does not get an unbounded weight.
LOG_MSE_FLOOR = 1e-5


class Supervised:
    """One Adam step per batch on ``MSE(net(start), clean)``, where ``start`` is the task's first state (for
    denoising, the noisy image drawn exactly as R3L's episodes draw it)."""

    compiles_whole_update = False
    """``train.compile: auto`` leaves it eager (only the network can be compiled, on request)."""

    def __init__(self, net: nn.Module, cfg: Config, env: BatchImageEnv, precision: Precision | None = None,
                 forward=None, compile: str = "off", mode: str = "default", world: World = SINGLE):
        self.net, self.cfg, self.env, self.world = net, cfg.supervised, env, world
        self.lr_config = cfg.supervised
        """The learning-rate schedule's fields (``lr``, ``lr_schedule``, ``lr_power``)."""
        self.optimizer = make_adam(net, cfg.supervised.lr, weight_decay=cfg.supervised.weight_decay)
        self.precision = precision or Precision(next(net.parameters()).device, "fp32")
        self.forward = net if forward is None else forward

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
            gain = (batch_psnr(estimate, clean) - batch_psnr(noisy, clean)).mean()
        return {
            f"losses/{self.cfg.loss}": loss.detach(), "losses/grad_norm": grad_norm.detach(), "charts/psnr_gain": gain,
            "health/skipped_steps": skipped, "health/bad_update": skipped, "health/scale_overflows": overflow.float(),
        }

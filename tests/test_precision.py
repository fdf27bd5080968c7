"""bf16 autocast against fp32 on a small network (CPU autocast; the same code path runs on CUDA)."""

import pytest
import torch

from conftest import tiny_config
from r3l.config import from_dict
from r3l.networks import ActorCritic
from r3l.optim import autocast, resolve_precision
from r3l.ppo import log_prob_entropy
from r3l.trainer import Trainer

CPU = torch.device("cpu")


def test_bf16_forward_agrees_with_fp32():
    torch.manual_seed(0)
    net = ActorCritic(1, 27, 16, "small")
    with torch.no_grad():
        net.policy[-1].weight.normal_(0, 0.05)  # logits with real structure, not the near-constant start
    state = torch.rand(4, 1, 48, 48)
    logits32, value32 = net(state)
    with autocast(CPU, "bf16"):
        logits16, value16 = net(state)
    assert logits16.dtype == torch.bfloat16
    # Measured on this network: max |Δlogit| 0.021 for logits up to 6.9; 99.4% of argmax actions agree.
    assert (logits32 - logits16.float()).abs().max() < 0.05
    assert (logits32.argmax(2) == logits16.float().argmax(2)).float().mean() > 0.98
    actions = logits32.argmax(2)
    logp32, _ = log_prob_entropy(logits32, actions)
    logp16, _ = log_prob_entropy(logits16, actions)
    assert logp16.dtype == torch.float32
    assert (logp32 - logp16).abs().mean() < 0.005
    assert (value32 - value16.float()).abs().max() < 0.01


def test_bf16_training_episode_matches_fp32_statistics(tiny_folder):
    results = {}
    for precision in ("fp32", "bf16"):
        values = tiny_config(str(tiny_folder / "train"), "", episodes=2)
        values["train"].update(precision=precision, log_every=2)
        trainer = Trainer(from_dict(values), tiny_folder / precision)
        assert trainer.precision == precision
        results[precision] = trainer.train()
    a, b = results["fp32"], results["bf16"]
    for key in ("charts/episode_reward", "charts/psnr_gain", "losses/entropy"):
        assert b[key] == pytest.approx(a[key], rel=0.05, abs=0.02), key
    assert b["health/bad_update"] == 0


def test_auto_precision_is_fp32_on_the_cpu():
    assert resolve_precision(CPU, "auto") == "fp32"
    assert resolve_precision(CPU, "bf16") == "bf16"

"""bf16/fp16 autocast and torch.compile against fp32 eager on a small network (CPU; the same code paths run on
CUDA)."""

import pytest
import torch

from conftest import tiny_config
from r3l.algos.optim import LossScale, Precision, autocast, make_adam, resolve_precision
from r3l.algos.ppo import log_prob_entropy
from r3l.config import from_dict
from r3l.models.checkpoint import load_checkpoint
from r3l.models.networks import ActorCritic
from r3l.training.trainer import Trainer

CPU = torch.device("cpu")


# Measured on this network (logits up to 6.9): bf16 max |Δlogit| 0.021, 99.4% of argmax actions agree;
# fp16 (3 more mantissa bits, slow on the CPU, so a smaller input) max |Δlogit| 0.0026, 99.95% agree, max
# |Δvalue| 1.2e-5.
@pytest.mark.parametrize(
    "precision, dtype, size, logit_tol, agree, value_tol",
    [("bf16", torch.bfloat16, (4, 1, 48, 48), 0.05, 0.98, 0.01),
     ("fp16", torch.float16, (2, 1, 32, 32), 0.01, 0.995, 0.002)],
)
def test_autocast_forward_agrees_with_fp32(precision, dtype, size, logit_tol, agree, value_tol):
    torch.manual_seed(0)
    net = ActorCritic(1, 27, 16, "small")
    with torch.no_grad():
        net.policy[-1].weight.normal_(0, 0.05)  # logits with real structure, not the near-constant start
    state = torch.rand(*size)
    logits32, value32 = net(state)
    with autocast(CPU, precision):
        logits16, value16 = net(state)
        features = net.encoder(state)
    assert features.dtype == dtype  # the convolutions really ran in the low precision
    assert logits16.dtype == value16.dtype == torch.float32  # the heads' last convolutions run in fp32
    assert (logits32 - logits16.float()).abs().max() < logit_tol
    assert (logits32.argmax(2) == logits16.float().argmax(2)).float().mean() > agree
    actions = logits32.argmax(2)
    logp32, _ = log_prob_entropy(logits32, actions)
    logp16, _ = log_prob_entropy(logits16, actions)
    assert logp16.dtype == torch.float32
    assert (logp32 - logp16).abs().mean() < 0.005
    assert (value32 - value16.float()).abs().max() < value_tol


def test_bf16_training_episode_matches_fp32_statistics(tiny_folder):
    results = {}
    for precision in ("fp32", "bf16"):
        values = tiny_config(str(tiny_folder / "train"), "", episodes=2)
        values["train"].update(precision=precision, log_every=2)
        trainer = Trainer(from_dict(values), tiny_folder / precision)
        assert trainer.precision.name == precision
        results[precision] = trainer.train()
    a, b = results["fp32"], results["bf16"]
    for key in ("charts/episode_reward", "charts/psnr_gain", "losses/entropy"):
        assert b[key] == pytest.approx(a[key], rel=0.05, abs=0.02), key
    assert b["health/bad_update"] == 0


def test_auto_precision_on_the_cpu_is_bf16_where_the_cpu_has_bf16(monkeypatch):
    import r3l.runtime

    assert resolve_precision(CPU, "bf16") == "bf16"
    assert resolve_precision(CPU, "fp16") == "fp16"
    assert resolve_precision(CPU, "fp32") == "fp32"
    for native, expected in [(True, "bf16"), (False, "fp32")]:
        monkeypatch.setattr(r3l.runtime, "cpu_has_native_bf16", lambda native=native: native)
        assert resolve_precision(CPU, "auto") == expected


def test_cpu_bf16_detection_reads_the_cpu(monkeypatch):
    from r3l.runtime import cpu_has_native_bf16

    flags = {"_is_avx512_bf16_supported": False, "_is_amx_tile_supported": False}
    for name in flags:
        monkeypatch.setattr(torch.cpu, name, lambda name=name: flags[name])
    assert not cpu_has_native_bf16()
    flags["_is_amx_tile_supported"] = True
    assert cpu_has_native_bf16()


def _linear_step(precision: Precision, loss_value: float | None = None, grad_scale: float = 1.0):
    """One guarded step of a 1-parameter model whose loss is ``grad_scale · w`` (or a constant non-finite)."""
    torch.manual_seed(0)
    net = torch.nn.Linear(1, 1, bias=False)
    opt = make_adam(net, 0.1)
    before = net.weight.detach().clone()
    loss = (net.weight * grad_scale).sum()
    if loss_value is not None:
        loss = loss * 0 + loss_value
    grad_norm, bad, overflow = precision.step(loss, net, opt, max_grad_norm=0.0)
    return net.weight.detach() - before, bool(bad), bool(overflow)


def test_loss_scale_skips_overflows_and_adapts():
    precision = Precision(CPU, "fp16")
    scale = precision.loss_scale
    assert float(scale.scale) == 2.0**16
    # A gradient that overflows once multiplied by the scale: skipped as an overflow, scale halved.
    change, bad, overflow = _linear_step(precision, grad_scale=1e34)
    assert overflow and not bad and change.abs().max() == 0
    assert float(scale.scale) == 2.0**15
    # A normal step goes through; the scale grows after growth_interval good steps in a row.
    change, bad, overflow = _linear_step(precision)
    assert not overflow and not bad and change.abs().max() > 0
    scale.growth_interval = 2
    _linear_step(precision)
    assert float(scale.scale) == 2.0**16 and int(scale.good_steps) == 0
    # A non-finite loss is a bad update, not an overflow.
    change, bad, overflow = _linear_step(precision, loss_value=float("nan"))
    assert bad and not overflow and change.abs().max() == 0
    # Once the scale is below 1, non-finite gradients can no longer be an overflow: a bad update.
    scale.scale.fill_(0.5)
    change, bad, overflow = _linear_step(precision, grad_scale=float("inf"))
    assert bad and not overflow and change.abs().max() == 0


def test_loss_scale_state_round_trips():
    a = LossScale(CPU)
    a.update(torch.tensor(True))
    a.update(torch.tensor(False))
    b = LossScale(CPU)
    b.load_state_dict(a.state_dict())
    assert b.state_dict() == {"scale": 2.0**15, "good_steps": 1}


def test_fp16_training_matches_fp32_and_checkpoints_its_scale(tiny_folder):
    results = {}
    for precision in ("fp32", "fp16"):
        values = tiny_config(str(tiny_folder / "train"), "", episodes=2)
        values["train"].update(precision=precision, log_every=2, save_every=2)
        trainer = Trainer(from_dict(values), tiny_folder / precision)
        results[precision] = trainer.train()
    a, b = results["fp32"], results["fp16"]
    for key in ("charts/episode_reward", "charts/psnr_gain", "losses/entropy", "losses/value_loss"):
        assert b[key] == pytest.approx(a[key], rel=0.01, abs=0.005), key
    assert b["health/bad_update"] == 0
    saved = load_checkpoint(tiny_folder / "fp16" / "last.safetensors", with_training_state=True)
    assert saved.info["loss_scale"] == trainer.precision.loss_scale.state_dict()
    values["train"].update(episodes=3)
    resumed = Trainer(from_dict(values), tiny_folder / "fp16", resume=True, force=True)  # more episodes: a changed run
    assert resumed.precision.loss_scale.state_dict() == saved.info["loss_scale"]


def test_compiled_training_matches_eager(tiny_folder):
    """torch.compile of the network and the PPO loss (inductor, C++ on the CPU): same statistics as eager."""
    results = {}
    for compile_ in ("off", "all"):
        values = tiny_config(str(tiny_folder / "train"), "", episodes=2)
        values["train"].update(compile=compile_, log_every=2)
        results[compile_] = Trainer(from_dict(values), tiny_folder / compile_).train()
    a, b = results["off"], results["all"]
    for key in ("charts/episode_reward", "charts/psnr_gain", "losses/entropy", "losses/value_loss",
                "losses/policy_loss", "losses/grad_norm"):
        assert b[key] == pytest.approx(a[key], rel=1e-3, abs=1e-5), key


@pytest.mark.parametrize("fused", [True, False])
def test_guarded_step_leaves_weights_moments_and_count_untouched_when_not_finite(fused):
    from r3l.algos.optim import guarded_step

    torch.manual_seed(0)
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(net.parameters(), lr=0.1, fused=fused)
    net(torch.randn(4, 3)).sum().backward()
    guarded_step(opt, torch.tensor(True))  # a good step first, so that moments and the count exist
    snapshot = [t.clone() for p in net.parameters() for t in [p.detach(), *opt.state[p].values()]]
    for p in net.parameters():
        p.grad = torch.full_like(p, float("nan"))
    guarded_step(opt, torch.tensor(False))
    after = [t for p in net.parameters() for t in [p.detach(), *opt.state[p].values()]]
    assert all(torch.equal(a, b) for a, b in zip(after, snapshot))
    assert not hasattr(opt, "found_inf")
    for p in net.parameters():
        p.grad = torch.ones_like(p)
    guarded_step(opt, torch.tensor(True))
    assert all(float(opt.state[p]["step"]) == 2 for p in net.parameters())
    assert not torch.equal(next(net.parameters()).detach(), snapshot[0])


def test_auto_compile_is_cuda_graphs_for_r3l_on_cuda_only():
    from r3l.training.trainer import compile_plan

    cuda = torch.device("cuda")
    r3l = from_dict(tiny_config("t", "", episodes=2))
    r3n = from_dict({**tiny_config("t", "", episodes=2), "model": {"name": "r3n", "init": "scratch"}})
    assert compile_plan(r3l, cuda) == ("all", "reduce-overhead")
    assert compile_plan(r3l, CPU) == ("off", "default")
    assert compile_plan(r3n, cuda) == ("off", "reduce-overhead")
    explicit = from_dict({**tiny_config("t", "", episodes=2), "train": {"compile": "network",
                                                                        "compile_mode": "max-autotune"}})
    assert compile_plan(explicit, cuda) == ("network", "max-autotune")

"""Training must learn: the default PPO settings on the paper's network must not collapse to "no change".

The run is the paper's network (64 features, DnCNN initialisation, 27 actions) on Train400 crops, shrunk to
8 crops of 24² and the first 90 episodes of a 120-episode schedule. With the old default entropy bonus
(0.001) the entropy fell 2.2 → 0.45 by episode 40 and the training-batch PSNR gain stayed below 0: the policy
had learnt to change nothing. With the current defaults it stays above 2 and the gain turns positive
(docs/experiments.md). The gain climbs steeply from about episode 60 (seed 1: −0.2 dB at 55, +0.2 at 60,
+2.9 at 80, +3.4 at 90): a test that stopped at 60 sat on that knee, and a CPU that rounds otherwise (an AMD
EPYC) measured −0.14 dB there. Stopping at 90 puts every seed well past it.
"""

import json

import pytest
import torch

from conftest import DATASETS, DNCNN_WEIGHTS, needs_shared
from r3l.algos.ppo import all_action_objective, all_action_targets
from r3l.config import from_dict
from r3l.models.networks import ActorCritic
from r3l.tasks.denoise import ResidualDenoiseEnv
from r3l.training.trainer import Trainer

ENTROPY_FLOOR = 1.5
"""nats; uniform over 27 actions is 3.30, a collapsed policy is near 0."""
MIN_GAIN = 1.0
"""dB of PSNR gain on the training batch with sampled actions, mean of the last two log intervals (episodes 85
and 90). Measured on a 2-core Xeon: seed 0 fp32 4.6, seed 1 fp32 3.3 dB."""


def paper_net_config(seed: int, precision: str) -> dict:
    return {
        "seed": seed,
        "model": {"init": "dncnn", "features": 64, "head_init": "small", "dncnn_weights": str(DNCNN_WEIGHTS)},
        "data": {"train": str(DATASETS / "Train400"), "val": "", "batch_size": 8, "crop": 24, "workers": 0},
        "train": {"episodes": 120, "log_every": 5, "save_every": 1000, "device": "cpu", "progress": False,
                  "tensorboard": False, "precision": precision},
    }


@needs_shared
@pytest.mark.parametrize("seed,precision", [(0, "fp32"), (1, "fp32"), (0, "bf16")])
def test_default_ppo_explores_and_learns_on_every_seed(tmp_path, seed, precision):
    trainer = Trainer(from_dict(paper_net_config(seed, precision)), tmp_path / "run")
    trainer.train(stop_at=90)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    entropy = [r["losses/entropy"] for r in rows]
    gain = sum(r["charts/psnr_gain"] for r in rows[-2:]) / 2
    assert min(entropy) > ENTROPY_FLOOR, f"exploration died: entropy {[round(e, 2) for e in entropy]}"
    assert gain > MIN_GAIN, f"no learning: training-batch gain {gain:.2f} dB"


def test_action_rewards_are_the_rewards_each_action_earns():
    torch.manual_seed(0)
    env = ResidualDenoiseEnv(sigma=25.0)
    clean = torch.rand(2, 1, 5, 6)
    state = env.start(clean, torch.Generator().manual_seed(1))
    every = env.action_rewards(state, clean)
    assert every.shape == (2, 1, 27, 5, 6)
    for k in (0, 5, 13, 26):
        actions = torch.full((2, 1, 5, 6), k)
        assert torch.allclose(every[:, :, k], env.reward(state, env.transition(state, actions), clean), atol=1e-6)
    assert torch.equal(every[:, :, 13], torch.zeros(2, 1, 5, 6))


def test_soft_all_action_target_points_at_the_best_action():
    from r3l.algos import PPOConfig

    rewards = torch.tensor([0.0, 1.0, 0.2]).view(1, 1, 3, 1, 1)
    target = all_action_targets(rewards, PPOConfig(all_action="soft", all_action_temperature=0.1))
    assert torch.allclose(target.sum(2), torch.ones(1, 1, 1, 1))
    assert target.argmax(2).item() == 1 and target[0, 0, 1].item() > 0.99
    logits = torch.zeros(1, 1, 3, 1, 1, requires_grad=True)
    (-all_action_objective(logits, target, "soft").sum()).backward()
    assert logits.grad.argmin(2).item() == 1  # descending the loss raises the best action's logit
    centred = all_action_targets(rewards, PPOConfig(all_action="expected"))
    assert torch.allclose(centred.mean(2), torch.zeros(1, 1, 1, 1), atol=1e-6)


def test_heads_emit_float32_under_bf16_autocast():
    net = ActorCritic(features=16)
    state = torch.rand(1, 1, 20, 20)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, values = net(state)
        hidden = net.policy[:-1](net.encoder(state)).float()
    assert logits.dtype == values.dtype == torch.float32
    expected = net.policy[-1](hidden).view_as(logits)
    assert torch.equal(logits, expected)  # the last layer ran in fp32 on the bf16 features


GROUP_MIN_GAIN = 1.0
"""dB of greedy PSNR gain on held-out crops after 40 episodes of the group baseline; measured 1.85–2.67 dB over
seeds 0–2 (2-core Xeon, one thread) from a start of about 0 dB, so a CPU's rounding cannot cross it."""


@pytest.mark.parametrize("seed", [0, 1])
def test_the_critic_free_group_baseline_learns_to_denoise(seed):
    from skimage import data

    from r3l.algos import PPO, PPOConfig
    from r3l.metrics import batch_psnr

    image = torch.from_numpy(data.camera()).float().div(255)
    generator = torch.Generator().manual_seed(seed)

    def crops(n, size):
        corners = torch.randint(0, image.shape[0] - size, (n, 2), generator=generator).tolist()
        return torch.stack([image[y:y + size, x:x + size] for y, x in corners]).unsqueeze(1)

    env = ResidualDenoiseEnv(sigma=25.0, steps=3)
    held_out = crops(16, 48)
    noisy = env.start(held_out, torch.Generator().manual_seed(5))

    def greedy_gain(net):
        state = noisy
        with torch.no_grad():
            for _ in range(env.steps):
                state = env.transition(state, net.policy_logits(state).argmax(2))
        return float((batch_psnr(state.clamp(0, 1), held_out) - batch_psnr(noisy.clamp(0, 1), held_out)).mean())

    torch.manual_seed(seed)
    net = ActorCritic(features=16, policy_form="gaussian", head_init="small", temperature=4.0)
    cfg = PPOConfig(advantage="group", group_size=4, gamma=1.0, epochs=1, minibatches=1, vf_coef=0.0, ent_coef=0.0,
                    freeze_temperature=True, lr=1e-3, lr_schedule="constant")
    ppo = PPO(net, cfg, env)
    start = greedy_gain(net)
    for _ in range(40):
        ppo.learn(crops(8, 24), generator)
    assert abs(start) < 0.2, f"the small-init policy should start near 'no change', gain {start:.2f} dB"
    assert greedy_gain(net) > GROUP_MIN_GAIN, "the group baseline did not learn to denoise"

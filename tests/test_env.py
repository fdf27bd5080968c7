import math

import pytest
import torch

from r3l.tasks.denoise import ResidualDenoiseEnv


def test_reward_is_drop_in_squared_error():
    g = torch.Generator().manual_seed(0)
    clean = torch.rand(2, 1, 16, 16, generator=g)
    env = ResidualDenoiseEnv(sigma=25)
    episode = env.reset(clean, g)
    state = episode.state
    actions = torch.randint(0, 27, clean.shape, generator=g)
    nxt, reward, done = env.step(episode, actions)
    expected_next = state + (actions.float() - 13) / 255
    assert torch.allclose(nxt, expected_next)
    expected = 255 * ((state - clean) ** 2 - (expected_next - clean) ** 2)
    assert torch.allclose(reward, expected, atol=1e-7)
    assert not done


def test_episode_has_six_steps_and_ends():
    env = ResidualDenoiseEnv(sigma=10)
    episode = env.reset(torch.zeros(1, 1, 4, 4))
    done = [env.step(episode, torch.full((1, 1, 4, 4), 13))[2] for _ in range(6)]
    assert done == [False] * 5 + [True] and episode.t == 6
    with pytest.raises(RuntimeError):
        env.step(episode, torch.full((1, 1, 4, 4), 13))


def test_oracle_actions_recover_clean_up_to_rounding():
    """Clipped, rounded true residuals reach the quantisation floor: MSE = 1/12 (255 scale), PSNR ≈ 58.9 dB."""
    g = torch.Generator().manual_seed(1)
    clean = torch.rand(4, 1, 64, 64, generator=g) * 0.6 + 0.2
    env = ResidualDenoiseEnv(sigma=15)  # |noise| stays well inside the 6 × 13 reachable range
    episode = env.reset(clean, g)
    state = episode.state
    noisy_mse = ((state - clean) ** 2).mean()
    total_reward = torch.zeros_like(clean)
    for _ in range(6):
        oracle = torch.round((clean - state) * 255).clamp(-13, 13).long() + 13
        state, reward, _ = env.step(episode, oracle)
        total_reward += reward
    final_mse = ((state - clean) ** 2).mean().item() * 255**2
    assert final_mse == pytest.approx(1 / 12, rel=0.05)
    psnr = 10 * math.log10(255**2 / final_mse)
    assert psnr == pytest.approx(10 * math.log10(12 * 255**2), abs=0.2)
    # Rewards telescope: their sum is the total drop in squared error.
    assert total_reward.mean().item() == pytest.approx(255 * (noisy_mse.item() - final_mse / 255**2), rel=1e-4)


def test_action_count_and_step_are_configurable():
    env = ResidualDenoiseEnv(sigma=0, n_actions=5, action_step=3.0, steps=2)
    clean = torch.full((1, 1, 2, 2), 0.5)
    episode = env.reset(clean)
    state, _, _ = env.step(episode, torch.full((1, 1, 2, 2), 4))
    assert torch.allclose(state, clean + 6 / 255)


def test_sigma_range_draws_per_image_sigma():
    g = torch.Generator().manual_seed(0)
    env = ResidualDenoiseEnv(sigma=(5.0, 50.0))
    clean = torch.full((64, 1, 32, 32), 0.5)
    noisy = env.reset(clean, g).state
    stds = (noisy - clean).flatten(1).std(1) * 255
    assert stds.min() > 4 and stds.max() < 53
    assert stds.max() - stds.min() > 20
    fixed = ResidualDenoiseEnv(sigma=25).start(clean, g)
    assert (fixed - clean).std().item() * 255 == pytest.approx(25, rel=0.02)
    assert noisy.min() < 0 or noisy.max() > 1  # unclipped by default
    clipped = ResidualDenoiseEnv(sigma=50, clip_noisy=True).start(torch.zeros(1, 1, 16, 16), g)
    assert clipped.min() >= 0

import pytest
import torch

from r3l.algos import PPOConfig
from r3l.algos.optim import learning_rate
from r3l.algos.ppo import compute_gae, log_prob_entropy, ppo_loss, sample_actions


def reference_gae(rewards, values, gamma, lam):
    """Textbook per-element loop; the episode ends after the last step."""
    T = rewards.shape[0]
    flat_r, flat_v = rewards.reshape(T, -1), values.reshape(T, -1)
    adv = torch.zeros_like(flat_r)
    for i in range(flat_r.shape[1]):
        running = 0.0
        for t in reversed(range(T)):
            next_v = flat_v[t + 1, i] if t + 1 < T else 0.0
            delta = flat_r[t, i] + gamma * next_v - flat_v[t, i]
            running = delta + gamma * lam * running
            adv[t, i] = running
    return adv.reshape(rewards.shape)


@pytest.mark.parametrize("gamma,lam", [(0.95, 1.0), (0.95, 0.95), (0.5, 0.0)])
def test_gae_matches_reference_loop(gamma, lam):
    g = torch.Generator().manual_seed(0)
    rewards = torch.randn(6, 2, 1, 3, 4, generator=g, dtype=torch.float64)
    values = torch.randn(6, 2, 1, 3, 4, generator=g, dtype=torch.float64)
    adv, ret = compute_gae(rewards, values, torch.zeros_like(values[0]), gamma, lam)
    ref = reference_gae(rewards, values, gamma, lam)
    assert torch.allclose(adv, ref)
    assert torch.allclose(ret, ref + values)
    if lam == 1.0:  # λ = 1: returns are discounted sums of rewards
        disc = torch.zeros_like(rewards[0])
        for t in reversed(range(6)):
            disc = rewards[t] + gamma * disc
        assert torch.allclose(ret[0], disc)


def test_sampling_follows_softmax_and_log_prob_matches_categorical():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(1, 1, 7, 1, 1, generator=g).expand(1, 1, 7, 300, 300).contiguous()
    actions = sample_actions(logits, g)
    freq = torch.bincount(actions.flatten(), minlength=7).float() / actions.numel()
    assert torch.allclose(freq, torch.softmax(logits[0, 0, :, 0, 0], 0), atol=0.005)
    small = torch.randn(2, 3, 5, 4, 4, generator=g)
    acts = torch.randint(0, 5, (2, 3, 4, 4), generator=g)
    logp, ent = log_prob_entropy(small, acts)
    dist = torch.distributions.Categorical(logits=small.permute(0, 1, 3, 4, 2))
    assert torch.allclose(logp, dist.log_prob(acts), atol=1e-6)
    assert torch.allclose(ent, dist.entropy(), atol=1e-6)


def _loss_grad(ratio_value: float, advantage: float, clip: float = 0.2) -> tuple[float, float]:
    old = torch.zeros(1)
    new = torch.tensor([torch.log(torch.tensor(ratio_value))], requires_grad=True)
    cfg = PPOConfig(clip_eps=clip, vf_coef=0.0, ent_coef=0.0)
    parts = ppo_loss(new, old, torch.tensor([advantage]), torch.zeros(1), torch.zeros(1), torch.zeros(1), cfg)
    parts.total.backward()
    return parts.policy.item(), new.grad.item()


def test_ppo_loss_clips_and_has_zero_gradient_outside_trust_region():
    # Inside the region: loss = -ratio * A, gradient wrt log-ratio = -ratio * A.
    loss, grad = _loss_grad(1.1, 2.0)
    assert loss == pytest.approx(-2.2) and grad == pytest.approx(-2.2)
    # Positive advantage and ratio above 1 + ε: clipped, no gradient.
    loss, grad = _loss_grad(1.5, 2.0)
    assert loss == pytest.approx(-1.2 * 2.0) and grad == 0.0
    # Negative advantage and ratio below 1 − ε: clipped, no gradient.
    loss, grad = _loss_grad(0.5, -1.0)
    assert loss == pytest.approx(0.8) and grad == 0.0
    # Negative advantage and ratio above 1 + ε: the unclipped (pessimistic) term keeps its gradient.
    loss, grad = _loss_grad(1.5, -1.0)
    assert loss == pytest.approx(1.5) and grad == pytest.approx(1.5)


def test_ppo_loss_diagnostics():
    new = torch.log(torch.tensor([1.0, 1.5, 0.5, 1.1]))
    cfg = PPOConfig(clip_eps=0.2)
    parts = ppo_loss(new, torch.zeros(4), torch.ones(4), torch.zeros(4), torch.ones(4), torch.zeros(4), cfg)
    assert parts.clipfrac.item() == pytest.approx(0.5)
    ratio = new.exp()
    assert parts.approx_kl.item() == pytest.approx(((ratio - 1) - new).mean().item())
    assert parts.value.item() == pytest.approx(0.5)  # smooth-L1 of an error of 1


def test_learning_rate_schedules():
    poly = PPOConfig(lr=1e-3, lr_schedule="poly", lr_power=0.9)
    assert learning_rate(poly, 0, 100) == pytest.approx(1e-3)
    assert learning_rate(poly, 50, 100) == pytest.approx(1e-3 * 0.5**0.9)
    cosine = PPOConfig(lr=1e-3, lr_schedule="cosine")
    assert learning_rate(cosine, 50, 100) == pytest.approx(5e-4)
    assert learning_rate(cosine, 100, 100) == pytest.approx(0.0)
    assert learning_rate(PPOConfig(lr=2e-4, lr_schedule="constant"), 70, 100) == 2e-4

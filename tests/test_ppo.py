import pytest
import torch

from conftest import tiny_config
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


def test_returns_to_go_and_leave_one_out_group_advantages_by_hand():
    from r3l.algos.ppo import discounted_returns, group_advantages

    rewards = torch.tensor([1.0, 2.0, 3.0]).view(3, 1)
    assert torch.allclose(discounted_returns(rewards, 0.5).flatten(), torch.tensor([2.75, 3.5, 3.0]))
    # Two crops, three plays each, one step: a play's advantage is its return minus its group's other plays' mean.
    returns = torch.tensor([1.0, 2.0, 6.0, 5.0, 5.0, 5.0]).view(1, 6, 1, 1, 1)
    advantages = group_advantages(returns, 3).flatten()
    assert torch.allclose(advantages, torch.tensor([-3.0, -1.5, 4.5, 0.0, 0.0, 0.0]))


def group_ppo(explore=1.0, group=4, vf_coef=0.0, features=8, anchor=0.0):
    from r3l.algos.ppo import PPO
    from r3l.models.networks import ActorCritic
    from r3l.tasks.denoise import ResidualDenoiseEnv

    torch.manual_seed(0)
    net = ActorCritic(features=features, policy_form="gaussian", head_init="small", temperature=4.0)
    cfg = PPOConfig(advantage="group", group_size=group, gamma=1.0, epochs=1, minibatches=1, vf_coef=vf_coef,
                    ent_coef=0.0, explore_temperature=explore, freeze_temperature=True, lr=1e-3,
                    anchor_coef=anchor)
    return PPO(net, cfg, ResidualDenoiseEnv(sigma=25.0, steps=3))


def test_group_plays_share_their_start_and_advantages_sum_to_zero_in_each_group():
    ppo = group_ppo(explore=[1.0, 16.0])
    clean = torch.rand(3, 1, 12, 12, generator=torch.Generator().manual_seed(0))
    buf, _ = ppo.collect(clean, torch.Generator().manual_seed(1))
    states = buf.states[0].unflatten(0, (3, 4))
    assert torch.equal(states, states[:, :1].expand_as(states))  # the same noise for every play of a crop
    assert not torch.equal(buf.states[1][0], buf.states[1][1])  # different sampled actions
    temperatures = buf.temperatures[0].view(3, 4)
    assert torch.equal(temperatures, temperatures[:, :1].expand_as(temperatures))
    assert temperatures.min() >= 1.0 and temperatures.max() <= 16.0 and temperatures[:, 0].unique().numel() == 3
    assert torch.allclose(buf.advantages.unflatten(1, (3, 4)).sum(2), torch.zeros(3, 3, 1, 12, 12), atol=1e-4)
    assert torch.equal(buf.values, torch.zeros_like(buf.values))  # no critic was run


def test_group_options_are_checked():
    from r3l.algos.ppo import PPO
    from r3l.errors import R3LError

    with pytest.raises(R3LError, match="group_size"):
        PPO.check(PPOConfig(advantage="group", group_size=1), 8)
    with pytest.raises(R3LError, match="minibatches"):
        PPO.check(PPOConfig(advantage="group", group_size=3, minibatches=4), 2)
    PPO.check(PPOConfig(advantage="group", group_size=2, minibatches=4), 2)  # 4 plays in 4 minibatches
    with pytest.raises(R3LError, match="explore_temperature"):
        PPO.check(PPOConfig(explore_temperature=[4.0, 1.0]), 8)
    with pytest.raises(R3LError, match="advantage_scale: crop .* needs advantage: group"):
        PPO.check(PPOConfig(advantage_scale="crop"), 8)


def test_crop_scaling_gives_a_nearly_clean_crop_the_weight_of_a_noisy_one():
    ppo = group_ppo()
    ppo.cfg.advantage_scale = "crop"
    # Two crops of 4 plays: the second's advantages 100 times the first's (a noisy crop beside a clean one).
    grouped = torch.randn(3, 2, 4, 1, 6, 6, generator=torch.Generator().manual_seed(0))
    base = (grouped - grouped.mean(2, keepdim=True)).flatten(1, 2)
    raw = base * torch.tensor([1.0] * 4 + [100.0] * 4).view(1, 8, 1, 1, 1)
    scaled = ppo._normalized(raw).unflatten(1, (2, 4))
    assert torch.allclose(scaled.std(dim=(0, 2, 3, 4, 5)), torch.ones(2), atol=1e-5)
    ppo.cfg.advantage_scale = "batch"
    batch = ppo._normalized(raw).unflatten(1, (2, 4))
    assert batch[:, 0].std() < 0.05 * batch[:, 1].std()  # the batch scale leaves the clean crop almost no weight


def test_a_frozen_temperature_stays_and_the_value_head_is_not_trained():
    ppo = group_ppo()
    value_before = [p.clone() for p in ppo.net.value.parameters()]
    tau = ppo.net.log_temperature.clone()
    clean = torch.rand(2, 1, 12, 12, generator=torch.Generator().manual_seed(0))
    ppo.learn(clean, torch.Generator().manual_seed(1))
    assert torch.equal(ppo.net.log_temperature, tau)
    assert all(torch.equal(a, b) for a, b in zip(value_before, ppo.net.value.parameters()))


def test_the_anchor_starts_at_zero_divergence_and_holds_the_policy_near_its_start():
    import copy

    clean = torch.rand(2, 1, 12, 12, generator=torch.Generator().manual_seed(0))
    probe = clean + 0.1 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(2))
    drift, kls = {}, []
    for coef in (0.0, 50.0):
        ppo = group_ppo(explore=8.0, anchor=coef, features=4)
        start = copy.deepcopy(ppo.net)
        generator = torch.Generator().manual_seed(1)
        stats = [ppo.learn(clean, generator) for _ in range(8)]
        ppo.anchor = start  # the policy's divergence from its start, measured alike for both runs
        drift[coef] = ppo._anchor_kl(probe, ppo.net.policy_logits(probe)).item()
        if coef:
            kls = [s["losses/anchor_kl"].item() for s in stats]
        else:
            assert "losses/anchor_kl" not in stats[0]
    assert abs(kls[0]) < 1e-6 < kls[-1]  # the first update starts at the anchor; later ones have left it
    assert drift[50.0] < 0.5 * drift[0.0]


def test_the_error_weighted_anchor_holds_plays_by_how_far_they_start_from_their_target():
    from r3l.algos.ppo import PPO
    from r3l.errors import R3LError

    ppo = group_ppo(anchor=1.0)
    ppo.cfg.anchor_weight = "error"
    clean = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    noise = 0.1 * torch.randn(clean.shape[1:], generator=torch.Generator().manual_seed(1))
    start = clean + torch.stack([0 * noise, noise, 2 * noise])  # a clean crop, a noisy one, one twice as noisy
    weights = ppo.anchor_weights(start, clean)
    assert weights[0] == 0 and torch.allclose(weights[2], 2 * weights[1])
    assert torch.allclose(weights.mean(), torch.ones(()))
    assert torch.equal(ppo.anchor_weights(clean, clean), torch.zeros(3))  # all at their targets: nothing to hold
    ppo.cfg.anchor_weight = "squared_error"
    squared = ppo.anchor_weights(start, clean)
    assert squared[0] == 0 and torch.allclose(squared[2], 4 * squared[1])
    assert torch.allclose(squared.mean(), torch.ones(()))
    # On clean inputs the error-weighted anchor holds nothing, while the uniform one pulls back as the policy moves.
    kls = {}
    for weighting in ("uniform", "error", "squared_error"):
        ppo = group_ppo(explore=8.0, anchor=1.0, features=4)
        ppo.cfg.anchor_weight = weighting
        ppo.env.sigma = 0.0
        generator = torch.Generator().manual_seed(1)
        kls[weighting] = [ppo.learn(clean, generator)["losses/anchor_kl"].item() for _ in range(4)]
    assert kls["uniform"][-1] > 1e-6 and kls["error"] == kls["squared_error"] == [0.0] * 4
    with pytest.raises(R3LError, match="anchor_weight: error .* anchor_coef: 0"):
        PPO.check(PPOConfig(anchor_weight="error"), 8)


def test_the_greedy_anchor_holds_the_start_on_its_own_greedy_play():
    import copy

    from r3l.algos.ppo import PPO
    from r3l.errors import R3LError

    clean = torch.rand(2, 1, 12, 12, generator=torch.Generator().manual_seed(0))
    ppo = group_ppo(explore=8.0, anchor=1.0, features=4)
    ppo.cfg.anchor_states = "greedy"
    buf, _ = ppo.collect(clean, torch.Generator().manual_seed(1))
    # One greedy play of each distinct crop from the plays' common start, by the start's own argmax.
    assert buf.anchor_states.shape == (3, 2, 1, 12, 12) and buf.anchor_logits.shape[:3] == (3, 2, 1)
    assert torch.equal(buf.anchor_states[0], buf.states[0][::4])
    for t in range(2):
        expected = ppo.env.transition(buf.anchor_states[t], buf.anchor_logits[t].argmax(dim=2))
        assert torch.equal(buf.anchor_states[t + 1], expected)
    assert torch.equal(buf.anchor_logits[1], ppo.anchor.policy_logits(buf.anchor_states[1]))
    # Tempered plays wander from the greedy one; the anchor measures the policy on the greedy states only.
    assert not torch.equal(buf.states[2][::4], buf.anchor_states[2])
    drift, kls = {}, []
    for coef in (0.0, 50.0):
        ppo = group_ppo(explore=8.0, anchor=coef, features=4)
        ppo.cfg.anchor_states = "greedy" if coef else "update"
        start = copy.deepcopy(ppo.net)
        generator = torch.Generator().manual_seed(1)
        stats = [ppo.learn(clean, generator) for _ in range(8)]
        if coef:
            kls = [s["losses/anchor_kl"].item() for s in stats]
        ppo.anchor = start
        ppo.cfg.anchor_states = "greedy"
        played, _ = ppo.collect(clean, torch.Generator().manual_seed(3))
        greedy = played.anchor_states.flatten(0, 1)
        drift[coef] = ppo._anchor_kl(greedy, ppo.net.policy_logits(greedy)).item()
    assert abs(kls[0]) < 1e-6 < kls[-1]  # the first update starts at the anchor; later ones have left it
    assert drift[50.0] < 0.5 * drift[0.0]
    with pytest.raises(R3LError, match="anchor_states: greedy .* anchor_coef: 0"):
        PPO.check(PPOConfig(anchor_states="greedy"), 8)
    with pytest.raises(R3LError, match="anchor_states: greedy .* anchor_weight: uniform"):
        PPO.check(PPOConfig(anchor_states="greedy", anchor_coef=1.0, anchor_weight="error"), 8)


def test_plays_that_start_too_far_from_their_target_learn_only_from_the_anchor():
    from r3l.algos.ppo import PPO
    from r3l.errors import R3LError

    clean = torch.rand(2, 1, 12, 12, generator=torch.Generator().manual_seed(0))
    ppo = group_ppo(features=4)
    ppo.cfg.learn_max_error = 10.0
    ppo.env.sigmas = lambda batch, device, generator=None: torch.tensor([[5.0], [25.0]]).view(2, 1, 1, 1)
    buf, _ = ppo.collect(clean, torch.Generator().manual_seed(1))
    # A lightly noisy crop and a noisy one; a group's plays share their start, so they share the verdict.
    assert buf.learns.flatten().tolist() == [1.0] * 4 + [0.0] * 4
    # No play within reach and no anchor: the update leaves the policy where it was; without the limit it moves.
    moved = {}
    for limit in (1.0, None):
        ppo = group_ppo(features=4)
        ppo.cfg.learn_max_error = limit
        ppo.env.sigma = 25.0
        before = [p.clone() for p in ppo.net.parameters()]
        ppo.learn(clean, torch.Generator().manual_seed(1))
        moved[limit] = any(not torch.equal(a, b) for a, b in zip(before, ppo.net.parameters()))
    assert moved == {1.0: False, None: True}
    # Held instead: the anchor weighs exactly the plays that do not learn.
    ppo = group_ppo(features=4, anchor=1.0)
    ppo.cfg.learn_max_error, ppo.cfg.anchor_weight = 10.0, "not_learning"
    ppo.env.sigmas = lambda batch, device, generator=None: torch.tensor([[5.0], [25.0]]).view(2, 1, 1, 1)
    buf, _ = ppo.collect(clean, torch.Generator().manual_seed(1))
    assert torch.equal(buf.anchor_weights, (1.0 - buf.learns).expand(3, -1, 1, 1, 1))
    with pytest.raises(R3LError, match="learn_max_error: must be positive"):
        PPO.check(PPOConfig(learn_max_error=0.0), 8)
    with pytest.raises(R3LError, match="not_learning .* set learn_max_error"):
        PPO.check(PPOConfig(anchor_weight="not_learning", anchor_coef=1.0), 8)


def test_a_resumed_run_is_anchored_to_where_its_config_starts(tiny_folder):
    from r3l.config import from_dict
    from r3l.training.trainer import Trainer

    values = tiny_config(str(tiny_folder / "train"), "", episodes=2, ppo__anchor_coef=1.0, ppo__lr=1e-2)
    first = Trainer(from_dict(values), tiny_folder / "run")
    start = {k: v.clone() for k, v in first.net.state_dict().items()}
    first.train()
    values["train"]["episodes"] = 3
    resumed = Trainer(from_dict(values), tiny_folder / "run", resume=True, force=True)
    anchor, net = resumed.algo.anchor.state_dict(), resumed.net.state_dict()
    assert all(torch.equal(anchor[k], start[k]) for k in start)
    assert not all(torch.equal(net[k], start[k]) for k in start)

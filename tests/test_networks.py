import pytest
import torch

from conftest import DNCNN_WEIGHTS, needs_shared
from r3l.errors import R3LError
from r3l.models.networks import (
    DNCNN_TO_ACTOR_CRITIC,
    DNCNN_TO_R3N,
    R3N,
    ActorCritic,
    DnCNN,
    dncnn_from_weights,
    init_dncnn_from_dncnn,
    init_r3l_from_dncnn,
    init_r3n_from_dncnn,
)


def count(params):
    return sum(p.numel() for p in params)


def test_actor_critic_matches_paper_parameter_counts():
    net = ActorCritic(channels=1, n_actions=27, features=64)
    assert count(net.parameters()) == 275_292
    assert count(list(net.encoder.parameters()) + list(net.policy.parameters())) == 200_859
    dilations = [m.dilation[0] for m in net.encoder if isinstance(m, torch.nn.Conv2d)]
    assert dilations == [1, 2, 3, 4]
    assert [m.dilation[0] for m in net.policy if isinstance(m, torch.nn.Conv2d)] == [3, 2, 1]


@pytest.mark.parametrize("channels", [1, 3])
def test_shapes_for_gray_and_colour(channels):
    net = ActorCritic(channels=channels, n_actions=9, features=8)
    logits, value = net(torch.rand(2, channels, 13, 17))
    assert logits.shape == (2, channels, 9, 13, 17)
    assert value.shape == (2, channels, 13, 17)
    assert R3N(channels, 8)(torch.rand(1, channels, 9, 9)).shape == (1, channels, 9, 9)


def test_small_head_init_starts_near_no_change():
    net = ActorCritic(1, 27, 8, head_init="small")
    probs = torch.softmax(net.policy_logits(torch.rand(1, 1, 8, 8)), dim=2)
    assert probs[0, 0, :, 0, 0].argmax().item() == 13


@needs_shared
def test_dncnn_mapping_copies_exactly_the_right_tensors():
    state = torch.load(DNCNN_WEIGHTS, weights_only=True)
    net = ActorCritic(1, 27, 64)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    init_r3l_from_dncnn(net, DNCNN_WEIGHTS)
    after = net.state_dict()
    copied = set()
    for ours, theirs in DNCNN_TO_ACTOR_CRITIC.items():
        for suffix in ("weight", "bias"):
            assert torch.equal(after[f"{ours}.{suffix}"], state[f"{theirs}.{suffix}"])
            copied.add(f"{ours}.{suffix}")
    assert len(copied) == 14
    for key in after.keys() - copied:  # first conv and both output convs keep their own init
        assert torch.equal(after[key], before[key]), key
    assert torch.equal(after["encoder.2.weight"], state["model.6.weight"])
    assert torch.equal(after["value.0.weight"], state["model.24.weight"])


@needs_shared
def test_dncnn_weights_load_into_plain_dncnn():
    net = dncnn_from_weights(DNCNN_WEIGHTS)
    assert count(net.parameters()) == 555_137
    state = torch.load(DNCNN_WEIGHTS, weights_only=True)
    assert torch.equal(net.state_dict()["model.32.weight"], state["model.32.weight"])


@needs_shared
def test_dncnn_mapping_rejects_wrong_width():
    with pytest.raises(R3LError, match="model.features must be 64"):
        init_r3l_from_dncnn(ActorCritic(1, 27, 32), DNCNN_WEIGHTS)


def test_dncnn_file_errors(tmp_path):
    with pytest.raises(R3LError, match="not found"):
        dncnn_from_weights(tmp_path / "missing.pth")
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a pickle")
    with pytest.raises(R3LError, match="bad.pth"):
        dncnn_from_weights(bad)
    other = tmp_path / "other.pth"
    torch.save({"conv.weight": torch.zeros(3)}, other)
    with pytest.raises(R3LError, match="not KAIR's DnCNN layout .key 'conv.weight'"):
        dncnn_from_weights(other)


@needs_shared
def test_r3n_and_dncnn_initialisation_from_kair():
    state = torch.load(DNCNN_WEIGHTS, weights_only=True)
    r3n = R3N(1, 64)
    init_r3n_from_dncnn(r3n, DNCNN_WEIGHTS)
    for ours, theirs in DNCNN_TO_R3N.items():
        assert torch.equal(r3n.state_dict()[f"{ours}.weight"], state[f"{theirs}.weight"])
    dncnn = DnCNN(1, 64, 17)
    init_dncnn_from_dncnn(dncnn, DNCNN_WEIGHTS)
    assert all(torch.equal(dncnn.state_dict()[k], state[k]) for k in state)
    with pytest.raises(R3LError, match="17-layer DnCNN"):
        init_dncnn_from_dncnn(DnCNN(1, 64, 9), DNCNN_WEIGHTS)


@pytest.mark.parametrize("action_step", [1.0, 0.5])
def test_gaussian_greedy_action_is_the_argmax_of_its_logits(action_step):
    """The Gaussian head's greedy action is its residual rounded to the nearest action and clipped to the range:
    the argmax of its logits, without them (an exact tie aside)."""
    torch.manual_seed(0)
    net = ActorCritic(1, 9, 8, policy_form="gaussian", action_step=action_step)
    with torch.no_grad():
        # Residuals spread over the whole ±4-action range (every action chosen, a few pixels clipped at the ends).
        net.policy[-1].weight.mul_(0.02 * action_step)
        net.policy[-1].bias.add_(3 * action_step / 255)
        state = torch.rand(2, 1, 16, 16)
        residual = 255 * net.policy[:](net.encoder(state)) / action_step
        fast, slow = net.greedy_actions(state), net.policy_logits(state).argmax(2)
    assert fast.dtype == torch.int64 and fast.shape == (2, 1, 16, 16)
    near_tie = ((residual - residual.floor() - 0.5).abs() < 1e-3) & (residual.abs() < 4.5)
    assert ((fast == slow) | near_tie).all()
    assert (torch.bincount(fast.flatten(), minlength=9) > 0).all()  # every action, both ends of the range included
    assert ((residual > -3.5) & (residual < 3.5)).float().mean() > 0.8  # mostly rounding, not clipping, is tested
    logits_form = ActorCritic(1, 9, 8)
    with torch.no_grad():
        assert torch.equal(logits_form.greedy_actions(state), logits_form.policy_logits(state).argmax(2))

"""Colour, blind, other noise models and pixelRL's filter actions (the tasks beyond gray Gaussian denoising)."""

import cv2
import numpy as np
import pytest
import torch

from r3l.config import from_dict
from r3l.degradation import NOISES, noisy_version
from r3l.errors import R3LError
from r3l.evaluation.protocol import evaluate
from r3l.io.data import NamedImage
from r3l.io.images import read_native, to_float, write_image
from r3l.tasks import make_env
from r3l.tasks.denoise import FILTER_ACTIONS, FilterDenoiseEnv, ResidualDenoiseEnv
from r3l.tasks.filters import bilateral_filter, box_blur, gaussian_blur, median_blur


def asymmetric_rgb(h: int = 20, w: int = 28) -> np.ndarray:
    """An RGB image whose channels differ and whose rows and columns differ: red a horizontal ramp, green a
    vertical ramp, blue a checkerboard in one corner."""
    image = np.zeros((h, w, 3), np.float32)
    image[:, :, 0] = np.linspace(0, 1, w)[None, :]
    image[:, :, 1] = np.linspace(0.2, 0.8, h)[:, None]
    image[: h // 2, : w // 3, 2] = (np.indices((h // 2, w // 3)).sum(0) % 2).astype(np.float32)
    return image


# --- colour -------------------------------------------------------------------------------------------------

def test_colour_actions_and_rewards_are_per_channel():
    env = ResidualDenoiseEnv(sigma=0.0, n_actions=5, action_step=2.0)
    clean = torch.rand(2, 3, 6, 7)
    state = clean + 0.01
    actions = torch.full((2, 3, 6, 7), 2)  # "no change" everywhere ...
    actions[:, 1] = 4                       # ... except +2 steps on green
    next_state = env.transition(state, actions)
    assert torch.equal(next_state[:, [0, 2]], state[:, [0, 2]])
    assert torch.allclose(next_state[:, 1], state[:, 1] + 4 / 255)
    reward = env.reward(state, next_state, clean)
    assert reward.shape == clean.shape
    assert torch.equal(reward[:, [0, 2]], torch.zeros(2, 2, 6, 7)) and (reward[:, 1] != 0).all()


def test_colour_policy_gives_logits_per_channel():
    from r3l.models.networks import ActorCritic

    net = ActorCritic(channels=3, n_actions=27, features=8)
    logits, value = net(torch.rand(2, 3, 10, 12))
    assert logits.shape == (2, 3, 27, 10, 12) and value.shape == (2, 3, 10, 12)


def test_channel_order_survives_env_and_image_io(tmp_path):
    image = asymmetric_rgb()
    write_image(tmp_path / "a.png", image)
    native = read_native(tmp_path / "a.png")
    loaded = to_float(native)
    assert np.abs(loaded - image).max() <= 0.5 / 255 + 1e-6  # 8-bit rounding only
    env = ResidualDenoiseEnv(sigma=0.0)
    state = torch.from_numpy(loaded).permute(2, 0, 1)[None]
    keep = torch.full(state.shape, env.n_actions // 2)
    out = env.transition(state, keep)[0].permute(1, 2, 0).numpy()
    write_image(tmp_path / "b.png", out)
    again = read_native(tmp_path / "b.png")
    assert np.array_equal(again, native)
    # and the channel contents are where they started: red varies along x, green along y
    assert again[0, -1, 0] == 255 and again[0, 0, 0] == 0 and again[-1, 0, 1] > again[0, 0, 1]


def test_colour_denoiser_keeps_channel_order(tmp_path):
    """A colour R3L whose policy always picks 'no change' returns the image unchanged, channels in place."""
    from r3l.inference.denoiser import Denoiser
    from r3l.models.networks import ActorCritic
    from r3l.models.spec import ArchSpec

    net = ActorCritic(channels=3, n_actions=27, features=8)
    with torch.no_grad():
        net.policy[-1].weight.zero_()
        net.policy[-1].bias.copy_(torch.where(torch.arange(27) == 13, 10.0, 0.0).repeat(3))
    image = (asymmetric_rgb() * 255).round().astype(np.uint8)
    denoiser = Denoiser(net, ArchSpec.of("r3l", channels=3, features=8, n_actions=27, action_step=1.0, steps=6), "cpu")
    assert np.array_equal(denoiser.denoise(image), image)


# --- blind training -----------------------------------------------------------------------------------------

def test_blind_sampling_covers_its_range():
    env = ResidualDenoiseEnv(sigma=(0.0, 55.0))
    levels = env.sigmas(20000, torch.device("cpu"), torch.Generator().manual_seed(0)).flatten()
    assert levels.min() >= 0 and levels.max() <= 55
    assert levels.min() < 0.1 and levels.max() > 54.9
    counts = torch.histc(levels, bins=11, min=0, max=55)
    assert (counts - 20000 / 11).abs().max() < 4 * (20000 / 11) ** 0.5  # uniform: each bin within 4 std
    noisy = env.start(torch.full((20000, 1, 4, 4), 0.5), torch.Generator().manual_seed(1))
    per_image = (noisy - 0.5).flatten(1).std(1) * 255
    assert per_image.max() > 45 and per_image.min() < 5  # each image its own level


def test_blind_configs_validate_at_several_sigmas(tmp_path):
    from conftest import smooth_image, tiny_config
    from r3l.training.trainer import Trainer

    rng = np.random.default_rng(0)
    for i in range(3):
        write_image(tmp_path / "train" / f"im{i}.png", smooth_image(rng, 40, 40))
    write_image(tmp_path / "val" / "v.png", smooth_image(rng, 32, 32))
    cfg = tiny_config(str(tmp_path / "train"), str(tmp_path / "val"), episodes=2)
    cfg["env"] = {"sigma": [0, 55]}
    cfg["data"]["val_sigma"] = [15, 25, 50]
    trainer = Trainer(from_dict(cfg), tmp_path / "run")
    psnr = trainer.validate()
    assert set(trainer.val_by_sigma) == {"15", "25", "50"}
    assert psnr == pytest.approx(np.mean(list(trainer.val_by_sigma.values())))
    assert trainer.val_by_sigma["15"] > trainer.val_by_sigma["50"]
    trainer.train()
    rows = (tmp_path / "run" / "metrics.jsonl").read_text()
    assert "val/psnr_sigma15" in rows and "val/psnr_sigma50" in rows


def test_blind_model_is_not_told_sigma():
    """Inference sees the noisy image only: the network has as many input channels as the image."""
    from conftest import ROOT
    from r3l.config import load_config
    from r3l.models.spec import build_network, spec_from_config

    for name, channels in (("r3l_gray_blind", 1), ("r3l_color_blind", 3)):
        cfg = load_config(ROOT / "configs" / f"{name}.yaml")
        assert cfg.env.sigma == [0.0, 55.0] and cfg.model.channels == channels
        net = build_network(spec_from_config(cfg.model, cfg.env))
        assert net.encoder[0].in_channels == channels


# --- noise models -------------------------------------------------------------------------------------------

def test_poisson_statistics_match_the_peak():
    clean = torch.full((1, 1, 400, 400), 0.4)
    for peak in (5.0, 30.0):
        noisy = NOISES["poisson"].apply(clean, torch.tensor(peak).view(1, 1, 1, 1), torch.Generator().manual_seed(0))
        counts = noisy * peak
        assert torch.allclose(counts, counts.round(), atol=1e-4)  # whole photon counts
        assert noisy.mean().item() == pytest.approx(0.4, abs=0.004)
        assert noisy.var().item() == pytest.approx(0.4 / peak, rel=0.03)


def test_salt_and_pepper_statistics_match_the_density():
    clean = torch.full((1, 3, 300, 300), 0.4)
    noisy = NOISES["salt_pepper"].apply(clean, torch.tensor(0.2).view(1, 1, 1, 1), torch.Generator().manual_seed(0))
    hit = noisy != 0.4
    assert hit.float().mean().item() == pytest.approx(0.2, abs=0.005)
    assert set(noisy[hit].unique().tolist()) == {0.0, 1.0}
    assert (noisy[hit] == 1).float().mean().item() == pytest.approx(0.5, abs=0.01)


def test_spatial_gaussian_sigma_varies_within_its_level():
    model = NOISES["spatial_gaussian"]
    clean = torch.full((4, 1, 64, 64), 0.5)
    sigma = model.sigma_map(clean, torch.full((4, 1, 1, 1), 50.0), torch.Generator().manual_seed(0))
    assert sigma.min() >= 0 and sigma.max() <= 50 and sigma.max() - sigma.min() > 20
    noisy = model.apply(clean, torch.full((4, 1, 1, 1), 50.0), torch.Generator().manual_seed(0))
    # the same generator draws the same map first: noise is small where the map is small
    noise = (noisy - clean) * 255
    low, high = sigma < 10, sigma > 40
    assert noise[low].std() < 10 < 40 < noise[high].std()


def test_mixed_noise_is_signal_dependent_with_impulses():
    model = NOISES["mixed"]
    clean = torch.cat([torch.full((1, 1, 300, 300), 0.1), torch.full((1, 1, 300, 300), 0.9)])
    noisy = model.apply(clean, torch.full((2, 1, 1, 1), 25.0), torch.Generator().manual_seed(0))
    impulses = (noisy == 0) | (noisy == 1)
    assert impulses.float().mean().item() == pytest.approx(0.02 * 25 / 255, abs=0.0005)
    for k, x in ((0, 0.1), (1, 0.9)):
        gaussian = noisy[k][~impulses[k]] - x
        expected = 25 / 255 * (0.25 + 1.5 * x) ** 0.5
        assert gaussian.std().item() == pytest.approx(expected, rel=0.03)


@pytest.mark.parametrize("noise,level", [("gaussian", 25.0), ("poisson", 30.0), ("salt_pepper", 0.1),
                                         ("spatial_gaussian", 50.0), ("mixed", 25.0)])
def test_protocol_noise_is_seeded_and_the_same_for_every_method(noise, level):
    rng = np.random.default_rng(0)
    images = [NamedImage(f"im{i}", (rng.random((16, 20, 1)) * 255).astype(np.uint8)) for i in range(2)]
    first = evaluate(lambda x: x, images, [level], seed=3, progress=False, noise=noise)
    blurred = evaluate(lambda x: x * 0.5 + 0.25, images, [level], seed=3, progress=False, noise=noise)
    other_seed = evaluate(lambda x: x, images, [level], seed=4, progress=False, noise=noise)
    assert [r["noisy_sha256"] for r in first] == [r["noisy_sha256"] for r in blurred]
    assert [r["noisy_sha256"] for r in first] != [r["noisy_sha256"] for r in other_seed]
    assert {r["noise"] for r in first} == {noise}
    assert first[0]["psnr_noisy"] < 40  # the image is degraded
    # a subset sees the same noise for the same image
    alone = evaluate(lambda x: x, images[1:], [level], seed=3, progress=False, noise=noise)
    assert alone[0]["noisy_sha256"] == first[1]["noisy_sha256"]


def test_noise_levels_are_checked():
    clean = np.zeros((4, 4, 1), np.float32)
    with pytest.raises(R3LError, match="density must lie in"):
        noisy_version(clean, "x", 2.0, 0, "salt_pepper")
    with pytest.raises(R3LError, match="peak must be positive"):
        from_dict({"env": {"noise": "poisson", "sigma": 0}})
    with pytest.raises(R3LError, match="env.sigma.*density"):
        from_dict({"env": {"noise": "salt_pepper", "sigma": [0.1, 1.5]}})
    with pytest.raises(R3LError, match="env.noise"):
        from_dict({"env": {"noise": "speckle"}})


# --- pixelRL's filter actions -------------------------------------------------------------------------------

FILTER_TOLERANCE = 2e-6
"""Largest difference from OpenCV on float32 images (measured up to 3e-7: float rounding of the sums)."""

OPENCV = {
    "gaussian_0.5": (lambda x: gaussian_blur(x, 0.5), lambda a: cv2.GaussianBlur(a, (5, 5), 0.5)),
    "gaussian_1.5": (lambda x: gaussian_blur(x, 1.5), lambda a: cv2.GaussianBlur(a, (5, 5), 1.5)),
    "bilateral_0.1": (lambda x: bilateral_filter(x, 5, 0.1, 5.0), lambda a: cv2.bilateralFilter(a, 5, 0.1, 5.0)),
    "bilateral_1.0": (lambda x: bilateral_filter(x, 5, 1.0, 5.0), lambda a: cv2.bilateralFilter(a, 5, 1.0, 5.0)),
    "median": (median_blur, lambda a: cv2.medianBlur(a, 5)),
    "box": (box_blur, lambda a: cv2.blur(a, (5, 5))),
}


@pytest.mark.parametrize("name", sorted(OPENCV))
@pytest.mark.parametrize("kind", ["uniform", "noisy"])
def test_filters_match_opencv(name, kind):
    rng = np.random.default_rng([sorted(OPENCV).index(name), ["uniform", "noisy"].index(kind)])
    batch = rng.random((2, 3, 23, 31)).astype(np.float32)
    if kind == "noisy":  # an unclipped noisy image, values outside [0, 1]
        batch = (batch * 0.6 + 0.2 + rng.standard_normal(batch.shape) * 0.2).astype(np.float32)
    ours, theirs = OPENCV[name]
    result = ours(torch.from_numpy(batch)).numpy()
    for b in range(2):
        for c in range(3):
            expected = theirs(np.ascontiguousarray(batch[b, c]))
            assert np.abs(result[b, c] - expected).max() <= FILTER_TOLERANCE, (name, b, c)


def test_pixelrl_actions_are_the_nine_edits():
    env = FilterDenoiseEnv(sigma=25.0)
    assert env.n_actions == 9 == len(FILTER_ACTIONS) and env.steps == 5
    state = torch.rand(2, 1, 12, 13)
    candidates = env.candidates(state)
    assert candidates.shape == (2, 1, 9, 12, 13)
    assert torch.allclose(candidates[:, :, 0], state - 1 / 255) and torch.equal(candidates[:, :, 1], state)
    assert torch.allclose(candidates[:, :, 2], state + 1 / 255)
    assert torch.equal(candidates[:, :, 5], median_blur(state))
    actions = torch.randint(0, 9, state.shape, generator=torch.Generator().manual_seed(0))
    nxt = env.transition(state, actions)
    for k in range(9):
        assert torch.equal(nxt[actions == k], candidates[:, :, k][actions == k])


def test_pixelrl_action_rewards_are_the_rewards_each_action_earns():
    env = FilterDenoiseEnv(sigma=25.0)
    clean = torch.rand(2, 3, 10, 11)
    state = env.start(clean, torch.Generator().manual_seed(0))
    every = env.action_rewards(state, clean)
    for k in range(9):
        actions = torch.full(state.shape, k)
        assert torch.allclose(every[:, :, k], env.reward(state, env.transition(state, actions), clean), atol=1e-5)


def test_pixelrl_config_and_tiled_inference(tmp_path):
    """A pixelRL checkpoint applies its filters at inference, and tiling (with the filters' reach in the margin)
    equals untiled inference."""
    from conftest import ROOT
    from r3l.config import load_config
    from r3l.inference.denoiser import Denoiser
    from r3l.models.spec import build_network, spec_from_config

    cfg = load_config(ROOT / "configs" / "pixelrl_gray_sigma25.yaml", ["model.features=8", "model.init=scratch"])
    assert isinstance(make_env(cfg.env), FilterDenoiseEnv)
    spec = spec_from_config(cfg.model, cfg.env)
    assert spec.task == "pixelrl_denoise" and spec.n_actions == 9 and spec.steps == 5
    torch.manual_seed(0)
    net = build_network(spec)
    whole = Denoiser(net, spec, "cpu")
    tiled = Denoiser(net, spec, "cpu", tile=16)
    assert tiled.radius == whole.radius == (16 + 2) * 5  # the network's 16 plus the 5×5 filters' 2, per step
    noisy = torch.rand(1, 1, 40, 37)
    assert torch.allclose(whole(noisy), tiled(noisy), atol=1e-6)
    expected = Denoiser(net, spec, "cpu", decoding="expected")(noisy)
    assert expected.shape == noisy.shape and not torch.equal(expected, whole(noisy))


def test_pixelrl_refuses_another_action_count():
    with pytest.raises(R3LError, match="env.n_actions.*9 actions"):
        make_env(from_dict({"env": {"name": "pixelrl_denoise", "n_actions": 27}}).env)


def test_pixelrl_checkpoint_denoises_and_explains_from_the_command_line(tmp_path):
    from r3l.cli import main
    from r3l.models.checkpoint import Checkpoint, save_checkpoint
    from r3l.models.networks import ActorCritic

    arch = {"name": "r3l", "channels": 1, "features": 8, "n_actions": 9, "action_step": 1.0, "steps": 5,
            "task": "pixelrl_denoise"}
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "p.safetensors", Checkpoint(arch, ActorCritic(1, 9, 8, "kaiming").state_dict()))
    rng = np.random.default_rng(0)
    write_image(tmp_path / "n.png", np.clip(0.5 + rng.standard_normal((24, 30, 1)) * 0.1, 0, 1))
    assert main(["denoise", "--checkpoint", str(tmp_path / "p.safetensors"), str(tmp_path / "n.png"), "-o",
                 str(tmp_path / "d.png"), "--explain", str(tmp_path / "ex"), "--device", "cpu"]) == 0
    out = read_native(tmp_path / "d.png")
    assert out.shape == (24, 30, 1)
    assert sorted(p.name for p in (tmp_path / "ex" / "n").iterdir()) == \
        ["estimate.gif", "step1.png", "step2.png", "step3.png", "step4.png", "step5.png"]

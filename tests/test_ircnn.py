"""IRCNN's weights: the Caffe reader, KAIR's layout, the referee figure, and the initialisations built on them."""

import numpy as np
import pytest
import torch

from conftest import SHARED, needs_shared, one_error
from r3l.cli import main
from r3l.config import from_dict
from r3l.errors import R3LError
from r3l.io.images import write_image
from r3l.models.ircnn import (
    IRCNN,
    IrcnnStart,
    init_r3l_from_ircnn,
    init_r3n_from_ircnn,
    ircnn_from_weights,
    load_ircnn_layers,
)
from r3l.models.networks import R3N, ActorCritic
from r3l.tasks.denoise import ResidualDenoiseEnv


def model_of(cfg):
    """The network a training config starts from, as the trainer builds it."""
    from r3l.models.build import build_model
    from r3l.models.spec import spec_from_config

    return build_model(spec_from_config(cfg.model, cfg.env), cfg.model)


CAFFE = {s: SHARED / "weights" / "ircnn" / f"zhang_cvpr17_denoise_{s}_gray.caffemodel" for s in (15, 25, 50)}


def kair_file(path, levels):
    """A file in the layout of KAIR's ircnn_gray.pth: entries '0' … '24' (σ = 2 … 50) of state dicts."""
    nets = {s: ircnn_from_weights(CAFFE[s]).state_dict() for s in levels}
    entries = {}
    for index, sigma in enumerate(range(2, 51, 2)):
        nearest = min(levels, key=lambda s: abs(s - sigma))
        entries[str(index)] = {k: v.clone() for k, v in nets[nearest].items()}
    torch.save(entries, path)
    return path


@needs_shared
def test_caffe_reader_layout():
    layers = load_ircnn_layers(CAFFE[25])
    assert [tuple(w.shape) for w, _ in layers] == [(64, 1, 3, 3)] + [(64, 64, 3, 3)] * 5 + [(1, 64, 3, 3)]
    assert [tuple(b.shape) for _, b in layers] == [(64,)] * 6 + [(1,)]
    # The three files hold different denoisers.
    assert not torch.equal(load_ircnn_layers(CAFFE[15])[0][0], layers[0][0])
    net = ircnn_from_weights(CAFFE[25])
    assert [m.dilation[0] for m in net.model if isinstance(m, torch.nn.Conv2d)] == [1, 2, 3, 4, 3, 2, 1]


@needs_shared
def test_kair_layout_picks_the_level(tmp_path):
    path = kair_file(tmp_path / "ircnn_gray.pth", (15, 25))
    for sigma in (16, 26):  # KAIR's entries: sigma 2, 4, ..., 50
        ours = load_ircnn_layers(path, sigma)
        caffe = load_ircnn_layers(CAFFE[sigma - 1])
    with pytest.warns(UserWarning, match="sigma 26"):  # KAIR's rule ceil(sigma / 2) - 1 takes the next level up
        load_ircnn_layers(path, 25)
        assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(ours, caffe))


@needs_shared
def test_referee_six_bsd68_images(capsys):
    """IRCNN σ 25 alone gives 29.54 dB on the first 6 BSD68 images (KAIR's DnCNN 29.61): its published figures
    on all 68 (29.15 at σ 25, 31.63 at σ 15) are reproduced by the same command without --max-images."""
    code = main(["eval", "--model", "ircnn", "--weights", str(CAFFE[25]), "--data", str(SHARED / "datasets" / "BSD68"),
                 "--sigma", "25", "--max-images", "6", "--quiet"])
    out = capsys.readouterr().out
    assert code == 0
    assert "PSNR 29.54 dB" in out, out


@needs_shared
def test_damaged_and_foreign_files(tmp_path, capsys):
    raw = bytearray(CAFFE[25].read_bytes())
    (tmp_path / "cut.caffemodel").write_bytes(bytes(raw[: len(raw) // 2]))
    write_image(tmp_path / "x.png", np.full((8, 8, 1), 0.5, np.float32))
    code = main(["denoise", "--model", "ircnn", "--weights", str(tmp_path / "cut.caffemodel"), str(tmp_path / "x.png"),
                 "-o", str(tmp_path / "y.png")])
    one_error(code, capsys.readouterr().err, "cut.caffemodel", "IRCNN")
    # Same size, a weight blown up: refused as damaged.
    layers = load_ircnn_layers(CAFFE[25])
    needle = layers[1][0].flatten()[:4].numpy().astype("<f4").tobytes()
    at = bytes(raw).index(needle)
    raw[at:at + 4] = np.float32(1e30).tobytes()
    (tmp_path / "big.caffemodel").write_bytes(bytes(raw))
    with pytest.raises(R3LError, match="damaged"):
        load_ircnn_layers(tmp_path / "big.caffemodel")
    torch.save({"model.0.weight": torch.zeros(3)}, tmp_path / "other.pth")
    with pytest.raises(R3LError, match="IRCNN"):
        load_ircnn_layers(tmp_path / "other.pth")
    (tmp_path / "text.caffemodel").write_text("not a model at all")
    with pytest.raises(R3LError, match="text.caffemodel"):
        load_ircnn_layers(tmp_path / "text.caffemodel")
    with pytest.raises(R3LError, match="not found"):
        load_ircnn_layers(tmp_path / "missing.caffemodel")


@needs_shared
@pytest.mark.parametrize("form", ["logits", "gaussian"])
def test_residual_head_greedy_action_is_ircnn_residual(form):
    net = ActorCritic(1, 27, 64, "residual", form)
    init_r3l_from_ircnn(net, CAFFE[25], IrcnnStart(head_init="residual", temperature=16.0))
    ircnn = ircnn_from_weights(CAFFE[25])
    rng = np.random.default_rng(0)
    clean = torch.from_numpy(rng.random((1, 1, 40, 40), dtype=np.float32) * 0.5 + 0.25)
    noisy = clean + 25 / 255 * torch.randn(1, 1, 40, 40, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        residual = 255 * (ircnn(noisy) - noisy)
        action = net.policy_logits(noisy).argmax(2)
    expected = residual.round().clamp(-13, 13) + 13
    # Rounding ties aside (a residual within 1e-3 of a half level), the greedy action is IRCNN's residual.
    near_tie = ((residual - residual.floor() - 0.5).abs() < 1e-3) & (residual.abs() < 13)
    assert ((action == expected) | near_tie).all()
    # The logits form and the Gaussian form are the same policy at the start.
    other = ActorCritic(1, 27, 64, "residual", "logits" if form == "gaussian" else "gaussian")
    init_r3l_from_ircnn(other, CAFFE[25], IrcnnStart(head_init="residual", temperature=16.0))
    with torch.no_grad():
        a = torch.log_softmax(net.policy_logits(noisy), 2)
        b = torch.log_softmax(other.policy_logits(noisy), 2)
    assert torch.allclose(a, b, atol=1e-3)


@needs_shared
def test_r3n_residual_head_and_layers():
    net = R3N(1, 64, steps=1, head_init="residual")
    init_r3n_from_ircnn(net, CAFFE[25], IrcnnStart(head_init="residual"))
    ircnn = ircnn_from_weights(CAFFE[25])
    noisy = torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        step = net(noisy) - noisy
        target = ircnn(noisy) - noisy
    # tanh is near-linear over IRCNN's residuals (|r| ≲ 0.3): one R3N step is IRCNN's output to 1e-2.
    assert (step - torch.tanh(target)).abs().max() < 1e-5
    assert (step - target).abs().max() < 2e-2
    assert torch.equal(net.encoder[6].weight, ircnn.model[6].weight)


@needs_shared
def test_ircnn_init_from_config_and_errors(tmp_path):

    base = {"model": {"init": "ircnn", "head_init": "residual", "ircnn_weights": str(CAFFE[25])}}
    net = model_of(from_dict(base))
    assert isinstance(net, ActorCritic)
    with pytest.raises(R3LError, match="model.head_init residual needs model.init ircnn"):
        model_of(from_dict({"model": {"init": "scratch", "head_init": "residual"}}))
    with pytest.raises(R3LError, match="channel"):
        model_of(from_dict({"model": {**base["model"], "channels": 3}}))
    with pytest.raises(R3LError, match="not residuals"):
        model_of(from_dict({**base, "env": {"name": "pixelrl_denoise", "n_actions": 9, "steps": 5}}))
    # pixelRL's recipe: IRCNN's layers, fresh last layers.
    pix = model_of(from_dict({"model": {**base["model"], "head_init": "small"},
                                 "env": {"name": "pixelrl_denoise", "n_actions": 9, "steps": 5}}))
    assert torch.equal(pix.encoder[0].weight, ircnn_from_weights(CAFFE[25]).model[0].weight)
    assert pix.policy[-1].weight.abs().max() < 0.01


def test_gaussian_policy_logits_shape_and_argmax():
    net = ActorCritic(2, 27, 8, "small", "gaussian", action_step=1.0)
    with torch.no_grad():
        net.policy[-1].weight.zero_()
        net.policy[-1].bias.copy_(torch.tensor([5.2 / 255, -40 / 255]))
        logits, values = net(torch.rand(3, 2, 6, 5))
    assert logits.shape == (3, 2, 27, 6, 5) and values.shape == (3, 2, 6, 5)
    actions = logits.argmax(2)
    assert (actions[:, 0] == 13 + 5).all() and (actions[:, 1] == 0).all()  # rounded, clipped to −13
    env = ResidualDenoiseEnv()
    assert torch.allclose(env.residual(actions[:, 0]), torch.tensor(5 / 255))


def test_ircnn_module_predicts_noise():
    net = IRCNN()
    with torch.no_grad():
        for m in net.model:
            if isinstance(m, torch.nn.Conv2d):
                m.weight.zero_()
                m.bias.zero_()
        x = torch.rand(1, 1, 9, 9)
        assert torch.equal(net(x), x)


@needs_shared
def test_head_gain_scales_the_initial_residual():
    full, part = ActorCritic(1, 27, 64, "residual", "gaussian"), ActorCritic(1, 27, 64, "residual", "gaussian")
    init_r3l_from_ircnn(full, CAFFE[25], IrcnnStart(temperature=1.0))
    init_r3l_from_ircnn(part, CAFFE[25], IrcnnStart(temperature=1.0, gain=0.4))
    noisy = torch.rand(1, 1, 24, 24)
    with torch.no_grad():
        r_full = full.policy[:](full.encoder(noisy))
        r_part = part.policy[:](part.encoder(noisy))
    assert torch.allclose(r_part, 0.4 * r_full, atol=1e-6)


def test_clipped_r3n_steps_and_straight_through_gradient():
    net = R3N(1, 8, steps=1, max_step=13)
    with torch.no_grad():
        net.head[-1].weight.zero_()
        net.head[-1].bias.fill_(0.2)  # tanh(0.2) ≈ 50 levels: clipped to 13
    x = torch.full((1, 1, 6, 6), 0.5, requires_grad=True)
    out = net(x)
    assert torch.allclose(out - 0.5, torch.full_like(out, 13 / 255))
    out.sum().backward()
    assert net.head[-1].bias.grad.abs().item() > 0  # the clip passes the gradient through


def test_r3l_starts_from_an_r3n(tmp_path):
    from r3l.models.checkpoint import Checkpoint, save_checkpoint
    from r3l.models.spec import ArchSpec

    torch.manual_seed(0)
    r3n = R3N(1, 8, steps=6, max_step=13)
    arch = ArchSpec.of("r3n", channels=1, features=8, steps=6, max_step=13.0)
    save_checkpoint(tmp_path / "r3n.safetensors", Checkpoint(arch, r3n.state_dict(), {}, 10, {}))
    cfg = from_dict({"model": {"init": "checkpoint", "init_checkpoint": str(tmp_path / "r3n.safetensors"),
                               "features": 8, "policy_form": "gaussian", "head_init": "residual",
                               "head_temperature": 1.0}})
    net = model_of(cfg)
    x = torch.rand(2, 1, 16, 16)
    with torch.no_grad():
        step = r3n.residual(x)
        action = net.policy_logits(x).argmax(2)
    expected = (255 * step).round().clamp(-13, 13) + 13
    near_tie = ((255 * step).frac().abs() - 0.5).abs() < 0.05
    assert ((action == expected) | near_tie).all()
    assert torch.equal(net.encoder[2].weight, r3n.encoder[2].weight)
    with pytest.raises(R3LError, match="init_checkpoint"):
        model_of(from_dict({"model": {"init": "checkpoint"}}))


def test_r3n_continues_from_an_r3n_clipped_otherwise(tmp_path):
    """``init: checkpoint`` with the same network continues from its weights, also when only the step clip (or
    the step count) differs; another shape is refused."""
    from r3l.models.checkpoint import Checkpoint, save_checkpoint
    from r3l.models.spec import ArchSpec

    torch.manual_seed(0)
    r3n = R3N(1, 8, steps=6)
    save_checkpoint(tmp_path / "r3n.safetensors",
                    Checkpoint(ArchSpec.of("r3n", channels=1, features=8, steps=6), r3n.state_dict(), {}, 10, {}))
    model = {"name": "r3n", "init": "checkpoint", "init_checkpoint": str(tmp_path / "r3n.safetensors"),
             "head_init": "residual"}
    net = model_of(from_dict({"model": {**model, "features": 8, "max_step": 13}}))
    assert net.max_step == 13
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), r3n.state_dict().values()))
    with pytest.raises(R3LError, match="r3n checkpoint"):
        model_of(from_dict({"model": {**model, "features": 16}}))


def test_colour_r3n_starts_from_a_gray_one(tmp_path):
    """Widened from a gray R3N, a colour R3N denoises a gray image (copied to three channels) as the gray one."""
    from r3l.models.checkpoint import Checkpoint, save_checkpoint
    from r3l.models.spec import ArchSpec

    torch.manual_seed(0)
    gray = R3N(1, 8, steps=2)
    save_checkpoint(tmp_path / "g.safetensors",
                    Checkpoint(ArchSpec.of("r3n", channels=1, features=8, steps=2), gray.state_dict(), {}, 1, {}))
    model = {"name": "r3n", "channels": 3, "features": 8, "init": "checkpoint",
             "init_checkpoint": str(tmp_path / "g.safetensors")}
    colour = model_of(from_dict({"model": model, "env": {"steps": 2}}))
    x = torch.rand(1, 1, 12, 12)
    with torch.no_grad():
        assert torch.allclose(colour(x.expand(1, 3, 12, 12)), gray(x).expand(1, 3, 12, 12), atol=1e-6)
    with pytest.raises(R3LError, match="same width"):
        model_of(from_dict({"model": {**model, "features": 16}}))

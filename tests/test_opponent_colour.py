"""A gray network as a colour model: the opponent colour space, the checkpoint field, packing, inference."""

import json

import numpy as np
import pytest
import torch

from conftest import DATASETS, needs_shared
from r3l.cli import main
from r3l.errors import R3LError
from r3l.inference.denoiser import Denoiser
from r3l.models.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from r3l.models.networks import OPPONENT, R3N, OpponentColour
from r3l.models.spec import ArchSpec, build_network


def gray_r3n(seed=0, features=4):
    torch.manual_seed(seed)
    return R3N(1, features, steps=2)


def test_transform_is_orthogonal_and_inverted():
    m = torch.tensor(OPPONENT)
    gram = m @ m.T
    assert torch.allclose(gram, torch.diag(torch.diagonal(gram)), atol=1e-7)  # noise stays independent
    still = R3N(1, 4, steps=1)
    with torch.no_grad():
        still.head[-1].weight.zero_()
        still.head[-1].bias.zero_()  # every step adds nothing: the colour model is the identity
    x = torch.rand(2, 3, 9, 7)
    assert torch.allclose(OpponentColour(still)(x), x, atol=1e-6)


def test_each_opponent_channel_is_denoised_as_a_gray_image():
    inner = gray_r3n()
    x = torch.rand(1, 3, 10, 10)
    m, offset = torch.tensor(OPPONENT), torch.tensor([0.0, 0.5, 0.5]).view(1, 3, 1, 1)
    with torch.no_grad():
        opponent = torch.einsum("ij,bjhw->bihw", m, x) + offset
        by_hand = torch.cat([inner(opponent[:, k:k + 1]).clamp(0, 1) for k in range(3)], 1) - offset
        expected = torch.einsum("ij,bjhw->bihw", torch.linalg.inv(m), by_hand)
        assert torch.allclose(OpponentColour(inner)(x), expected, atol=1e-6)
    with pytest.raises(R3LError, match="gray"):
        OpponentColour(R3N(3, 4, 1))


def test_the_spec_field_round_trips_and_gray_headers_are_unchanged(tmp_path):
    spec = ArchSpec.of("r3n", channels=3, features=4, steps=2, colour_space="opponent")
    net = build_network(spec)
    assert isinstance(net, OpponentColour)
    save_checkpoint(tmp_path / "c.safetensors", Checkpoint(spec, net.state_dict(), {}, 0, {}))
    assert load_checkpoint(tmp_path / "c.safetensors").arch == spec
    # A gray header written before the field existed reads as no colour space.
    assert ArchSpec.coerce({"name": "r3n", "channels": 1, "features": 4, "steps": 2}).options.colour_space == ""
    with pytest.raises(R3LError, match="colour_space"):
        ArchSpec.coerce({"name": "r3n", "channels": 3, "features": 4, "steps": 2, "colour_space": "lab"})
    with pytest.raises(R3LError, match="channels 3"):
        build_network(ArchSpec.of("r3n", channels=1, features=4, steps=2, colour_space="opponent"))


@needs_shared
def test_pack_a_gray_r3n_as_a_colour_model(tmp_path, capsys):
    gray = gray_r3n(features=8)
    arch = ArchSpec.of("r3n", channels=1, features=8, steps=2)
    save_checkpoint(tmp_path / "g.safetensors", Checkpoint(arch, gray.state_dict(), {"env": {"sigma": [0.0, 55.0]}},
                                                           7, {}))
    args = ["models", "pack", "--checkpoint", str(tmp_path / "g.safetensors"), "--name", "tiny-colour", "--out",
            str(tmp_path / "models"), "--data-root", str(DATASETS), "--check-data", "CBSD68", "--images", "101085",
            "--check-sigma", "25", "--opponent-colour"]
    assert main(args) == 0
    card = json.loads((tmp_path / "models" / "tiny-colour.json").read_text())
    assert card["arch"]["options"]["channels"] == 3 and card["arch"]["options"]["colour_space"] == "opponent"
    assert card["check"]["data"] == "CBSD68" and card["sigma"] == [0.0, 55.0]
    den = Denoiser.from_checkpoint(tmp_path / "models" / "tiny-colour.safetensors", "cpu", engine="torch")
    image = np.random.default_rng(0).random((12, 10, 3)).astype(np.float32)
    with torch.no_grad():
        expected = OpponentColour(gray)(torch.from_numpy(image).permute(2, 0, 1)[None]).clamp(0, 1)
    assert np.allclose(den.denoise(image), expected[0].permute(1, 2, 0).numpy(), atol=1e-6)
    capsys.readouterr()
    colour = tmp_path / "models" / "tiny-colour.safetensors"
    assert main(args[:3] + [str(colour)] + args[4:5] + ["tiny-again"] + args[6:]) == 2
    assert "made from a gray checkpoint" in capsys.readouterr().err
    # The colour form is R3N's option: a policy checkpoint is refused by what its options lack, in one line.
    policy = ArchSpec.of("r3l", features=4, n_actions=9, steps=2)
    save_checkpoint(tmp_path / "p.safetensors", Checkpoint(policy, build_network(policy).state_dict(), {}, 1, {}))
    assert main(args[:3] + [str(tmp_path / "p.safetensors")] + args[4:5] + ["tiny-policy"] + args[6:]) == 2
    assert "colour_space option" in capsys.readouterr().err


def test_an_opponent_colour_r3n_trains_from_a_gray_checkpoint(tmp_path):
    """``model.colour_space: opponent`` from a config: the gray checkpoint's weights start its gray network,
    and training on colour crops moves them."""
    from conftest import tiny_config
    from r3l.config import from_dict
    from r3l.training.trainer import Trainer

    gray = gray_r3n(features=4)
    save_checkpoint(tmp_path / "g.safetensors", Checkpoint(ArchSpec.of("r3n", features=4, steps=2),
                                                           gray.state_dict()))
    cfg = tiny_config("skimage", "", episodes=2)
    cfg["model"] = {"name": "r3n", "channels": 3, "features": 4, "colour_space": "opponent", "init": "checkpoint",
                    "init_checkpoint": str(tmp_path / "g.safetensors")}
    cfg["env"] = {"steps": 2}
    trainer = Trainer(from_dict(cfg), tmp_path / "run")
    assert isinstance(trainer.net, OpponentColour)
    assert all(torch.equal(v, gray.state_dict()[k]) for k, v in trainer.net.inner.state_dict().items())
    trainer.train()
    saved = load_checkpoint(tmp_path / "run" / "last.safetensors")
    assert saved.arch.options.colour_space == "opponent" and saved.arch.channels == 3
    assert not torch.equal(saved.model["inner.encoder.0.weight"], gray.state_dict()["encoder.0.weight"])
    with pytest.raises(R3LError, match="model.colour_space: opponent is for colour models"):
        from_dict({**cfg, "model": {**cfg["model"], "channels": 1}})

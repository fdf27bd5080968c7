import json

import pytest
import torch

from r3l.io.checkpoint import Checkpoint, load_checkpoint, load_weights, save_checkpoint
from r3l.denoiser import Denoiser
from r3l.errors import R3LError
from r3l.models.networks import ActorCritic

ARCH = {"name": "r3l", "channels": 1, "features": 8, "n_actions": 27, "action_step": 1.0, "steps": 6}


def test_roundtrip_and_denoiser(tmp_path):
    net = ActorCritic(1, 27, 8)
    path = tmp_path / "a.safetensors"
    save_checkpoint(path, Checkpoint(ARCH, net.state_dict(), {"seed": 3}, episode=12, info={"best_val_psnr": 1.5}))
    ckpt = load_checkpoint(path)
    assert ckpt.episode == 12 and ckpt.config == {"seed": 3} and ckpt.info["best_val_psnr"] == 1.5
    for k, v in net.state_dict().items():
        assert torch.equal(ckpt.model[k], v)
    den = Denoiser.from_checkpoint(path, "cpu")
    x = torch.rand(1, 1, 12, 12)
    out = den(x)
    assert out.shape == x.shape and 0 <= out.min() and out.max() <= 1


def test_other_architecture_is_named(tmp_path):
    path = tmp_path / "c3.safetensors"
    arch3 = dict(ARCH, channels=3)
    save_checkpoint(path, Checkpoint(arch3, ActorCritic(3, 27, 8).state_dict()))
    with pytest.raises(R3LError, match=r"c3.safetensors: checkpoint holds name=r3l, channels=3.*expected .*channels=1"):
        load_weights(ActorCritic(1, 27, 8), load_checkpoint(path), ARCH, path)


def test_damaged_and_foreign_files(tmp_path):
    path = tmp_path / "a.safetensors"
    save_checkpoint(path, Checkpoint(ARCH, ActorCritic(1, 27, 8).state_dict()))
    raw = bytearray(path.read_bytes())
    raw[-10] ^= 0xFF
    bad = tmp_path / "flipped.safetensors"
    bad.write_bytes(bytes(raw))
    with pytest.raises(R3LError, match="flipped.safetensors: checkpoint is damaged"):
        load_checkpoint(bad)
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(bytes(raw[: len(raw) // 2]))
    with pytest.raises(R3LError, match="cut.safetensors"):
        load_checkpoint(cut)
    from safetensors.torch import save_file

    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, foreign)
    with pytest.raises(R3LError, match="foreign.safetensors: not an r3l checkpoint"):
        load_checkpoint(foreign)
    pickle = tmp_path / "model.pth"
    torch.save(ActorCritic(1, 27, 8).state_dict(), pickle)
    with pytest.raises(R3LError, match="model.pth: not a safetensors checkpoint"):
        load_checkpoint(pickle)


def test_metadata_is_plain_json(tmp_path):
    path = tmp_path / "a.safetensors"
    save_checkpoint(path, Checkpoint(ARCH, ActorCritic(1, 27, 8).state_dict(), {"a": 1}, 5))
    raw = path.read_bytes()
    header = json.loads(raw[8 : 8 + int.from_bytes(raw[:8], "little")])
    meta = json.loads(header["__metadata__"]["r3l"])
    assert meta["arch"] == {**ARCH, "head_init": "kaiming", "task": "residual_denoise", "policy_form": "logits"} and meta["episode"] == 5

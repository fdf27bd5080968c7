import json
from pathlib import Path

import pytest
import torch

from r3l.errors import R3LError
from r3l.inference.denoiser import Denoiser
from r3l.models.checkpoint import Checkpoint, load_checkpoint, load_weights, save_checkpoint
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
    assert meta["arch"] == {"model": "r3l", "options": {"channels": 1, "features": 8, "head_init": "kaiming",
                                                        "policy_form": "logits"},
                            "task": "residual_denoise", "task_options": {"n_actions": 27, "action_step": 1.0,
                                                                         "steps": 6}}
    assert meta["episode"] == 5 and meta["format_version"] == 3


def assert_same_output_on_any_cpu(out, reference) -> None:
    """``out`` is what a stored model gave on another CPU, up to that CPU's float rounding.

    Another CPU's kernels (AVX-512, AVX2, NEON, AMX) sum in other orders: a continuous output differs in its last
    bits (measured 6e-8 between an AMD EPYC and an Intel Xeon), and a policy's argmax can flip at a near-tie,
    which moves that pixel by one action. Reading a weight, a step size or a colour transform wrongly changes
    most values by far more than 1e-5 (an action step is 2/255 here), so: 99% of the values within 1e-5 and a
    mean difference under 1e-4."""
    import numpy as np

    diff = np.abs(out.astype(np.float64) - reference.astype(np.float64))
    assert out.shape == reference.shape and out.dtype == reference.dtype
    assert np.mean(diff <= 1e-5) >= 0.99, f"{np.mean(diff > 1e-5):.1%} of the values moved by more than 1e-5"
    assert diff.mean() < 1e-4, f"mean difference {diff.mean():.2e}"


def test_the_cross_cpu_comparison_catches_a_wrongly_read_model():
    """What :func:`assert_same_output_on_any_cpu` lets through is rounding, not a misread model: the stored R3N
    run for one step instead of two, or with another step clip, is told apart (93% of its values move, by 0.05
    on average); a one-bit change in every value passes."""
    import numpy as np

    from r3l.models.spec import ArchSpec, build_network

    path = Path(__file__).parent / "data" / "r3n_opponent_v2.safetensors"
    reference = np.load(path.with_suffix(".npz"))
    ckpt = load_checkpoint(path)
    for misread in ({"steps": 1, "max_step": 13.0}, {"steps": 2, "max_step": 6.0}):
        arch = ArchSpec.of("r3n", channels=3, features=4, colour_space="opponent", **misread)
        net = build_network(arch)
        load_weights(net, ckpt, arch, path)
        out = Denoiser(net, arch, "cpu", engine="torch").denoise(reference["input"])
        with pytest.raises(AssertionError):
            assert_same_output_on_any_cpu(out, reference["output"])
    output = reference["output"]
    assert_same_output_on_any_cpu(np.nextafter(output, np.float32(2)), output)


@pytest.mark.parametrize("name", ["r3l_v2", "r3n_opponent_v2"])
def test_checkpoints_of_format_version_2_still_load_and_denoise_as_they_did(name, tmp_path):
    """``tests/data/<name>.safetensors`` was written by r3l's format version 2 (a flat architecture header), with
    the output its model gave then for a fixed input (``.npz``). Read today, it names the same model, gives the
    same output, and written again it is a version-3 file that reads back equal."""
    import numpy as np

    from r3l.models.spec import ArchSpec

    path = Path(__file__).parent / "data" / f"{name}.safetensors"
    raw = path.read_bytes()
    meta = json.loads(json.loads(raw[8 : 8 + int.from_bytes(raw[:8], "little")])["__metadata__"]["r3l"])
    assert meta["format_version"] == 2 and "name" in meta["arch"]  # really the old header
    ckpt = load_checkpoint(path)
    if name == "r3l_v2":
        assert ckpt.arch == ArchSpec.of("r3l", channels=1, features=4, head_init="small", n_actions=5,
                                        action_step=2.0, steps=3)
    else:
        assert ckpt.arch == ArchSpec.of("r3n", channels=3, features=4, max_step=13.0, colour_space="opponent",
                                        steps=2)
    assert ckpt.episode == 7 and ckpt.info == {"best_psnr": 20.5}
    reference = np.load(path.with_suffix(".npz"))
    out = Denoiser.from_checkpoint(path, "cpu", engine="torch").denoise(reference["input"])
    assert_same_output_on_any_cpu(out, reference["output"])
    save_checkpoint(tmp_path / "again.safetensors", ckpt)
    again = load_checkpoint(tmp_path / "again.safetensors")
    assert again.arch == ckpt.arch and again.arch.to_dict()["model"] == ckpt.arch.name
    assert all(torch.equal(again.model[k], v) for k, v in ckpt.model.items())


def test_an_architecture_header_names_the_field_it_cannot_use(tmp_path):
    from r3l.models.spec import ArchSpec

    good = ArchSpec.of("dncnn", features=8, depth=5).to_dict()
    for change, message in [
        ({"model": "unet"}, "arch.model = 'unet' is invalid, expected one of r3l, r3n, dncnn, ircnn"),
        ({"options": {"features": 8, "depth": 1}}, "arch.options.depth: a whole number in [2, 1000], got 1"),
        ({"options": {"features": 8, "policy_form": "logits"}}, "unknown h arch.options.policy_form"),
        ({"options": {"channels": 2}}, "arch.options.channels: must be 1 (gray) or 3 (colour), got 2"),
        ({"task_options": [1]}, "arch.task_options = [1] is invalid, expected a JSON object"),
        ({"task_options": {"steps": "six"}}, "h arch.task_options.steps: expected a whole number, got 'six'"),
        ({"task_options": {"steps": 0}}, "h arch.task_options.steps: must be positive, got 0"),
    ]:
        with pytest.raises(R3LError) as info:
            ArchSpec.coerce({**good, **change}, "h arch")
        assert message in str(info.value)


@pytest.mark.parametrize("name", ["v2_run_r3l", "v2_run_dncnn"])
def test_a_run_written_by_format_version_2_resumes_with_its_own_config(name, tmp_path):
    """``tests/data/<name>/`` is a run stopped at episode 2 of 4 by r3l's format version 2: its config.yaml lists
    the keys of the single ``env``/``model`` sections (``model.depth`` for R3L, ...) and its checkpoint has the
    flat header. ``r3l train --resume`` with that config continues it to the end. (Single-threaded, the resumed
    weights equal those of the uninterrupted version-2 run: hashes in docs/architecture.md.)"""
    import shutil

    from r3l.cli import main

    run = tmp_path / name
    shutil.copytree(Path(__file__).parent / "data" / name, run)
    assert main(["train", "--config", str(run / "config.yaml"), "--run-dir", str(run), "--resume"]) == 0
    done = load_checkpoint(run / "last.safetensors", with_training_state=True)
    assert done.episode == 4 and done.optim_state
    raw = (run / "last.safetensors").read_bytes()
    assert json.loads(json.loads(raw[8 : 8 + int.from_bytes(raw[:8], "little")])["__metadata__"]["r3l"])[
        "format_version"] == 3


def test_a_key_of_another_model_is_refused_unless_it_holds_the_old_default():
    from r3l.config import from_dict

    base = {"data": {"train": "skimage"}}
    assert from_dict({**base, "model": {"name": "r3l", "depth": 17}}).model.name == "r3l"  # an old config.yaml
    with pytest.raises(R3LError, match="unknown config key model.depth"):
        from_dict({**base, "model": {"name": "r3l", "depth": 5}})
    with pytest.raises(R3LError, match="unknown config key env.action_step"):
        from_dict({**base, "env": {"name": "pixelrl_denoise", "action_step": 2.0}})


def test_r3l_models_average_writes_the_mean_of_the_weights_and_refuses_another_architecture(tmp_path, capsys):
    from r3l.cli import main

    paths = []
    for episode in (30, 60, 90):
        torch.manual_seed(episode)
        net = ActorCritic(1, 27, 8)
        paths.append(tmp_path / f"episode_{episode}.safetensors")
        save_checkpoint(paths[-1], Checkpoint(ARCH, net.state_dict(), {"seed": 3}, episode=episode))
    out = tmp_path / "average.safetensors"
    assert main(["models", "average", *map(str, paths), "--out", str(out)]) == 0
    assert "the mean of 3 checkpoints (episodes 30, 60, 90)" in capsys.readouterr().out
    averaged, models = load_checkpoint(out), [load_checkpoint(p).model for p in paths]
    assert averaged.info["averaged_episodes"] == [30, 60, 90] and averaged.episode == 90
    for key, value in averaged.model.items():
        assert torch.allclose(value, sum(m[key] for m in models) / 3, atol=1e-6)
    Denoiser.from_checkpoint(out, "cpu")  # a usable model
    other = tmp_path / "wide.safetensors"
    save_checkpoint(other, Checkpoint(dict(ARCH, features=4), ActorCritic(1, 27, 4).state_dict()))
    assert main(["models", "average", str(paths[0]), str(other), "--out", str(tmp_path / "x.safetensors")]) != 0
    assert "wide.safetensors: holds" in capsys.readouterr().err and not (tmp_path / "x.safetensors").exists()
    assert main(["models", "average", str(paths[0]), "--out", str(tmp_path / "x.safetensors")]) != 0
    assert "at least two checkpoints" in capsys.readouterr().err


def test_r3l_models_average_decodes_a_gaussian_policy_on_a_finer_grid_over_the_same_range(tmp_path, capsys):
    from r3l.cli import main
    from r3l.models.checkpoint import on_action_grid

    arch = dict(ARCH, n_actions=53, action_step=0.5, policy_form="gaussian")  # ±13 levels in half levels
    paths = []
    for episode in (30, 60):
        torch.manual_seed(episode)
        net = ActorCritic(1, 53, 8, policy_form="gaussian", action_step=0.5)
        paths.append(tmp_path / f"episode_{episode}.safetensors")
        config = {"env": {"name": "residual_denoise", "n_actions": 53, "action_step": 0.5}}
        save_checkpoint(paths[-1], Checkpoint(arch, net.state_dict(), config, episode=episode))
    out = tmp_path / "fine.safetensors"
    assert main(["models", "average", *map(str, paths), "--out", str(out), "--action-step", "0.125"]) == 0
    assert "decoded on 209 actions of 0.125 gray levels" in capsys.readouterr().out
    fine, coarse = load_checkpoint(out), on_action_grid(load_checkpoint(paths[0]), 0.5)
    assert fine.arch.task_options["n_actions"] == 209 and fine.arch.task_options["action_step"] == 0.125
    assert fine.config["env"]["n_actions"] == 209 and fine.config["env"]["action_step"] == 0.125
    assert coarse.arch.task_options == load_checkpoint(paths[0]).arch.task_options  # the same grid: unchanged

    # The same weights, a finer rounding of the same residual, within the same ±13 levels.
    net = ActorCritic(1, 209, 8, policy_form="gaussian", action_step=0.125)
    net.load_state_dict(fine.model)
    state = torch.rand(1, 1, 16, 16)
    with torch.no_grad():
        residual = 255.0 * net.policy(net.encoder(state))  # the Gaussian head's mean, in gray levels
        chosen = net.action_values[net.greedy_actions(state)]
    assert chosen.abs().max() <= 13.0
    inside = residual.abs() < 13.0
    assert inside.any() and ((chosen - residual).abs()[inside] <= 0.0625 + 1e-4).all()

    logits = tmp_path / "logits.safetensors"
    save_checkpoint(logits, Checkpoint(ARCH, ActorCritic(1, 27, 8).state_dict()))
    with pytest.raises(R3LError, match="only a Gaussian R3L policy"):
        on_action_grid(load_checkpoint(logits), 0.125)
    assert main(["models", "average", *map(str, paths), "--out", str(tmp_path / "x.safetensors"),
                 "--action-step", "0.3"]) != 0
    assert "does not divide" in capsys.readouterr().err and not (tmp_path / "x.safetensors").exists()

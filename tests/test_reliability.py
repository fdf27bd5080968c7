"""Crash safety, exact resume after SIGKILL, training health, and bad input everywhere."""

import errno
import os
import signal
import struct
import subprocess
import sys
import time
import zlib

import numpy as np
import pytest
import torch
import yaml

from conftest import tiny_config
from r3l.config import from_dict, load_config
from r3l.errors import R3LError
from r3l.io.images import list_images, read_image, write_image
from r3l.models.checkpoint import Checkpoint, load_checkpoint, previous_path, save_checkpoint
from r3l.models.networks import ActorCritic
from r3l.training.trainer import Trainer

ARCH = {"name": "r3l", "channels": 1, "features": 8, "n_actions": 27, "action_step": 1.0, "steps": 6}


def weights(path):
    return load_checkpoint(path).model


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def write_config(folder, **extra):
    values = tiny_config(str(folder / "train"), str(folder / "test"), episodes=12, **extra)
    values["train"].update(save_every=2, val_every=4, deterministic=True)
    values["data"]["workers"] = 1
    path = folder / "cfg.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def r3l_cmd(*args):
    return [sys.executable, "-m", "r3l", *map(str, args)]


def test_sigkill_then_resume_matches_uninterrupted_run(tiny_folder):
    cfg = write_config(tiny_folder)
    whole = subprocess.run(r3l_cmd("train", "--config", cfg, "--run-dir", tiny_folder / "whole"),
                           capture_output=True, text=True, timeout=600)
    assert whole.returncode == 0, whole.stderr

    run = tiny_folder / "killed"
    proc = subprocess.Popen(r3l_cmd("train", "--config", cfg, "--run-dir", run),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = run / "last.safetensors"
    deadline = time.time() + 300
    while time.time() < deadline:
        if last.is_file():
            try:
                if load_checkpoint(last).episode >= 4:
                    break
            except R3LError:
                pass  # being replaced right now
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = load_checkpoint(last).episode
    assert 4 <= killed_at < 12, "the kill must land mid-run"

    resumed = subprocess.run(r3l_cmd("train", "--config", cfg, "--run-dir", run, "--resume"),
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert load_checkpoint(last).episode == 12
    assert_same_weights(weights(last), weights(tiny_folder / "whole" / "last.safetensors"))
    assert not list(run.glob(".*.tmp*")), "temporary files left behind"


def test_damaged_newest_checkpoint_falls_back_to_previous(tiny_folder):
    values = tiny_config(str(tiny_folder / "train"), str(tiny_folder / "test"), episodes=8)
    values["train"]["save_every"] = 2
    whole = Trainer(from_dict(values), tiny_folder / "whole")
    whole.train()

    run = tiny_folder / "run"
    Trainer(from_dict(values), run).train(stop_at=6)
    assert load_checkpoint(previous_path(run / "last.safetensors")).episode == 4
    raw = bytearray((run / "last.safetensors").read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    (run / "last.safetensors").write_bytes(bytes(raw))
    with pytest.raises(R3LError, match="last.safetensors: checkpoint is damaged"):
        load_checkpoint(run / "last.safetensors")

    with pytest.warns(UserWarning, match="resuming from last.prev.safetensors \\(episode 4\\)"):
        resumed = Trainer(from_dict(values), run, resume=True)
    assert resumed.start_episode == 4
    resumed.train()
    assert_same_weights(weights(run / "last.safetensors"), weights(tiny_folder / "whole" / "last.safetensors"))

    # Both damaged: a clear error, nothing resumed.
    for path in (run / "last.safetensors", previous_path(run / "last.safetensors")):
        path.write_bytes(b"\0" * 64)
    with pytest.raises(R3LError, match="no usable checkpoint to resume from"):
        Trainer(from_dict(values), run, resume=True)


def _nan_rewards(trainer, episodes):
    """Make the environment's reward non-finite in the given episodes."""
    env, original = trainer.env, trainer.env.reward
    state = {"episode": None}
    run_episode = trainer.run_episode

    def patched_run(episode, clean, generator):
        state["episode"] = episode
        return run_episode(episode, clean, generator)

    def reward(s, n, target):
        r = original(s, n, target)
        return r * float("nan") if state["episode"] in episodes else r

    env.reward = reward
    trainer.run_episode = patched_run


def test_non_finite_updates_are_skipped_and_counted(tiny_folder):
    values = tiny_config(str(tiny_folder / "train"), "", episodes=4)
    values["train"].update(log_every=4, max_bad_updates=3)
    trainer = Trainer(from_dict(values), tiny_folder / "run")
    _nan_rewards(trainer, {1})
    last = trainer.train()
    # Episode 1's update: every one of its epochs × minibatches steps was skipped.
    assert last["health/bad_update"] == 1
    assert last["health/skipped_steps"] == values["ppo"]["epochs"] * values["ppo"]["minibatches"]
    assert all(torch.isfinite(v).all() for v in weights(tiny_folder / "run" / "last.safetensors").values())


def test_repeated_non_finite_updates_stop_training_with_good_checkpoint(tiny_folder):
    values = tiny_config(str(tiny_folder / "train"), "", episodes=12)
    values["train"].update(log_every=2, save_every=2, max_bad_updates=3)
    trainer = Trainer(from_dict(values), tiny_folder / "run")
    _nan_rewards(trainer, set(range(4, 12)))
    with pytest.raises(R3LError, match=r"training stopped at episode \d+: \d+ updates in a row had non-finite"):
        trainer.train()
    last = load_checkpoint(tiny_folder / "run" / "last.safetensors")
    assert 4 <= last.episode < 12
    assert all(torch.isfinite(v).all() for v in last.model.values())
    # Skipped updates leave the weights exactly as after the last good one.
    assert_same_weights(last.model, {k: v.detach() for k, v in trainer.net.state_dict().items()})


def test_disk_full_while_saving_keeps_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.safetensors"
    first = ActorCritic(1, 27, 8)
    save_checkpoint(path, Checkpoint(ARCH, first.state_dict(), episode=1), keep_previous=True)

    def no_space(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(R3LError, match="last.safetensors: could not write \\(No space left on device\\)"):
        save_checkpoint(path, Checkpoint(ARCH, ActorCritic(1, 27, 8).state_dict(), episode=2), keep_previous=True)
    monkeypatch.undo()
    assert load_checkpoint(path).episode == 1
    assert_same_weights(load_checkpoint(path).model, first.state_dict())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.safetensors"]


def test_checkpoint_rotation_keeps_previous(tmp_path):
    path = tmp_path / "last.safetensors"
    for episode in (2, 4, 6):
        save_checkpoint(path, Checkpoint(ARCH, ActorCritic(1, 27, 8).state_dict(), episode=episode),
                        keep_previous=True)
    assert load_checkpoint(path).episode == 6
    assert load_checkpoint(previous_path(path)).episode == 4


def _png_with_size(width, height):
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


@pytest.mark.parametrize("name,content,message", [
    ("zero.png", _png_with_size(0, 0), "not a readable image"),
    ("bomb.png", _png_with_size(100_000, 100_000), "exceeds the pixel limit"),
    ("text.png", b"hello world", "not a readable image"),
    ("empty.png", b"", "empty file"),
])
def test_bad_image_files(tmp_path, name, content, message):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(R3LError, match=f"{name}: .*{message}"):
        read_image(tmp_path / name)


def test_unreadable_folder(tmp_path, monkeypatch):
    from pathlib import Path

    def denied(self):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(Path, "iterdir", denied)
    with pytest.raises(R3LError, match="folder is not readable"):
        list_images(tmp_path)


@pytest.mark.parametrize("text,message", [
    ("algo:\n  lr: .nan\n", "algo.lr: expected a finite number"),
    ("ppo:\n  lr:\n", "algo.lr: expected a number, got None"),  # a section of an older config
    ("data:\n  train: ''\n", "data.train: required"),
    ("train:\n  episodes: -3\n", "train.episodes: must be positive"),
    ("train:\n  episodes: 2.5\n", "train.episodes: expected a whole number"),
    ("env:\n  sigma: [1, 2, 3]\n", "env.sigma"),
    ("\x00\x01binary", "config"),
])
def test_bad_config_files(tmp_path, text, message):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(R3LError, match=message.replace("[", r"\[")):
        load_config(path)


def test_failed_denoise_leaves_no_output(tmp_path):
    write_image(tmp_path / "in.png", np.full((8, 8), 0.5))
    ckpt = tmp_path / "m.safetensors"
    save_checkpoint(ckpt, Checkpoint(ARCH, ActorCritic(1, 27, 8).state_dict()))
    bad = subprocess.run(r3l_cmd("denoise", "--checkpoint", ckpt, tmp_path / "in.png", "-o", tmp_path / "out.gif"),
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "out.gif: unknown output format" in bad.stderr
    assert "Traceback" not in bad.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.png", "m.safetensors"]
    debug = subprocess.run(r3l_cmd("--debug", "denoise", "--checkpoint", ckpt, tmp_path / "in.png", "-o",
                                   tmp_path / "out.gif"), capture_output=True, text=True)
    assert debug.returncode == 2 and "Traceback" in debug.stderr


def test_keeping_the_previous_checkpoint_never_leaves_last_missing(tmp_path, monkeypatch):
    """A process killed between keeping the old checkpoint and renaming the new one into place (the moment a
    torchrun restart once found no last.safetensors and started the run afresh) still leaves the old one."""
    from pathlib import Path

    import r3l.io.files as files

    path = tmp_path / "last.safetensors"
    files.atomic_write_bytes(path, b"old")

    class Killed(Exception):
        pass

    real_replace = os.replace

    def replace(src, dst):
        if Path(dst) == path:  # the final rename: the process dies just before it
            raise Killed
        return real_replace(src, dst)

    monkeypatch.setattr(files.os, "replace", replace)
    with pytest.raises(Killed):
        files.atomic_write_bytes(path, b"new", backup=previous_path(path))
    assert path.read_bytes() == b"old" and previous_path(path).read_bytes() == b"old"

"""Training on 2 processes (CPU, gloo): the same update as one process, files from rank 0 only, sharded
validation equal to a single process's, and a killed worker restarted by torchrun that resumes the run."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as torch_dist
import torch.multiprocessing as mp
import yaml

from conftest import smooth_image, tiny_config
from r3l.config import from_dict
from r3l.distributed import World
from r3l.io.images import write_image
from r3l.models.checkpoint import load_checkpoint
from r3l.runtime import configure_torch
from r3l.training.trainer import Trainer


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _data(root) -> dict:
    rng = np.random.default_rng(0)
    for i in range(4):
        write_image(root / "train" / f"im{i}.png", smooth_image(rng, 40, 40))
    for i in range(3):  # three validation images: the two ranks validate 2 and 1
        write_image(root / "val" / f"v{i}.png", smooth_image(rng, 32, 32))
    values = tiny_config(str(root / "train"), str(root / "val"), episodes=4)
    values["ppo"].update(epochs=2, minibatches=1)
    # fp32: bf16 convolutions round a batch of 2 otherwise than a batch of 4, which would hide what is compared
    values["train"].update(deterministic=True, threads=1, save_every=2, log_every=2, val_every=4, precision="fp32")
    return values


def _one_update(rank: int, size: int, port: int, values: dict, out: str) -> None:
    """Build the trainer in a world of ``size``, play and learn episode 0 on a fixed batch of 4, then save the
    parameters and the sharded validation PSNR (rank 0)."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    if size > 1:
        torch_dist.init_process_group("gloo", rank=rank, world_size=size)
    cfg = from_dict(values)
    configure_torch(cfg.train)
    trainer = Trainer(cfg, f"{out}_run", world=World(rank, size, rank) if size > 1 else World())
    torch.manual_seed(123)
    clean = torch.rand(4, 1, 24, 24)
    generator = torch.Generator()
    stats = trainer.run_episode(0, clean, generator)
    psnr = trainer.validate()
    if rank == 0:
        torch.save({"params": {k: v.clone() for k, v in trainer.net.state_dict().items()}, "psnr": psnr,
                    "gain": float(stats["charts/psnr_gain"])}, out)
    # DistributedDataParallel holds the process group: release it first, as the CLI does (a worker exiting with
    # it alive can abort with SIGABRT, seen once in a loaded full run).
    del trainer, stats
    if size > 1:
        torch_dist.destroy_process_group()


def test_two_processes_make_the_same_update_as_one(tmp_path):
    values = _data(tmp_path)
    single, double = str(tmp_path / "one.pt"), str(tmp_path / "two.pt")
    _one_update(0, 1, 0, values, single)
    mp.start_processes(_one_update, args=(2, _free_port(), values, double), nprocs=2, start_method="spawn")
    a, b = torch.load(single), torch.load(double)
    # Gradients averaged over two halves instead of one mean over the batch: equal up to float rounding,
    # which Adam's first step (a sign-like step of size lr) carries into the weights as differences ≲ 1e-6.
    for key in a["params"]:
        torch.testing.assert_close(b["params"][key], a["params"][key], atol=2e-6, rtol=1e-5)
    assert b["psnr"] == pytest.approx(a["psnr"], abs=1e-9)  # sharded validation equals one process's


def _torchrun(*args, cwd, env=None):
    # The c10d rendezvous gives each restart a fresh round (the static one reuses the first round's keys).
    return subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                             "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{_free_port()}", *args],
                            cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
                            start_new_session=True)


def test_torchrun_trains_and_only_rank_0_writes(tmp_path):
    values = _data(tmp_path)
    values["train"].update(episodes=8, save_every=2, log_every=2, val_every=8)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(values))
    run = tmp_path / "run"
    proc = _torchrun("-m", "r3l", "train", "--config", str(tmp_path / "c.yaml"), "--run-dir", str(run),
                     cwd=tmp_path)
    try:
        output, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, output[-3000:]
    assert output.count("trained 8 episodes") == 1 and "on 2 processes" in output
    assert load_checkpoint(run / "last.safetensors").episode == 8
    logged = [json.loads(line)["episode"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert logged == [2, 4, 6, 8, 8]  # four log lines and one validation, each written once
    assert sorted(p.name for p in run.iterdir()) == sorted(
        ["best.safetensors", "config.yaml", "last.prev.safetensors", "last.safetensors", "metrics.jsonl"])


def _worker_pid(launcher: int, rank: int) -> int | None:
    """The pid of the first-round worker of ``rank`` among the launcher's children (found by the environment
    torchrun gives it: each worker runs in its own session, and the launcher may have other children)."""
    children = subprocess.run(["pgrep", "-P", str(launcher)], capture_output=True, text=True)
    for pid in (int(p) for p in children.stdout.split()):
        try:
            env = set((Path("/proc") / str(pid) / "environ").read_bytes().split(b"\0"))
        except OSError:
            continue
        if f"RANK={rank}".encode() in env and b"TORCHELASTIC_RESTART_COUNT=0" in env:
            return pid
    return None


@pytest.mark.parametrize("victim", [0, 1])
def test_torchrun_restarts_a_killed_worker_and_the_run_resumes(tmp_path, victim):
    values = _data(tmp_path)
    values["train"].update(episodes=40, save_every=2, log_every=2, val_every=40)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(values))
    run = tmp_path / "run"
    proc = _torchrun("--max-restarts", "1", "-m", "r3l", "train", "--config", str(tmp_path / "c.yaml"),
                     "--run-dir", str(run), cwd=tmp_path)
    killed = False
    try:
        # Once a checkpoint of episode >= 4 exists, SIGKILL one worker: rank 0 (the one that writes) or rank 1.
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None and not killed:
            time.sleep(0.2)
            try:
                episode = load_checkpoint(run / "last.safetensors").episode
            except Exception:  # not written yet
                continue
            pid = _worker_pid(proc.pid, victim) if episode >= 4 else None
            if pid is not None:
                os.kill(pid, signal.SIGKILL)
                killed = True
        output, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert killed, output[-2000:]
    assert proc.returncode == 0, output[-3000:]
    assert "resuming" in output and "trained 40 episodes" in output
    assert load_checkpoint(run / "last.safetensors").episode == 40
    logged = {json.loads(line)["episode"] for line in (run / "metrics.jsonl").read_text().splitlines()
              if "charts/psnr_gain" in line}
    assert logged == set(range(2, 41, 2))  # continuous: every log interval is there


def test_a_batch_that_does_not_split_is_refused():
    with pytest.raises(Exception, match="do not split evenly over 3 processes"):
        World(0, 3).shard(4)

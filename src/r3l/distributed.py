"""Training on several processes (GPUs or CPU workers) launched by ``torchrun``: who this process is, and the few
collective operations the trainer and PPO need.

``torchrun --nproc-per-node N -m r3l train --config FILE`` sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``;
:func:`from_environment` reads them and joins the process group (NCCL on CUDA, gloo on the CPU). A single
process is a world of one, and every operation here is then a no-op, so the trainer has one code path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as torch_dist

from r3l.errors import R3LError


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0: the process that writes logs, TensorBoard, config and checkpoints."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.size > 1

    def shard(self, batch: int) -> slice:
        """This rank's part of a global batch of ``batch`` images (the batch must divide evenly)."""
        if batch % self.size:
            raise R3LError(f"config key data.batch_size: {batch} images do not split evenly over {self.size} "
                           "processes (data.batch_size is the global batch)")
        part = batch // self.size
        return slice(self.rank * part, (self.rank + 1) * part)

    def mean(self, values: dict[str, float], device: torch.device) -> dict[str, float]:
        """Each value averaged over the ranks (one collective for the whole dict)."""
        if not self.active or not values:
            return values
        keys = sorted(values)
        tensor = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=device)
        torch_dist.all_reduce(tensor)
        return {k: float(v) / self.size for k, v in zip(keys, tensor.tolist())}

    def sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        """All-reduce (sum) in place; returns the tensor."""
        if self.active:
            torch_dist.all_reduce(tensor)
        return tensor

    def any(self, flag: bool, device: torch.device) -> bool:
        """Whether any rank says ``flag`` (a decision every rank must take together)."""
        if not self.active:
            return flag
        tensor = torch.tensor([1.0 if flag else 0.0], device=device)
        torch_dist.all_reduce(tensor)
        return bool(tensor.item() > 0)

    def gather(self, items: list[Any]) -> list[Any]:
        """Every rank's list, concatenated in rank order, on every rank."""
        if not self.active:
            return items
        out: list[list[Any]] = [[] for _ in range(self.size)]
        torch_dist.all_gather_object(out, items)
        return [item for part in out for item in part]

    def barrier(self) -> None:
        if self.active:
            torch_dist.barrier()


SINGLE = World()


def from_environment(device: str = "auto") -> World:
    """The world ``torchrun`` describes in the environment, with its process group joined; a single process
    when ``WORLD_SIZE`` is unset or 1."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return SINGLE
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    cuda = device != "cpu" and torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(local_rank)
    if not torch_dist.is_initialized():
        # torchrun's agent keeps one key-value store across restarts (--max-restarts); the keys of a restarted
        # round are prefixed with its restart count, so the new workers never read a dead worker's address.
        from datetime import timedelta

        base = torch_dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), size,
                                   is_master=False, timeout=timedelta(minutes=10))
        store = torch_dist.PrefixStore(f"r3l/round{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}/", base)
        torch_dist.init_process_group("nccl" if cuda else "gloo", store=store, rank=rank, world_size=size)
    return World(rank, size, local_rank)


def device_for(world: World, device: str) -> str:
    """Under torchrun on CUDA each process takes its local GPU (``cuda`` or ``auto`` become ``cuda:LOCAL_RANK``)."""
    if world.active and device in ("auto", "cuda") and torch.cuda.is_available():
        return f"cuda:{world.local_rank}"
    return device


def restarted() -> bool:
    """Whether torchrun restarted this worker after a failure (``--max-restarts``): the run then resumes."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0


def shutdown() -> None:
    """Leave the process group, after every object that holds it has been collected."""
    if torch_dist.is_initialized():
        import gc

        gc.collect()
        torch_dist.destroy_process_group()

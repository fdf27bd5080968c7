"""Checkpoints: one safetensors file holding weights, optional training state, and JSON metadata.

Layout of the file's tensors: ``model.<param>`` for the network, ``optim.<i>.<key>`` for Adam's state of
parameter ``i``. Its metadata entry ``r3l`` is a JSON document with the architecture (enough to rebuild the
network), the resolved config, the episode counter and Adam's hyper-parameters. Nothing in the file is
unpickled: safetensors holds raw tensors only, so loading a checkpoint cannot run code.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from r3l.errors import R3LError
from r3l.io.files import atomic_write_bytes, to_json
from r3l.models.spec import ArchSpec

FORMAT = "r3l-checkpoint"
FORMAT_VERSION = 3
"""Version 3: the architecture is ``{model, options, task, task_options}`` (:meth:`ArchSpec.to_dict`). Version 2
(a flat architecture) and version 1 (a flat architecture, and a checksum of the tensors only; since version 2 it
covers the JSON header too) are still read, every header field validated."""


@dataclass
class Checkpoint:
    arch: ArchSpec
    model: dict[str, torch.Tensor]
    config: dict[str, Any] = field(default_factory=dict)
    episode: int = 0
    info: dict[str, Any] = field(default_factory=dict)
    """Free-form numbers such as the best validation PSNR."""
    optim_state: dict[int, dict[str, torch.Tensor]] | None = None
    optim_groups: list[dict[str, Any]] | None = None


def _digest(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _header_digest(tensor_digest: str, meta: dict[str, Any]) -> str:
    """Checksum of the tensors' digest and every header field but the checksum itself."""
    fields = {k: v for k, v in meta.items() if k != "sha256"}
    return hashlib.sha256((tensor_digest + to_json(fields)).encode()).hexdigest()


def validate_header(meta: dict[str, Any], path: Path) -> None:
    """Every header field of the right type and range, or a clear error naming the field."""
    def bad(key: str, expected: str) -> R3LError:
        return R3LError(f"{path}: checkpoint header field {key} = {meta_value(key)!r} is invalid, expected {expected}")

    def meta_value(key: str) -> Any:
        node: Any = meta
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        return node

    meta["arch"] = ArchSpec.coerce(meta.get("arch"), f"{path}: checkpoint header field arch")
    episode = meta.get("episode", 0)
    if isinstance(episode, bool) or not isinstance(episode, int) or episode < 0:
        raise bad("episode", "a non-negative whole number")
    for key, kind in (("config", dict), ("info", dict)):
        if not isinstance(meta.get(key, {}), kind):
            raise bad(key, "a JSON object")
    if meta.get("optim_groups") is not None and not isinstance(meta["optim_groups"], list):
        raise bad("optim_groups", "a list")


def previous_path(path: str | Path) -> Path:
    """Where :func:`save_checkpoint` keeps the checkpoint it replaced (``last.prev.safetensors``)."""
    path = Path(path)
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def save_checkpoint(path: str | Path, ckpt: Checkpoint, keep_previous: bool = False) -> None:
    """Write atomically (temporary file, fsync, rename): the old file stays until the new one is whole.

    ``keep_previous`` keeps the replaced file as :func:`previous_path` for resuming if the newest is damaged.
    """
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in ckpt.model.items()}
    if ckpt.optim_state is not None:
        for index, state in ckpt.optim_state.items():
            for key, value in state.items():
                tensors[f"optim.{index}.{key}"] = value.detach().cpu().contiguous()
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "arch": ArchSpec.coerce(ckpt.arch).to_dict(),
        "config": ckpt.config,
        "episode": ckpt.episode,
        "info": ckpt.info,
        "optim_groups": ckpt.optim_groups,
    }
    meta = json.loads(to_json(meta))  # strict JSON (no Infinity), exactly as it will be read back
    meta["sha256"] = _header_digest(_digest(tensors), meta)
    backup = previous_path(path) if keep_previous else None
    atomic_write_bytes(path, st_save(tensors, metadata={"r3l": to_json(meta)}), backup)


def _read_metadata(raw: bytes, path: Path) -> dict[str, Any]:
    """The JSON header of a safetensors file, parsed without touching the tensor data."""
    if len(raw) < 8:
        raise R3LError(f"{path}: not a safetensors checkpoint (file too short)")
    size = int.from_bytes(raw[:8], "little")
    if size <= 0 or 8 + size > len(raw):
        raise R3LError(f"{path}: not a safetensors checkpoint (bad header)")
    try:
        header = json.loads(raw[8 : 8 + size])
        return json.loads(header.get("__metadata__", {}).get("r3l", "null")) or {}
    except (ValueError, AttributeError, UnicodeDecodeError):
        raise R3LError(f"{path}: not a safetensors checkpoint (unreadable header)") from None


def load_checkpoint(path: str | Path, with_training_state: bool = False) -> Checkpoint:
    """Read and verify a checkpoint; a clear error names the file if it is missing, foreign or damaged."""
    path = Path(path)
    if not path.is_file():
        raise R3LError(f"{path}: checkpoint not found")
    raw = path.read_bytes()
    meta = _read_metadata(raw, path)
    if meta.get("format") != FORMAT:
        raise R3LError(f"{path}: not an r3l checkpoint (no r3l metadata)")
    version = meta.get("format_version")
    if version not in (1, 2, FORMAT_VERSION) or isinstance(version, bool):
        raise R3LError(f"{path}: checkpoint format version {version!r} is not supported")
    try:
        tensors = st_load(raw)
    except (SafetensorError, ValueError):
        raise R3LError(f"{path}: checkpoint is damaged (its tensors do not decode)") from None
    digest = _digest(tensors) if version == 1 else _header_digest(_digest(tensors), meta)
    if meta.get("sha256") != digest:
        raise R3LError(f"{path}: checkpoint is damaged or edited (checksum mismatch)")
    validate_header(meta, path)
    model = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    broken = next((k for k, v in model.items() if v.is_floating_point() and not torch.isfinite(v).all()), None)
    if broken is not None:
        raise R3LError(f"{path}: weight {broken} holds NaN or infinite values; the model is unusable")
    ckpt = Checkpoint(meta["arch"], model, meta.get("config", {}), meta.get("episode", 0), meta.get("info", {}))
    if with_training_state:
        state: dict[int, dict[str, torch.Tensor]] = {}
        for key, value in tensors.items():
            if key.startswith("optim."):
                _, index, name = key.split(".", 2)
                state.setdefault(int(index), {})[name] = value
        ckpt.optim_state = state
        ckpt.optim_groups = meta.get("optim_groups")
    return ckpt


def load_weights(net: torch.nn.Module, ckpt: Checkpoint, expected: ArchSpec | dict[str, Any],
                 path: str | Path) -> None:
    """Load ``ckpt``'s weights into ``net``, or explain what the file holds and what was expected."""
    expected = ArchSpec.coerce(expected)
    own = net.state_dict()
    fits = set(own) == set(ckpt.model) and all(own[k].shape == ckpt.model[k].shape for k in own)
    if ckpt.arch.name != expected.name or (not fits and ckpt.arch.describe() != expected.describe()):
        raise R3LError(f"{path}: checkpoint holds {ckpt.arch.describe()}; expected {expected.describe()}")
    if not fits:
        raise R3LError(f"{path}: checkpoint weights do not fit {expected.describe()}")
    net.load_state_dict(ckpt.model)


def average_checkpoints(paths: list[str | Path]) -> Checkpoint:
    """The mean of the weights of ``paths`` (snapshots of one run, say: stochastic weight averaging), with the
    architecture and config of the last and the averaged episodes in its ``info``; no training state. Integer
    tensors must agree across the files. A file of another architecture or shape is refused, naming it."""
    if len(paths) < 2:
        raise R3LError(f"averaging needs at least two checkpoints, got {len(paths)}")
    first = load_checkpoint(paths[0])
    sums = {k: v.double() if v.is_floating_point() else v for k, v in first.model.items()}
    episodes = [first.episode]
    for path in paths[1:]:
        ckpt = load_checkpoint(path)
        same = ckpt.arch.to_dict() == first.arch.to_dict() and set(ckpt.model) == set(first.model) \
            and all(ckpt.model[k].shape == first.model[k].shape for k in first.model)
        if not same:
            raise R3LError(f"{path}: holds {ckpt.arch.describe()}, not the {first.arch.describe()} of {paths[0]}; "
                           "only checkpoints of one architecture average")
        for key, value in ckpt.model.items():
            if value.is_floating_point():
                sums[key] = sums[key] + value.double()
            elif not torch.equal(value, sums[key]):
                raise R3LError(f"{path}: its {key} differs from {paths[0]}'s; only checkpoints of one "
                               "architecture average")
        episodes.append(ckpt.episode)
        last = ckpt
    model = {k: (v / len(paths)).to(first.model[k].dtype) if v.is_floating_point() else v for k, v in sums.items()}
    info = {"averaged_episodes": episodes, "averaged_files": [Path(p).name for p in paths]}
    return Checkpoint(last.arch, model, last.config, last.episode, info)


def on_action_grid(ckpt: Checkpoint, action_step: float) -> Checkpoint:
    """``ckpt`` decoded on actions of ``action_step`` gray levels over the same range (a Gaussian R3L policy's
    weights give the residual itself, so they do not depend on the grid: ``r3l models average --action-step``).
    The config's ``env`` follows; no training state. Refused, in one line, for another policy form, a task
    without ``action_step``, or a step that does not divide the range."""
    options, task = ckpt.arch.options, dict(ckpt.arch.task_options)
    if getattr(options, "policy_form", None) != "gaussian" or "action_step" not in task:
        raise R3LError(f"{ckpt.arch.describe()}: only a Gaussian R3L policy (model.policy_form: gaussian) can be "
                       "decoded on another action grid")
    if not action_step > 0:
        raise R3LError(f"--action-step: expected a positive number of gray levels, got {action_step}")
    reach = (int(task["n_actions"]) // 2) * float(task["action_step"])
    half = round(reach / action_step)
    if abs(half * action_step - reach) > 1e-9 * max(reach, 1.0):
        raise R3LError(f"--action-step {action_step}: does not divide the policy's range of ±{reach:g} gray levels")
    task.update(n_actions=2 * half + 1, action_step=action_step)
    config = json.loads(json.dumps(ckpt.config))
    if isinstance(config.get("env"), dict):
        config["env"].update(n_actions=task["n_actions"], action_step=action_step)
    arch = ArchSpec(ckpt.arch.name, options, ckpt.arch.task, task)
    return Checkpoint(arch, ckpt.model, config, ckpt.episode, dict(ckpt.info, action_grid=action_step))


def optimizer_state(optimizer: torch.optim.Optimizer) -> tuple[dict[int, dict[str, torch.Tensor]], list[dict]]:
    sd = optimizer.state_dict()
    state = {int(i): {k: (v if isinstance(v, torch.Tensor) else torch.tensor(v)) for k, v in s.items()}
             for i, s in sd["state"].items()}
    return state, sd["param_groups"]


def restore_optimizer(optimizer: torch.optim.Optimizer, ckpt: Checkpoint, path: str | Path) -> None:
    if ckpt.optim_groups is None or ckpt.optim_state is None:
        raise R3LError(f"{path}: checkpoint has no optimiser state to resume from")
    try:
        optimizer.load_state_dict({"state": ckpt.optim_state, "param_groups": ckpt.optim_groups})
    except (ValueError, KeyError):
        raise R3LError(f"{path}: optimiser state does not fit this model") from None
    # The file holds the moments in the plain layout; a channels-last network's must be channels-last again:
    # the fused Adam kernel walks a parameter and its moments in memory order, so mixed layouts would pair the
    # wrong elements (measured: updates off by up to 1.6 lr after a resume).
    for param, state in optimizer.state.items():
        for name, value in state.items():
            if torch.is_tensor(value) and value.shape == param.shape and value.stride() != param.stride():
                state[name] = torch.empty_like(param, dtype=value.dtype).copy_(value)

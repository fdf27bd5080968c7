"""Tasks: batch image environments where every pixel of every image is an agent, and their registry.

``env.name`` in a config is a registered name (``residual_denoise``) or a dotted path to a user's class,
``package.module:Class`` (or ``package.module.Class``), imported when the config is read. A task's options are
the dataclass :attr:`BatchImageEnv.Options` (the ``env`` section's keys beside ``name``; checkpoints store them).
A new task is one file with a :class:`BatchImageEnv` subclass plus one YAML naming it; see
``docs/custom-tasks.md``.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any

from r3l.errors import R3LError
from r3l.schema import build_checked
from r3l.tasks.base import BatchImageEnv, Episode, TaskOptions
from r3l.tasks.denoise import (
    DenoiseEnv,
    DenoiseOptions,
    FilterDenoiseEnv,
    FilterDenoiseOptions,
    ResidualDenoiseEnv,
    ResidualDenoiseOptions,
)

TASKS: dict[str, type[BatchImageEnv]] = {"residual_denoise": ResidualDenoiseEnv, "pixelrl_denoise": FilterDenoiseEnv}


def register_task(name: str, cls: type[BatchImageEnv]) -> None:
    TASKS[name] = cls


def task_class(name: str) -> type[BatchImageEnv]:
    """The class a config's ``env.name`` names: a registered task or a dotted path."""
    if name in TASKS:
        return TASKS[name]
    if "." not in name and ":" not in name:
        raise R3LError(f"config key env.name: {name!r} is not one of {', '.join(TASKS)} and not a dotted path "
                       "(package.module:Class)")
    module_name, _, attr = name.partition(":") if ":" in name else name.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as exc:
        raise R3LError(f"config key env.name: cannot import {name!r} ({exc})") from None
    if not (isinstance(cls, type) and issubclass(cls, BatchImageEnv)):
        raise R3LError(f"config key env.name: {name!r} is not a BatchImageEnv subclass")
    return cls


def make_env(cfg) -> BatchImageEnv:
    """The task of an ``env`` config section."""
    return task_class(cfg.name).from_config(cfg)


def stored_task(name: str, values: dict[str, Any], where: str = "arch.task_options") -> BatchImageEnv:
    """The task ``name`` from the options a checkpoint stored (:meth:`TaskOptions.values`). An option the task
    no longer has is left out and one it did not have then takes its default (the architectures of checkpoints
    written before tasks stored their options hold the action set alone)."""
    cls = task_class(name)
    known = {f.name for f in dataclasses.fields(cls.Options)}
    options = build_checked(cls.Options, {k: v for k, v in values.items() if k in known}, where + ".",
                            "checkpoint field")
    options.check(f"checkpoint field {where}")
    return cls.from_config(options)


__all__ = ["BatchImageEnv", "DenoiseEnv", "DenoiseOptions", "Episode", "FilterDenoiseEnv", "FilterDenoiseOptions",
           "ResidualDenoiseEnv", "ResidualDenoiseOptions", "TASKS", "TaskOptions", "make_env", "register_task",
           "stored_task", "task_class"]

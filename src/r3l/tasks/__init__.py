"""Tasks: batch image environments where every pixel of every image is an agent, and their registry.

``env.name`` in a config is a registered name (``residual_denoise``) or a dotted path to a user's class,
``package.module:Class`` (or ``package.module.Class``), imported when the run starts. A new task is one file
with a :class:`BatchImageEnv` subclass plus one YAML naming it; see ``docs/custom-tasks.md``.
"""

from __future__ import annotations

import importlib

from r3l.errors import R3LError
from r3l.tasks.base import BatchImageEnv, Episode
from r3l.tasks.denoise import DenoiseEnv, FilterDenoiseEnv, ResidualDenoiseEnv

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


__all__ = ["BatchImageEnv", "DenoiseEnv", "Episode", "FilterDenoiseEnv", "ResidualDenoiseEnv", "TASKS", "make_env",
           "register_task", "task_class"]

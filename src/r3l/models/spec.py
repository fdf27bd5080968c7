"""The registry of architectures: one typed spec per network, saved in checkpoints and read by everything that
builds a network (training, inference, the benchmark, the zoo).

A model is registered with :func:`register_model`: how to build it from an :class:`ArchSpec`, which spec fields
define it, and which learning algorithm trains it. Nothing else in r3l branches on a model's name.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable

from torch import nn

from r3l.errors import R3LError


@dataclass(frozen=True)
class ArchSpec:
    """Everything needed to rebuild a network and its inference rule.

    ``steps`` is the number of recurrent passes at inference (R3L's actions, R3N's updates; 1 for a one-pass
    network); ``n_actions`` and ``action_step`` (0–255 scale) describe a policy's actions, and ``task`` names the
    task whose transition applies them (``env.name``: a registered task or a dotted path).
    """

    name: str
    channels: int = 1
    features: int = 64
    n_actions: int = 0
    action_step: float = 0.0
    steps: int = 1
    depth: int = 17
    head_init: str = "kaiming"
    task: str = "residual_denoise"
    policy_form: str = "logits"
    max_step: float = 0.0
    colour_space: str = ""
    """R3N: ``opponent`` makes a colour model of a gray network (``channels`` 3): each channel of the image in an
    opponent colour space denoised as a gray image (:class:`r3l.models.networks.OpponentColour`); ``""``: none."""

    @property
    def entry(self) -> "ModelEntry":
        return model_entry(self.name)

    def to_dict(self) -> dict[str, Any]:
        """The fields that define this model (what a checkpoint stores; ``colour_space`` only when set, so that
        the headers of gray models read as before it existed)."""
        return {"name": self.name, **{k: getattr(self, k) for k in self.entry.fields
                                      if k != "colour_space" or self.colour_space}}

    def describe(self) -> str:
        shown = ("channels", "features", "n_actions", "steps", "depth")
        return ", ".join([f"name={self.name}"] + [f"{k}={getattr(self, k)}" for k in shown if k in self.entry.fields])

    @classmethod
    def coerce(cls, value: "ArchSpec | dict[str, Any]", where: str = "arch") -> "ArchSpec":
        """An :class:`ArchSpec` from itself or a checkpoint's dict, each field checked for type and range."""
        if isinstance(value, ArchSpec):
            return value
        if not isinstance(value, dict) or not isinstance(value.get("name"), str) or value["name"] not in MODELS:
            name = value.get("name") if isinstance(value, dict) else value
            raise R3LError(f"{where}.name = {name!r} is invalid, expected one of {', '.join(MODELS)}")
        known = {f.name for f in dataclasses.fields(cls)}
        kept = {k: v for k, v in value.items() if k in known}
        entry = MODELS[value["name"]]
        for key in entry.fields:
            if key not in kept:
                # Older checkpoints left these at their defaults.
                if key in ("head_init", "depth", "task", "policy_form", "max_step", "colour_space"):
                    continue
                raise R3LError(f"{where}.{key} is missing for a {value['name']} model")
            check_arch_field(key, kept[key], where)
        return cls(**kept)


def check_arch_field(key: str, value: Any, where: str = "arch") -> None:
    """One spec field of the right type and range, or an error naming it."""
    def bad(expected: str) -> R3LError:
        return R3LError(f"{where}.{key} = {value!r} is invalid, expected {expected}")

    if key in ("head_init", "task"):
        if not isinstance(value, str) or not value:
            raise bad("a string")
        return
    if key == "policy_form":
        if value not in ("logits", "gaussian"):
            raise bad("'logits' or 'gaussian'")
        return
    if key == "colour_space":
        if value not in ("", "opponent"):
            raise bad("'' or 'opponent'")
        return
    if key == "max_step":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 256:
            raise bad("a number of gray levels in [0, 256)")
        return
    if key == "action_step":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 256:
            raise bad("a number in (0, 256)")
        return
    low, high = {"channels": (1, 3), "features": (1, 4096), "n_actions": (1, 1023), "steps": (1, 1000),
                 "depth": (2, 1000)}[key]
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise bad(f"a whole number in [{low}, {high}]")
    if key == "channels" and value not in (1, 3):
        raise bad("1 or 3")
    if key == "n_actions" and value % 2 == 0:
        raise bad("an odd whole number (actions symmetric around 'no change')")


@dataclass(frozen=True)
class ModelEntry:
    build: Callable[[ArchSpec], nn.Module]
    fields: tuple[str, ...]
    """The spec fields this model reads (the others keep their defaults and are not stored)."""
    algorithm: str
    """The key of :data:`r3l.algos.ALGORITHMS` that trains it."""
    policy: bool = False
    """It outputs per-pixel action logits and a value (an actor-critic) rather than an image."""


MODELS: dict[str, ModelEntry] = {}


def register_model(name: str, entry: ModelEntry) -> None:
    MODELS[name] = entry


def model_entry(name: str) -> ModelEntry:
    if name not in MODELS:
        raise R3LError(f"unknown network {name!r}, expected one of {', '.join(MODELS)}")
    return MODELS[name]


def build_network(spec: ArchSpec | dict[str, Any]) -> nn.Module:
    """An untrained network from its spec (or a checkpoint's dict of it)."""
    spec = ArchSpec.coerce(spec)
    return spec.entry.build(spec)


def spec_from_config(cfg) -> ArchSpec:
    """The spec a training config describes: ``model.*`` with the task's action set (``env.*``)."""
    m, env = cfg.model, cfg.env
    full = {"name": m.name, "channels": m.channels, "features": m.features, "n_actions": env.n_actions,
            "action_step": env.action_step, "steps": env.steps, "depth": m.depth, "head_init": m.head_init,
            "task": env.name, "policy_form": m.policy_form, "max_step": m.max_step}
    entry = model_entry(m.name)
    return ArchSpec(**{k: v for k, v in full.items() if k == "name" or k in entry.fields})


#: The paper's sizes of each built-in model (benchmarks time untrained networks of these shapes).
PAPER_SPECS = {
    "r3l": ArchSpec("r3l", channels=1, features=64, n_actions=27, action_step=1.0, steps=6),
    "r3n": ArchSpec("r3n", channels=1, features=64, steps=6),
    "dncnn": ArchSpec("dncnn", channels=1, features=64, depth=17),
}


def _build_r3n(s: ArchSpec) -> nn.Module:
    from r3l.models.networks import R3N, OpponentColour

    if s.colour_space == "opponent":
        if s.channels != 3:
            raise R3LError(f"arch.colour_space opponent is for colour models (channels 3), got channels {s.channels}")
        return OpponentColour(R3N(1, s.features, s.steps, s.head_init, s.max_step))
    return R3N(s.channels, s.features, s.steps, s.head_init, s.max_step)


def _register_builtin() -> None:
    from r3l.models.networks import ActorCritic, DnCNN, R3N

    register_model("r3l", ModelEntry(
        lambda s: ActorCritic(s.channels, s.n_actions, s.features, s.head_init, s.policy_form, s.action_step),
        ("channels", "features", "n_actions", "action_step", "steps", "head_init", "task", "policy_form"), "ppo",
        policy=True))
    register_model("r3n", ModelEntry(_build_r3n, ("channels", "features", "steps", "head_init", "max_step",
                                                  "colour_space"), "supervised"))
    register_model("dncnn", ModelEntry(lambda s: DnCNN(s.channels, s.features, s.depth),
                                       ("channels", "features", "depth"), "supervised"))
    from r3l.models.ircnn import IRCNN

    register_model("ircnn", ModelEntry(lambda s: IRCNN(s.channels, s.features), ("channels", "features"),
                                       "supervised"))


_register_builtin()

"""The registry of architectures: each network with the dataclass of its options, and the typed spec that
checkpoints store and that everything building a network reads (training, inference, the benchmark, the zoo).

An architecture is registered with :func:`register_architecture`: how to build it from an :class:`ArchSpec`, the
dataclass of its options (its ``model.*`` config keys, and what a checkpoint stores of it), and the learning
algorithm that trains it. A new option of a model is one field of its options dataclass. Nothing else in r3l
branches on a model's name. (Trained models, the files ``r3l denoise`` finds by name, are :mod:`r3l.models.zoo`.)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Literal

from torch import nn

from r3l.errors import R3LError
from r3l.schema import build_checked, non_negative, positive
from r3l.tasks.base import TaskOptions

if TYPE_CHECKING:
    from r3l.models.ircnn import IrcnnStart

HeadInit = Literal["kaiming", "small", "residual"]


@dataclass
class ArchOptions:
    """What every architecture has; each declares a subclass with its own options."""

    channels: int = positive(1)
    """1 (gray) or 3 (colour)."""
    features: int = positive(64)
    """Feature maps of the hidden convolutions."""

    def check(self, where: str = "config key model") -> None:
        """What the field types cannot say, as an error naming the key (``where``: the section's name)."""
        if self.channels not in (1, 3):
            raise R3LError(f"{where}.channels: must be 1 (gray) or 3 (colour), got {self.channels}")
        if self.features > 4096:
            raise R3LError(f"{where}.features: at most 4096, got {self.features}")


@dataclass
class R3LOptions(ArchOptions):
    """R3L's actor-critic: its actions are the task's (``n_actions`` logits and a value per pixel)."""

    head_init: HeadInit = "kaiming"
    """Output convolutions: ``kaiming`` (as the original), ``small`` (near-uniform first policy) or, with
    ``init: ircnn``, ``residual``: the policy's greedy action is IRCNN's residual (R3N: its tanh head outputs
    it), the value head starts ``small``."""
    policy_form: Literal["logits", "gaussian"] = "logits"
    """R3L's policy head: ``logits`` (one output per action, the paper's) or ``gaussian`` (one residual per pixel
    and a learnt temperature: a discretised Gaussian over the same actions, see
    :class:`r3l.models.networks.ActorCritic`)."""


@dataclass
class R3NOptions(ArchOptions):
    """R3N: R3L's network with a deterministic residual head, run for the task's ``steps``."""

    head_init: HeadInit = "kaiming"
    max_step: float = non_negative(0.0)
    """Clip each step's residual to ±this many gray levels (13: R3L's action range; 0: no clip)."""
    colour_space: Literal["", "opponent"] = ""
    """``opponent`` makes a colour model of a gray network (``channels`` 3): each channel of the image in an
    opponent colour space denoised as a gray image (:class:`r3l.models.networks.OpponentColour`; ``r3l models
    pack`` makes one from a gray model); ``""``: none."""

    def check(self, where: str = "config key model") -> None:
        super().check(where)
        if self.max_step >= 256:
            raise R3LError(f"{where}.max_step: a number of gray levels below 256, got {self.max_step}")
        if self.colour_space == "opponent" and self.channels != 3:
            raise R3LError(f"{where}.colour_space: opponent is for colour models (channels 3), got channels "
                           f"{self.channels}")


@dataclass
class DnCNNOptions(ArchOptions):
    depth: int = positive(17)
    """Number of convolutions."""

    def check(self, where: str = "config key model") -> None:
        super().check(where)
        if not 2 <= self.depth <= 1000:
            raise R3LError(f"{where}.depth: a whole number in [2, 1000], got {self.depth}")


@dataclass(frozen=True)
class Architecture:
    build: Callable[["ArchSpec"], nn.Module]
    options: type[ArchOptions]
    """The dataclass of its options."""
    algorithm: str
    """The key of :data:`r3l.algos.ALGORITHMS` that trains it when a config does not choose (``algo.name``)."""
    policy: bool = False
    """It outputs per-pixel action logits and a value (an actor-critic) rather than an image."""
    recurrent: bool = False
    """Its inference is the task's ``steps`` passes (otherwise one)."""
    radius: Callable[[nn.Module], int] | None = None
    """The receptive-field radius of one inference pass of a built network, in pixels; ``None``: every convolution
    of it in a chain (:func:`conv_radius`, never too small for stride-1 convolutions however they are wired)."""

    from_dncnn: Callable[[nn.Module, Path], None] | None = None
    """``model.init: dncnn``: give a built network its layers from KAIR's DnCNN weights (the file's path)."""
    from_ircnn: Callable[[nn.Module, Path, IrcnnStart], None] | None = None
    """``model.init: ircnn``: give a built network its layers from IRCNN's weights (the file's path and how)."""
    from_network: Callable[[nn.Module, nn.Module, str, float, float], None] | None = None
    """``model.init: checkpoint`` from a network that does not fit as it is (another architecture, or another
    shape of this one): ``(network, source network, the source's architecture name, head_temperature,
    action_step)``. A checkpoint of the same shape is always loaded as it is."""

    def pass_radius(self, net: nn.Module) -> int:
        return conv_radius(net) if self.radius is None else self.radius(net)


def conv_radius(module: nn.Module) -> int:
    """The receptive-field radius of ``module``'s stride-1 convolutions applied one after another."""
    return sum(m.dilation[0] * (m.kernel_size[0] // 2) for m in module.modules() if isinstance(m, nn.Conv2d))


ARCHITECTURES: dict[str, Architecture] = {}


def register_architecture(name: str, entry: Architecture) -> None:
    ARCHITECTURES[name] = entry


def architecture(name: str, where: str = "model.name") -> Architecture:
    if name not in ARCHITECTURES:
        raise R3LError(f"{where}: {name!r} is not one of {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[name]


#: The keys of the flat architecture headers of format versions 1 and 2 (and of model cards written then) that
#: belong to the task: the rest are the model's options.
_FLAT_TASK_KEYS = ("n_actions", "action_step", "steps")


@dataclass(frozen=True)
class ArchSpec:
    """Everything needed to rebuild a network and its inference rule: the model ``name`` with its ``options``,
    and the ``task`` (``env.name``: a registered task or a dotted path) whose transition applies a policy's
    actions, with the task's options (JSON values, as :meth:`r3l.tasks.base.TaskOptions.values` gives them)."""

    name: str
    options: ArchOptions
    task: str = "residual_denoise"
    task_options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, name: str, task: str = "residual_denoise", **values: Any) -> "ArchSpec":
        """A spec from flat values: the model's options by name, every other value the task's
        (``ArchSpec.of("r3n", features=8, steps=3)``)."""
        options = architecture(name).options
        own = {f.name for f in dataclasses.fields(options)}
        return cls(name, options(**{k: v for k, v in values.items() if k in own}), task,
                   {k: v for k, v in values.items() if k not in own})

    @property
    def entry(self) -> Architecture:
        return architecture(self.name)

    @property
    def channels(self) -> int:
        return self.options.channels

    @property
    def steps(self) -> int:
        """Passes of inference: the task's steps for a recurrent model, else one."""
        return int(self.task_options.get("steps", 1)) if self.entry.recurrent else 1

    @property
    def n_actions(self) -> int:
        """A policy's actions per pixel (the task's); 0 for a model that outputs an image."""
        return int(self.task_options.get("n_actions", 0)) if self.entry.policy else 0

    @property
    def action_step(self) -> float:
        """A residual task's action step, on the 0–255 scale (1 for a task without one)."""
        return float(self.task_options.get("action_step", 1.0))

    def to_dict(self) -> dict[str, Any]:
        """What a checkpoint stores: ``{model, options, task, task_options}``."""
        return {"model": self.name, "options": dataclasses.asdict(self.options), "task": self.task,
                "task_options": dict(self.task_options)}

    def describe(self) -> str:
        shown = {"channels": self.channels, "features": self.options.features}
        if self.entry.policy:
            shown["n_actions"] = self.n_actions
        if self.entry.recurrent:
            shown["steps"] = self.steps
        if hasattr(self.options, "depth"):
            shown["depth"] = self.options.depth
        return ", ".join([f"name={self.name}"] + [f"{k}={v}" for k, v in shown.items()])

    @classmethod
    def coerce(cls, value: "ArchSpec | dict[str, Any]", where: str = "arch") -> "ArchSpec":
        """An :class:`ArchSpec` from itself or a checkpoint's dict of it (:meth:`to_dict`, or the flat dict of
        format versions 1 and 2), every option checked for type and range."""
        if isinstance(value, ArchSpec):
            return value
        if not isinstance(value, dict):
            raise R3LError(f"{where} = {value!r} is invalid, expected a JSON object")
        if "model" not in value:
            value = _from_flat(value, where)
        name = value.get("model")
        if not isinstance(name, str) or name not in ARCHITECTURES:
            raise R3LError(f"{where}.model = {name!r} is invalid, expected one of {', '.join(ARCHITECTURES)}")
        unknown = sorted(set(value) - {"model", "options", "task", "task_options"})
        if unknown:
            raise R3LError(f"{where}.{unknown[0]} is not a field of an architecture")
        task, task_options = value.get("task", "residual_denoise"), value.get("task_options", {})
        if not isinstance(task, str) or not task:
            raise R3LError(f"{where}.task = {task!r} is invalid, expected a string")
        if not isinstance(task_options, dict):
            raise R3LError(f"{where}.task_options = {task_options!r} is invalid, expected a JSON object")
        label, _, key = where.rpartition(" ")
        label = label or "spec field"
        options = build_checked(ARCHITECTURES[name].options, value.get("options", {}), f"{key}.options.", label)
        options.check(f"{where}.options")
        # The action set and the step count, which inference reads for every model, typed as every task has them
        # (a task's other options are checked when inference builds it, r3l.tasks.stored_task).
        common = {f.name for f in dataclasses.fields(TaskOptions)}
        build_checked(TaskOptions, {k: v for k, v in task_options.items() if k in common}, f"{key}.task_options.",
                      label)
        return cls(name, options, task, task_options)


def _from_flat(value: dict[str, Any], where: str) -> dict[str, Any]:
    """A flat header (``{name, channels, features, n_actions, ...}``, format versions 1 and 2) in today's form."""
    name = value.get("name")
    if not isinstance(name, str) or name not in ARCHITECTURES:
        raise R3LError(f"{where}.name = {name!r} is invalid, expected one of {', '.join(ARCHITECTURES)}")
    own = {f.name for f in dataclasses.fields(ARCHITECTURES[name].options)}
    return {"model": name, "options": {k: v for k, v in value.items() if k in own},
            "task": value.get("task", "residual_denoise"),
            "task_options": {k: value[k] for k in _FLAT_TASK_KEYS if k in value}}


def build_network(spec: ArchSpec | dict[str, Any]) -> nn.Module:
    """An untrained network from its spec (or a checkpoint's dict of it)."""
    spec = ArchSpec.coerce(spec)
    spec.options.check("arch.options")
    return spec.entry.build(spec)


def spec_from_config(model, env) -> ArchSpec:
    """The spec a training config's ``model`` and ``env`` sections describe: the architecture's options of the
    model section, the task and its options."""
    options = architecture(model.name).options
    values = {f.name: getattr(model, f.name) for f in dataclasses.fields(options)}
    return ArchSpec(model.name, options(**values), env.name, env.values())


#: The paper's sizes of each built-in model (benchmarks time untrained networks of these shapes).
PAPER_SPECS = {
    "r3l": ArchSpec(
        "r3l", R3LOptions(channels=1, features=64), task_options={"n_actions": 27, "action_step": 1.0, "steps": 6}),
    "r3n": ArchSpec("r3n", R3NOptions(channels=1, features=64), task_options={"steps": 6}),
    "dncnn": ArchSpec("dncnn", DnCNNOptions(channels=1, features=64, depth=17)),
}


def _build_r3n(s: ArchSpec) -> nn.Module:
    from r3l.models.networks import R3N, OpponentColour

    o = s.options
    if o.colour_space == "opponent":
        return OpponentColour(R3N(1, o.features, s.steps, o.head_init, o.max_step))
    return R3N(o.channels, o.features, s.steps, o.head_init, o.max_step)


def _register_builtin() -> None:
    from r3l.models import ircnn as ir
    from r3l.models import networks as nw

    register_architecture("r3l", Architecture(
        lambda s: nw.ActorCritic(s.channels, s.n_actions, s.options.features, s.options.head_init,
                                 s.options.policy_form, s.action_step),
        R3LOptions, "ppo", policy=True, recurrent=True,
        radius=lambda net: conv_radius(net.encoder) + conv_radius(net.policy),  # inference runs no value head
        from_dncnn=nw.init_r3l_from_dncnn, from_ircnn=ir.init_r3l_from_ircnn, from_network=ir.init_r3l_from_network))
    register_architecture("r3n", Architecture(
        _build_r3n, R3NOptions, "supervised", recurrent=True,
        from_dncnn=nw.init_r3n_from_dncnn, from_ircnn=ir.init_r3n_from_ircnn, from_network=ir.init_r3n_from_network))
    register_architecture("dncnn", Architecture(
        lambda s: nw.DnCNN(s.channels, s.options.features, s.options.depth), DnCNNOptions, "supervised",
        from_dncnn=nw.init_dncnn_from_dncnn))
    register_architecture("ircnn", Architecture(
        lambda s: ir.IRCNN(s.channels, s.options.features), ArchOptions, "supervised",
        from_ircnn=ir.init_ircnn_from_ircnn))


_register_builtin()

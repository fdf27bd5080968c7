"""Experiment configuration: one YAML file per experiment, resolved into typed dataclasses.

A config file names a ``preset`` (``default`` or ``seed``) whose values fill every key it does not set;
``--set key.sub=value`` overrides come last. Every key is checked: an unknown key, a wrong type or an
out-of-range value is an :class:`~r3l.errors.R3LError` naming the key.

The sections of the components are theirs: ``env`` is ``name`` (the task) and the task's own options
(:attr:`r3l.tasks.BatchImageEnv.Options`), ``model`` is ``name`` (the architecture), its options
(:mod:`r3l.models.spec`) and how its weights start (:class:`r3l.models.build.InitOptions`), and ``algo`` is
``name`` (the learning algorithm, :data:`r3l.algos.ALGORITHMS`; by default the one the model's registry entry
names) and that algorithm's options. This module assembles them with the run's own sections (``data``,
``train``) and checks what involves more than one.

Configs written before ``algo`` existed carry a section per algorithm (``ppo:``, ``supervised:``); they still
read: the section of the run's algorithm becomes ``algo`` (under any ``algo`` keys given too) and the others,
which no run ever read, are dropped (:func:`upgrade_sections`). A preset's section named by an algorithm applies
when that algorithm trains.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from r3l.algos import ALGORITHMS
from r3l.errors import R3LError
from r3l.io.data import DataConfig
from r3l.io.files import read_yaml_mapping
from r3l.models.build import InitOptions
from r3l.models.spec import architecture
from r3l.schema import (
    apply_override,
    build_dataclass,
    check_rules,
    deep_merge,
    field_rules,
    flatten,
    non_negative,
    parse_override,
    positive,
    resumable,
)
from r3l.tasks import task_class

Switch = Literal["auto", "on", "off"]
DEFAULT_TASK, DEFAULT_MODEL = "residual_denoise", "r3l"
ALGO = "algo"
"""The key of the algorithm's section."""


@dataclass
class TrainConfig:
    episodes: int = positive(30001)
    log_every: int = positive(10, resumable=True)
    val_every: int = positive(1000, resumable=True)
    save_every: int = positive(500, resumable=True)
    snapshot_every: int = non_negative(0, resumable=True)
    """Also keep the weights every this many episodes as ``snapshots/episode_NNNNNN.safetensors`` (0: never), to
    choose a checkpoint afterwards by another rule than ``best``'s mean validation PSNR."""
    device: str = resumable("auto")
    """``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``."""
    deterministic: bool = False
    threads: int = non_negative(0, resumable=True)
    """CPU threads for torch; 0 keeps torch's default."""
    tensorboard: bool = resumable(True)
    progress: bool = resumable(True)
    max_bad_updates: int = positive(10, resumable=True)
    """Stop after this many updates in a row were skipped for non-finite losses or gradients."""
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    """Network arithmetic in training: ``fp32``, ``bf16`` (autocast), ``fp16`` (autocast with dynamic loss
    scaling) or ``auto`` (bf16 on GPUs that support it, fp16 on older GPUs; on a CPU, bf16 where it has bf16
    hardware, AVX512-BF16 or AMX, else fp32). Losses, log-probabilities, GAE and the optimiser always run in
    fp32."""
    channels_last: Switch = resumable("auto")
    """``on``, ``off`` or ``auto`` (on for CUDA and AVX-512 CPUs): NHWC memory layout for the convolutions."""
    tf32: Switch = "auto"
    """``on``, ``off`` or ``auto`` (on): TF32 matrix and convolution arithmetic on NVIDIA GPUs."""
    cudnn_benchmark: Switch = resumable("auto")
    """``on``, ``off`` or ``auto`` (on for CUDA unless ``train.deterministic``): cuDNN autotuning; r3l's crops
    have fixed shapes, so the tuned kernels pay off at once."""
    compile: Literal["auto", "off", "network", "all"] = resumable("auto")
    """``torch.compile``: ``off``, ``network`` (the training forward passes), ``all`` (also the PPO loss) or
    ``auto``: ``all`` for R3L on CUDA (measured 1.35–2× faster episodes, see docs/performance.md), ``off`` on
    the CPU and for the supervised baselines."""
    compile_mode: Literal["auto", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] = \
        resumable("auto")
    """``torch.compile`` mode: ``default``, ``reduce-overhead`` (CUDA graphs), ``max-autotune``,
    ``max-autotune-no-cudagraphs`` or ``auto`` (``reduce-overhead`` on CUDA, else ``default``)."""


@dataclass
class Config:
    """A resolved experiment: the run's sections and the components' (``env``, ``model`` and ``algo``, each its
    component's dataclass; :func:`config_class` adds them)."""

    name: str = resumable("r3l")
    preset: str = "default"
    seed: int = non_negative(0)
    env: Any = None
    model: Any = None
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class _Named:
    name: str = ""
    """Which component: a registered name (or, for a task, a dotted path)."""


def _section(label: str, name: str, *options: type) -> type:
    """The dataclass of a component's section: ``name`` first, then the fields of ``options``."""
    return dataclasses.make_dataclass(f"{label}Section", [("name", str, field(default=name))],
                                      bases=(*options, _Named))


@functools.lru_cache(maxsize=None)
def _config_class(task: str, options: type, model: str, algo: str, algo_options: type) -> type:
    env = _section("Env", task, options)
    arch = _section("Model", model, InitOptions, architecture(model, "config key model.name").options)
    learner = _section("Algo", algo, algo_options)
    sections = [("env", env, field(default_factory=env)), ("model", arch, field(default_factory=arch)),
                (ALGO, learner, field(default_factory=learner))]
    return dataclasses.make_dataclass("Config", sections, bases=(Config,))


def config_class(task: str = DEFAULT_TASK, model: str = DEFAULT_MODEL, algo: str = "") -> type:
    """The :class:`Config` of a run of ``model`` on ``task`` trained by ``algo`` (by default the algorithm of the
    model's registry entry): its sections are those components' dataclasses."""
    algo = algo or architecture(model, "config key model.name").algorithm
    return _config_class(task, task_class(task).Options, model, algo, algorithm_class(algo).Options)


def algorithm_class(name: str, key: str = f"config key {ALGO}.name") -> type:
    """The registered algorithm called ``name``; an unknown one is an error naming ``key``."""
    if name not in ALGORITHMS:
        raise R3LError(f"{key}: unknown algorithm {name!r}; registered: {', '.join(ALGORITHMS)}")
    return ALGORITHMS[name]


#: Values the original R3L code used, minus its defects (see docs/config.md).
SEED_PRESET: dict[str, Any] = {
    "ppo": {
        "gamma": 0.95,
        "gae_lambda": 1.0,
        "clip_eps": 0.5,
        "epochs": 15,
        "minibatches": 1,
        "vf_coef": 1.0,
        "ent_coef": 0.0,
        "all_action_coef": 0.0,
        "value_loss": "smooth_l1",
        "max_grad_norm": 0.0,
        "normalize_advantages": False,
        "target_kl": 0.0,
        "lr": 1e-3,
        "lr_schedule": "poly",
        "lr_power": 0.9,
    },
    "model": {"init": "dncnn"},
    "data": {"batch_size": 32, "crop": 70},
    "train": {"episodes": 30001},
}

PRESETS: dict[str, dict[str, Any]] = {"default": {}, "seed": SEED_PRESET}

#: What ``true`` / ``false`` mean for an on/off/auto key whose "on" has another name.
SWITCH_WORDS: dict[str, tuple[str, str]] = {"train.compile": ("all", "off")}


def _validate(cfg: Config) -> None:
    """The rules of the fields, each component's own checks, and what involves more than one section."""
    choices, bounds = field_rules(type(cfg))
    check_rules(flatten(cfg.to_dict()), {**choices, "preset": tuple(PRESETS)}, bounds)
    cfg.env.check("config key env")
    cfg.model.check("config key model")
    entry = architecture(cfg.model.name)
    learner = ALGORITHMS[cfg.algo.name]
    if learner.trains_policies != entry.policy:
        raise R3LError(f"config key {ALGO}.name: {cfg.algo.name} trains "
                       f"{'policies' if learner.trains_policies else 'deterministic networks'} and the model "
                       f"{cfg.model.name} is {'a policy' if entry.policy else 'a deterministic network'}; "
                       f"its algorithm is {entry.algorithm}")
    learner.check(cfg.algo, cfg.data.batch_size, f"config key {ALGO}")
    if entry.policy and getattr(cfg.model, "head_init", "") == "residual" and \
            not task_class(cfg.env.name).residual_actions:
        raise R3LError(f"config key model.head_init: residual, but the {cfg.env.name} task's actions are not "
                       "residuals; use head_init small or kaiming (IRCNN's layers still initialise the network)")
    if entry.policy and cfg.env.n_actions < 3:
        raise R3LError(f"config key env.n_actions: need at least 3 actions, got {cfg.env.n_actions}")
    for level in cfg.data.val_sigma if isinstance(cfg.data.val_sigma, list) else [cfg.data.val_sigma]:
        if level:
            cfg.env.check_test_level(level, "config key data.val_sigma")
    if not cfg.data.train.strip():
        raise R3LError("config key data.train: required, a folder of training images (or skimage)")
    if cfg.train.deterministic and cfg.train.cudnn_benchmark == "on":
        raise R3LError("config key train.cudnn_benchmark: 'on' picks kernels by timing, which train.deterministic "
                       "rules out; use auto or off")


def _component(values: dict[str, Any], key: str, default: str) -> str:
    section = values.setdefault(key, {})
    if not isinstance(section, dict):
        raise R3LError(f"config key {key}: expected a mapping, got {section!r}")
    name = section.setdefault("name", default)
    if not isinstance(name, str) or not name:
        raise R3LError(f"config key {key}.name: expected a name, got {name!r}")
    return name


#: The keys the ``env`` and ``model`` sections had, with their defaults, when each was one section for every
#: task and every model (the ``config.yaml`` of such a run lists them all).
SINGLE_SECTION_DEFAULTS: dict[str, dict[str, Any]] = {
    "env": {"sigma": 25.0, "noise": "gaussian", "n_actions": 27, "action_step": 1.0, "steps": 6,
            "clip_noisy": False},
    "model": {"head_init": "kaiming", "policy_form": "logits", "max_step": 0.0, "depth": 17},
}


def _drop_single_section_defaults(values: dict[str, Any], cls: type) -> None:
    """Leave out a key that this run's task or model does not have when it holds the default it had in the
    single sections: a config written by r3l before components owned their options still reads. Any other
    value of such a key stays, and is refused as an unknown key."""
    fields = {f.name: f.type for f in dataclasses.fields(cls)}
    for section, defaults in SINGLE_SECTION_DEFAULTS.items():
        own = {f.name for f in dataclasses.fields(fields[section])}
        given = values.get(section, {})
        for key in [k for k in given if k not in own and k in defaults and given[k] == defaults[k]]:
            del given[key]


def upgrade_sections(values: dict[str, Any]) -> str:
    """Give ``values`` (a raw config, its preset merged in) its ``algo`` section from the sections named by an
    algorithm, which configs older than ``algo`` have: the run's algorithm's becomes ``algo``, under any ``algo``
    keys also given, and the others are dropped (no run read them). Returns the algorithm's name: ``algo.name``,
    else the model's registry entry's."""
    given = values.setdefault(ALGO, {})
    if not isinstance(given, dict):
        raise R3LError(f"config key {ALGO}: expected a mapping, got {given!r}")
    model = values.get("model", {}).get("name", DEFAULT_MODEL)
    name = given.get("name") or architecture(model, "config key model.name").algorithm
    if not isinstance(name, str):
        raise R3LError(f"config key {ALGO}.name: expected a name, got {name!r}")
    algorithm_class(name)
    legacy = {key: values.pop(key) for key in list(values) if key in ALGORITHMS}
    for key, section in legacy.items():
        if not isinstance(section, dict):
            raise R3LError(f"config key {key}: expected a mapping, got {section!r}")
    values[ALGO] = {**deep_merge(legacy.get(name, {}), given), "name": name}
    return name


def from_dict(values: dict[str, Any], overrides: list[str] = ()) -> Config:
    """Resolve a raw mapping (from YAML) plus ``key=value`` overrides into a checked :class:`Config`."""
    values = copy.deepcopy(values or {})
    for text in overrides:
        path, value = parse_override(text)
        apply_override(values, path, value)
    preset = values.get("preset", "default")
    if not isinstance(preset, str) or preset not in PRESETS:
        raise R3LError(f"config key preset: {preset!r} is not one of {', '.join(PRESETS)}")
    merged = deep_merge(PRESETS[preset], values)
    task, model = _component(merged, "env", DEFAULT_TASK), _component(merged, "model", DEFAULT_MODEL)
    cls = config_class(task, model, upgrade_sections(merged))
    _drop_single_section_defaults(merged, cls)
    cfg = build_dataclass(cls, merged, switch_words=SWITCH_WORDS)
    _validate(cfg)
    return cfg


SHIPPED_CONFIGS = Path(__file__).parent / "configs"
"""The configs that ship with r3l (the repository's ``configs/``)."""


def shipped_configs() -> dict[str, str]:
    """Each shipped config's name and the first line of its opening comment."""
    out = {}
    for path in sorted(SHIPPED_CONFIGS.glob("*.yaml")):
        comments = (line.lstrip("# ").strip() for line in path.read_text().splitlines() if line.startswith("#"))
        out[path.stem] = next(comments, "")
    return out


def config_path(value: str) -> Path:
    """``r3l train --config``'s file: a path, or a shipped config's name (with or without ``.yaml``)."""
    path = Path(value)
    shipped = SHIPPED_CONFIGS / (path.name if path.suffix == ".yaml" else f"{path.name}.yaml")
    if not path.exists() and len(path.parts) == 1 and shipped.is_file():
        return shipped
    return path


def load_config(path: str | Path | None, overrides: list[str] = ()) -> Config:
    """Read a YAML config file (or none, for the defaults) and apply ``key=value`` overrides."""
    values = read_yaml_mapping(path) if path is not None else {}
    try:
        return from_dict(values, overrides)
    except R3LError as exc:
        if path is not None:
            raise R3LError(f"{path}: {exc}") from None
        raise

"""Experiment configuration: one YAML file per experiment, resolved into typed dataclasses.

A config file names a ``preset`` (``default`` or ``seed``) whose values fill every key it does not set;
``--set key.sub=value`` overrides come last. Every key is checked: an unknown key, a wrong type or an
out-of-range value is an :class:`~r3l.errors.R3LError` naming the key.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from r3l.errors import R3LError
from r3l.schema import (
    apply_override, build_dataclass, check_rules, deep_merge, field_rules, flatten, non_negative, parse_override,
    positive, unit_interval,
)


Switch = Literal["auto", "on", "off"]
Schedule = Literal["poly", "cosine", "constant"]


@dataclass
class EnvConfig:
    """The task. For denoising, σ and the action step are on the 0–255 scale."""

    name: str = "residual_denoise"
    """A registered task (``residual_denoise``: R3L's residual actions; ``pixelrl_denoise``: pixelRL's 9 filter
    actions) or a dotted path to a user's task class, ``package.module:Class`` (see docs/custom-tasks.md)."""
    sigma: float | list[float] = 25.0
    """Noise level: σ on the 0–255 scale for the Gaussian noise models, the peak for ``poisson``, the density for
    ``salt_pepper``; a pair ``[lo, hi]`` draws a level per image uniformly from that range (blind training)."""
    noise: Literal["gaussian", "poisson", "salt_pepper", "spatial_gaussian", "mixed"] = "gaussian"
    """The noise model of the denoising tasks (:mod:`r3l.degradation` defines each)."""
    n_actions: int = positive(27)
    action_step: float = positive(1.0)
    """Each action adds ``(k - n_actions // 2) * action_step / 255``."""
    steps: int = positive(6)
    clip_noisy: bool = False
    """Clip the noisy input to [0, 1]. The paper's code and the literature's tests leave it unclipped."""


@dataclass
class ModelConfig:
    name: str = "r3l"
    """A registered model (:mod:`r3l.models.spec`): ``r3l`` (actor-critic, PPO), ``r3n`` or ``dncnn`` (both
    trained with MSE, see ``supervised``)."""
    channels: int = positive(1)
    features: int = positive(64)
    init: Literal["dncnn", "ircnn", "checkpoint", "scratch"] = "dncnn"
    """``dncnn`` (copy layers from KAIR's DnCNN σ=25 weights, as the original code), ``ircnn`` (IRCNN's gray
    denoiser, whose seven dilated convolutions are R3L's inference network; see ``ircnn_weights``) or
    ``scratch``."""
    dncnn_weights: str = "${R3L_WEIGHTS}/dncnn_25.pth"
    ircnn_weights: str = "${R3L_WEIGHTS}/ircnn/zhang_cvpr17_denoise_25_gray.caffemodel"
    """IRCNN's weights: a ``.caffemodel`` or KAIR's ``ircnn_gray.pth`` (its entry for ``ircnn_sigma``)."""
    ircnn_sigma: float = positive(25.0)
    """The noise level of the IRCNN model to take from KAIR's multi-level file."""
    head_init: Literal["kaiming", "small", "residual"] = "kaiming"
    """Output convolutions: ``kaiming`` (as the original), ``small`` (near-uniform first policy) or, with
    ``init: ircnn``, ``residual``: the policy's greedy action is IRCNN's residual (R3N: its tanh head outputs
    it), the value head starts ``small``."""
    policy_form: Literal["logits", "gaussian"] = "logits"
    """R3L's policy head: ``logits`` (one output per action, the paper's) or ``gaussian`` (one residual per pixel
    and a learnt temperature: a discretised Gaussian over the same actions, see
    :class:`r3l.models.networks.ActorCritic`)."""
    head_gain: float = positive(1.0)
    """``head_init: residual``: the residual each step starts with, as a fraction of IRCNN's (below 1, each step
    removes part of the estimated noise and leaves Gaussian-like noise of a lower level for the next)."""
    head_temperature: float = positive(16.0)
    """``head_init: residual``: the initial policy is a discretised Gaussian of this variance (gray levels²)
    around IRCNN's residual."""
    max_step: float = non_negative(0.0)
    """R3N only: clip each step's residual to ±this many gray levels (13: R3L's action range; 0: no clip)."""
    init_checkpoint: str = ""
    """``init: checkpoint``: an r3l checkpoint whose layers start this model (an R3N's encoder and head start R3L's
    encoder, its Gaussian policy head and the value head's hidden layers)."""
    depth: int = positive(17)
    """DnCNN only: number of convolutions."""


@dataclass
class LRSchedule:
    """The learning rate and its schedule, shared by every algorithm's section."""

    lr: float = positive(3e-4)
    lr_schedule: Schedule = "cosine"
    """``poly`` (lr·(1−e/E)^power, the original's), ``cosine`` or ``constant``."""
    lr_power: float = non_negative(0.9)
    lr_warmup: int = non_negative(0)
    """Episodes of linear warm-up from ``lr / lr_warmup`` to the schedule (fine-tuning a pre-trained network:
    Adam's first steps move every weight by about ``lr``, whatever its gradient)."""


@dataclass
class PPOConfig(LRSchedule):
    gamma: float = unit_interval(0.95)
    gae_lambda: float = unit_interval(0.95)
    clip_eps: float = 0.2
    epochs: int = positive(4)
    minibatches: int = positive(4)
    """Minibatches of whole images per epoch (each holds every step of its images)."""
    vf_coef: float = non_negative(0.5)
    ent_coef: float = non_negative(0.05)
    """Entropy bonus. Below about 0.02 the paper-size R3L learns "no change" first and its exploration dies
    (docs/experiments.md)."""
    all_action_coef: float = non_negative(0.0)
    """Weight of the all-action term, for environments that can compute every action's reward (R3L's can);
    0 turns it off. See ``all_action``."""
    all_action: Literal["soft", "expected"] = "soft"
    """``soft``: cross-entropy toward ``softmax(r / all_action_temperature)`` over every action's immediate
    reward; ``expected``: the exact gradient of the expected immediate reward ``Σ_a π(a) r(a)``."""
    all_action_temperature: float = positive(0.05)
    """τ of the ``soft`` target, in reward units (R3L: 255 × squared error on the [0, 1] scale)."""
    value_loss: Literal["smooth_l1", "mse"] = "smooth_l1"
    """``smooth_l1`` or ``mse``."""
    max_grad_norm: float = non_negative(1.0)
    """0 turns gradient clipping off."""
    normalize_advantages: bool = True
    target_kl: float = non_negative(0.0)
    """Stop the epochs of an update once approx-KL exceeds this; 0 never stops."""
    adam_eps: float = positive(1e-8)
    weight_decay: float = non_negative(0.0)
    encoder_lr_scale: float = non_negative(1.0)
    """The encoder's learning rate relative to ``lr`` (below 1 keeps pre-trained features; 0 freezes them)."""
    value_warmup: int = non_negative(0)
    """Episodes at the start in which only the value head learns (the policy and the encoder keep their
    weights): a fine-tuned policy is not moved by advantages from a value head that knows nothing yet."""
    value_lr_scale: float = non_negative(1.0)
    """The value head's learning rate relative to ``lr`` (a fresh value head under a small ``lr`` for
    fine-tuning learns faster with a larger one)."""


@dataclass
class SupervisedConfig(LRSchedule):
    """Training of the deterministic baselines (``model.name`` ``r3n`` or ``dncnn``) with MSE."""

    lr: float = positive(1e-3)
    max_grad_norm: float = non_negative(0.0)
    weight_decay: float = non_negative(0.0)
    loss: Literal["mse", "log_mse"] = "mse"
    """``mse``: the batch's mean squared error. ``log_mse``: the mean over images of ``log(MSE_i + 1e-5)``, which
    maximises the mean PSNR and so weighs each image by its own error (a blind model's lightly noisy images count
    as much as its heavily noisy ones; under ``mse`` the heavy noise dominates)."""


@dataclass
class DataConfig:
    train: str = "${R3L_DATA}/Train400"
    """A folder of training images, or ``skimage`` for scikit-image's bundled samples."""
    val: str = "${R3L_DATA}/BSD68"
    """A folder of validation images, or ``skimage``; empty for none."""
    batch_size: int = positive(32)
    """The global batch: under torchrun it is split evenly over the processes (docs/distributed.md)."""
    crop: int = positive(70)
    hflip: float = unit_interval(0.5)
    rotate_prob: float = unit_interval(0.5)
    rotate_degrees: float = non_negative(10.0)
    workers: int = non_negative(2)
    val_sigma: float | list[float] = non_negative(0.0)
    """Noise level(s) for validation: one, or a list (the mean PSNR over them picks ``best``, and each is logged);
    0 uses the training level (the middle of a range)."""
    val_max_images: int = non_negative(0)
    """Validate on the first N images only; 0 uses all."""
    val_seed: int = non_negative(0)
    holdout: int = non_negative(0)
    """The last N images of ``train`` (by name) are kept out of training; ``val: holdout`` validates on them,
    so that checkpoints are chosen without looking at a test set."""


@dataclass
class TrainConfig:
    episodes: int = positive(30001)
    log_every: int = positive(10)
    val_every: int = positive(1000)
    save_every: int = positive(500)
    device: str = "auto"
    """``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``."""
    deterministic: bool = False
    threads: int = non_negative(0)
    """CPU threads for torch; 0 keeps torch's default."""
    tensorboard: bool = True
    progress: bool = True
    max_bad_updates: int = positive(10)
    """Stop after this many updates in a row were skipped for non-finite losses or gradients."""
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    """Network arithmetic in training: ``fp32``, ``bf16`` (autocast), ``fp16`` (autocast with dynamic loss
    scaling) or ``auto`` (bf16 on GPUs that support it, fp16 on older GPUs; on a CPU, bf16 where it has bf16
    hardware, AVX512-BF16 or AMX, else fp32). Losses, log-probabilities, GAE and the optimiser always run in
    fp32."""
    channels_last: Switch = "auto"
    """``on``, ``off`` or ``auto`` (on for CUDA and AVX-512 CPUs): NHWC memory layout for the convolutions."""
    tf32: Switch = "auto"
    """``on``, ``off`` or ``auto`` (on): TF32 matrix and convolution arithmetic on NVIDIA GPUs."""
    cudnn_benchmark: Switch = "auto"
    """``on``, ``off`` or ``auto`` (on for CUDA unless ``train.deterministic``): cuDNN autotuning; r3l's crops
    have fixed shapes, so the tuned kernels pay off at once."""
    compile: Literal["auto", "off", "network", "all"] = "auto"
    """``torch.compile``: ``off``, ``network`` (the training forward passes), ``all`` (also the PPO loss) or
    ``auto``: ``all`` for R3L on CUDA (measured 1.35–2× faster episodes, see docs/performance.md), ``off`` on
    the CPU and for the supervised baselines."""
    compile_mode: Literal["auto", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] = \
        "auto"
    """``torch.compile`` mode: ``default``, ``reduce-overhead`` (CUDA graphs), ``max-autotune``,
    ``max-autotune-no-cudagraphs`` or ``auto`` (``reduce-overhead`` on CUDA, else ``default``)."""


@dataclass
class Config:
    name: str = "r3l"
    preset: str = "default"
    seed: int = non_negative(0)
    env: EnvConfig = field(default_factory=EnvConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    ppo: PPOConfig = field(default_factory=PPOConfig)
    supervised: SupervisedConfig = field(default_factory=SupervisedConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


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
    "model": {"init": "dncnn", "head_init": "kaiming"},
    "data": {"batch_size": 32, "crop": 70},
    "train": {"episodes": 30001},
}

PRESETS: dict[str, dict[str, Any]] = {"default": {}, "seed": SEED_PRESET}

_CHOICES, BOUNDS = field_rules(Config)
CHOICES: dict[str, tuple[str, ...]] = {"preset": tuple(PRESETS), **_CHOICES}
"""Every key with a fixed set of values (derived from the ``Literal`` fields)."""
POSITIVE = {k for k, b in BOUNDS.items() if b == "positive"}
NON_NEGATIVE = {k for k, b in BOUNDS.items() if b == "non_negative"}
UNIT_INTERVAL = {k for k, b in BOUNDS.items() if b == "unit_interval"}

#: What ``true`` / ``false`` mean for an on/off/auto key whose "on" has another name.
SWITCH_WORDS: dict[str, tuple[str, str]] = {"train.compile": ("all", "off")}


def _validate(cfg: Config) -> None:
    from r3l.models.spec import MODELS
    from r3l.tasks import TASKS

    check_rules(flatten(cfg.to_dict()), {**CHOICES, "model.name": tuple(MODELS)}, BOUNDS)
    if cfg.env.name not in TASKS and "." not in cfg.env.name and ":" not in cfg.env.name:
        raise R3LError(f"config key env.name: {cfg.env.name!r} is not one of {', '.join(TASKS)} "
                       "(or a dotted path to a task class, package.module:Class)")
    sigma = cfg.env.sigma
    if isinstance(sigma, list):
        if len(sigma) != 2 or not 0 <= sigma[0] <= sigma[1]:
            raise R3LError(f"config key env.sigma: a range must be [low, high] with 0 <= low <= high, got {sigma}")
    elif sigma < 0:
        raise R3LError(f"config key env.sigma: must not be negative, got {sigma}")
    from r3l.degradation import noise_model

    model = noise_model(cfg.env.noise, "config key env.noise")
    for level in sigma if isinstance(sigma, list) else [sigma]:
        model.check_level(level, "config key env.sigma")
    for level in cfg.data.val_sigma if isinstance(cfg.data.val_sigma, list) else [cfg.data.val_sigma]:
        if level:
            model.check_level(level, "config key data.val_sigma")
    if cfg.env.n_actions % 2 == 0:
        raise R3LError(f"config key env.n_actions: must be odd so that one action means 'no change', got {cfg.env.n_actions}")
    if not cfg.data.train.strip():
        raise R3LError("config key data.train: required, a folder of training images (or skimage)")
    if cfg.model.channels not in (1, 3):
        raise R3LError(f"config key model.channels: must be 1 (gray) or 3 (colour), got {cfg.model.channels}")
    if cfg.data.batch_size % cfg.ppo.minibatches:
        raise R3LError(
            f"config key ppo.minibatches: {cfg.ppo.minibatches} does not divide data.batch_size {cfg.data.batch_size}"
        )
    if cfg.train.deterministic and cfg.train.cudnn_benchmark == "on":
        raise R3LError("config key train.cudnn_benchmark: 'on' picks kernels by timing, which train.deterministic "
                       "rules out; use auto or off")
    if cfg.model.name == "r3l" and cfg.env.n_actions < 3:
        raise R3LError(f"config key env.n_actions: need at least 3 actions, got {cfg.env.n_actions}")


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
    cfg = build_dataclass(Config, merged, switch_words=SWITCH_WORDS)
    _validate(cfg)
    return cfg


def load_config(path: str | Path | None, overrides: list[str] = ()) -> Config:
    """Read a YAML config file (or none, for the defaults) and apply ``key=value`` overrides."""
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise R3LError(f"{path}: config file not found")
        try:
            values = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark else ""
            raise R3LError(f"{path}: not valid YAML{where}") from None
        except UnicodeDecodeError:
            raise R3LError(f"{path}: not a text file") from None
        if not isinstance(values, dict):
            raise R3LError(f"{path}: expected a mapping of config keys at the top level")
    try:
        return from_dict(values, overrides)
    except R3LError as exc:
        if path is not None:
            raise R3LError(f"{path}: {exc}") from None
        raise

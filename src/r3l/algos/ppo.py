"""Pixel-wise PPO-clip, all of it in this file: the rollout, the advantage (GAE or a group baseline) and the
clipped update.

One update of :class:`PPO` reads top to bottom: :meth:`PPO.learn` plays one episode of the task on a batch
(:meth:`PPO.collect`: sampled actions, rewards, values into a :class:`RolloutBuffer`, then the advantages) and runs
K epochs of minibatch updates on it (:meth:`PPO.update`). PPO sees tensors only: states ``(T, B, C, H, W)`` and one
categorical action per pixel and channel; what the actions do is the task's business.

Two advantage estimators (``ppo.advantage``):

- ``gae``: the value head's generalised advantage estimate, the paper's recipe.
- ``group``: no critic. Each crop is played ``group_size`` times from the *same* start state (for denoising, the
  same noise), and a pixel's advantage at step t is its return-to-go minus the mean return-to-go of the same pixel
  in the group's other plays (:func:`group_advantages`, a leave-one-out baseline as in RLOO/GRPO). A pixel's
  return depends on its own unseen noise, which a value head cannot see; the other plays of the same noisy pixel
  share that noise, so it cancels from the advantage instead of swamping it.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from r3l.algos.base import Algorithm
from r3l.algos.optim import LRSchedule, Precision, make_adam
from r3l.distributed import SINGLE, World
from r3l.errors import R3LError
from r3l.schema import non_negative, positive, unit_interval
from r3l.tasks.base import BatchImageEnv, Episode


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
    advantage: Literal["gae", "group"] = "gae"
    """``gae``: the value head's GAE (the paper's). ``group``: the critic-free group baseline of
    :func:`group_advantages` over ``group_size`` plays of each crop; with ``vf_coef: 0`` the value head is
    neither run nor trained."""
    group_size: int = positive(4)
    """``advantage: group``: plays of each crop from the same start state (at least 2). ``data.batch_size``
    counts distinct crops, so an update sees ``batch_size × group_size`` plays."""
    explore_temperature: float | list[float] = 1.0
    """Rollouts sample from ``softmax(logits / T)`` and the update trains that tempered policy: ``T`` a number,
    or ``[low, high]`` for one ``T`` per crop drawn log-uniformly (all plays of a group share it). Greedy
    inference is unchanged by ``T``; a large one leaves states noisier than the policy expects (for a Gaussian
    head, ``T`` multiplies its variance), which it then learns to correct."""
    freeze_temperature: bool = False
    """Keep a Gaussian policy head's temperature τ at its initial value (``model.head_temperature``) instead of
    learning it: τ is then how much the rollouts explore, a fixed choice of the recipe."""
    advantage_scale: Literal["batch", "crop"] = "batch"
    """With ``normalize_advantages``: ``batch`` scales the advantages to unit variance over the whole update;
    ``crop`` (``advantage: group`` only) over each crop's own plays, steps and pixels, so that a crop with little
    noise to remove weighs as much in the update as a very noisy one (a blind model's clean and σ-50 crops)."""
    anchor_coef: float = non_negative(0.0)
    """Weight of ``KL(π ‖ π₀)``, the policy's divergence from the network it started from (untempered, per
    pixel, on the states of the update), added to the loss; 0 turns it off and runs no second network."""
    anchor_weight: Literal["uniform", "error", "squared_error", "not_learning"] = "uniform"
    """How the anchor weighs the plays of an update: ``uniform``, every pixel agent alike; ``error``, each play
    in proportion to the RMS error of its starting state (relative to the update's mean), so that a policy stays
    at its start where the input is far from its target (a denoiser's noisy crops) and moves freely where it is
    near (clean crops); ``squared_error``, in proportion to its mean squared error (relative to the update's
    mean), which frees lightly degraded plays more and holds heavily degraded ones harder; ``not_learning``, only
    the plays that ``learn_max_error`` stops from learning, each alike, so that every play is either learning or
    held."""
    anchor_states: Literal["update", "greedy"] = "update"
    """Where the anchor compares the policy with its start: ``update``, on the states of the update (the
    tempered plays' own); ``greedy``, on the states of the start's greedy play of each crop at the training level
    (no exploration), so that the policy is held where the start is already the answer and is free on the
    states that only exploration visits (noisier than the start leaves them). ``greedy`` weighs every pixel
    agent alike (``anchor_weight: uniform``)."""
    learn_max_error: float | None = None
    """Gray levels (0–255): a play whose starting state is further than this from its target (RMS) gets a zero
    advantage, so its return teaches the policy nothing and only the anchor acts on it; ``None`` lets every play
    learn. For a start that is already the squared-error optimum on heavily degraded inputs (a supervised R3N),
    where the reward's gradient there is noise that moves the policy off that optimum."""


def sample_actions(logits: torch.Tensor, generator: torch.Generator | None = None,
                   batch: int | None = None, shard: slice | None = None) -> torch.Tensor:
    """Sample one action per categorical over dim 2 of ``(B, C, A, H, W)`` logits; → ``(B, C, H, W)``.

    Gumbel-max: ``argmax(logits + G)`` with ``G = −log E``, ``E ~ Exp(1)``, one draw per logit. When these
    logits are the ``shard`` of a global batch of ``batch`` images (one rank of several), the draws are made for
    the global batch and sliced, so each image gets the same draws as in a single process.
    """
    shape = logits.shape if shard is None else (batch, *logits.shape[1:])
    exp = torch.empty(shape, device=logits.device, dtype=torch.float32).exponential_(generator=generator)
    if shard is not None:
        exp = exp[shard]
    return (logits.float() - exp.log()).argmax(dim=2)


def log_prob_entropy(logits: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probability of ``actions`` ``(B, C, H, W)`` and entropy, both ``(B, C, H, W)``, from logits over dim 2."""
    logp_all = F.log_softmax(logits.float(), dim=2)
    logp = logp_all.gather(2, actions.unsqueeze(2)).squeeze(2)
    entropy = -(logp_all.exp() * logp_all).sum(2)
    return logp, entropy


def discounted_returns(rewards: torch.Tensor, gamma: float) -> torch.Tensor:
    """Return-to-go ``G_t = r_t + γ G_{t+1}`` of an episode that ends after step T−1; ``(T, ...)`` → ``(T, ...)``:
    :func:`compute_gae` with no critic (values 0, λ 1)."""
    zeros = torch.zeros_like(rewards)
    return compute_gae(rewards, zeros, zeros[0], gamma, 1.0)[0]


def group_advantages(returns: torch.Tensor, group_size: int) -> torch.Tensor:
    """Leave-one-out advantages over groups of plays: ``returns`` ``(T, B·K, ...)`` holds K = ``group_size``
    consecutive plays of each of B crops; each play's advantage is its return minus the mean return of the same
    pixel and step in the other K−1 plays of its group. Same shape as ``returns``."""
    grouped = returns.unflatten(1, (-1, group_size))
    others = (grouped.sum(2, keepdim=True) - grouped) / (group_size - 1)
    return (grouped - others).flatten(1, 2)


def compute_gae(
    rewards: torch.Tensor, values: torch.Tensor, last_value: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over time, vectorised over everything else.

    Args:
        rewards, values: ``(T, ...)``; the episode ends after step T−1.
        last_value: ``(...)``, the value of the state after the last step (zero when the episode ended).

    Returns:
        advantages and returns (``advantages + values``), both ``(T, ...)``.
    """
    steps = rewards.shape[0]
    advantages = torch.empty_like(rewards)
    running = torch.zeros_like(last_value)
    next_value = last_value
    for t in reversed(range(steps)):
        delta = rewards[t] + gamma * next_value - values[t]
        running = delta + gamma * lam * running
        advantages[t] = running
        next_value = values[t]
    return advantages, advantages + values


class RolloutBuffer:
    """Storage for one episode of a batch of images: every tensor is ``(T, B, C, H, W)`` on one device."""

    def __init__(self, steps: int, shape: tuple[int, int, int, int], device: torch.device, dtype=torch.float32):
        self.steps, self.shape = steps, shape
        full = (steps, *shape)
        self.states = torch.empty(full, device=device, dtype=dtype)
        self.actions = torch.empty(full, device=device, dtype=torch.long)
        self.log_probs = torch.empty(full, device=device)
        self.values = torch.empty(full, device=device)
        self.rewards = torch.empty(full, device=device)
        self.action_rewards: torch.Tensor | None = None
        """``(T, B, C, A, H, W)``: every action's reward, when the environment provides them."""
        self.temperatures = torch.ones((steps, shape[0], 1, 1, 1, 1), device=device)
        """``(T, B, 1, 1, 1, 1)``: each play's exploration temperature (``ppo.explore_temperature``)."""
        self.anchor_weights: torch.Tensor | None = None
        """``(T, B, 1, 1, 1)``: each play's weight in the anchor term (``algo.anchor_weight: error``,
        ``squared_error`` or ``not_learning``); ``None`` for the uniform anchor."""
        self.anchor_states: torch.Tensor | None = None
        """``(T, b, C, H, W)``: the start's greedy play of each distinct crop (``algo.anchor_states: greedy``)."""
        self.anchor_logits: torch.Tensor | None = None
        """``(T, b, C, A, H, W)``: the start's logits on :attr:`anchor_states`."""
        self.learns: torch.Tensor | None = None
        """``(1, B, 1, 1, 1)``: 1 for the plays whose advantage counts, 0 for those ``ppo.learn_max_error`` stops;
        ``None`` when every play learns."""
        self.advantages: torch.Tensor | None = None
        self.returns: torch.Tensor | None = None

    def add(self, t: int, state, action, log_prob, value, reward, action_rewards=None) -> None:
        if action_rewards is not None:
            if self.action_rewards is None:
                self.action_rewards = torch.empty((self.steps, *action_rewards.shape), device=self.states.device)
            self.action_rewards[t] = action_rewards
        self.states[t] = state
        self.actions[t] = action
        self.log_probs[t] = log_prob
        self.values[t] = value
        self.rewards[t] = reward

    def compute_returns_and_advantage(self, gamma: float, lam: float) -> None:
        """GAE over the episode, which ends after its last step (so the value after it is zero)."""
        last_value = torch.zeros_like(self.values[0])
        self.advantages, self.returns = compute_gae(self.rewards, self.values, last_value, gamma, lam)

    def compute_group_advantage(self, gamma: float, group_size: int) -> None:
        """The returns-to-go and their leave-one-out advantages over groups of ``group_size`` consecutive plays."""
        self.returns = discounted_returns(self.rewards, gamma)
        self.advantages = group_advantages(self.returns, group_size)


@dataclass
class LossParts:
    total: torch.Tensor
    policy: torch.Tensor
    value: torch.Tensor
    entropy: torch.Tensor
    approx_kl: torch.Tensor
    clipfrac: torch.Tensor
    all_action: torch.Tensor


def all_action_targets(action_rewards: torch.Tensor, cfg: PPOConfig) -> torch.Tensor:
    """What the all-action term compares the policy with, from every action's reward ``(..., A, H, W)``.

    ``soft``: the distribution ``softmax(r / τ)`` over actions (dim −3), the entropy-regularised best response
    to the known immediate rewards. ``expected``: the rewards themselves, centred per agent and divided by one
    standard deviation over the batch, so that the term weighs about as much as the normalised surrogate.
    """
    if cfg.all_action == "soft":
        return F.softmax(action_rewards / cfg.all_action_temperature, dim=-3)
    centred = action_rewards - action_rewards.mean(dim=-3, keepdim=True)
    return centred / (centred.std() + 1e-8)


def all_action_objective(logits: torch.Tensor, targets: torch.Tensor, kind: str) -> torch.Tensor:
    """The all-action term per agent, ``(B, C, H, W)``, to be maximised; logits and targets ``(B, C, A, H, W)``.

    ``expected``: ``Σ_a π(a|s) r(s, a)``, whose gradient is the exact policy gradient of the immediate reward.
    It shares the sampled gradient's weakness here: before the network can tell noise from signal, every edit
    costs reward on average, so it too pulls all probability onto "no change", and its gradient
    ``π(a)(r_a − r̄)`` vanishes with the probabilities of the other actions.
    ``soft``: ``Σ_a p*(a) log π(a|s)`` with ``p* = softmax(r / τ)``: the policy is moved toward the best
    response to the rewards every action would earn (a policy-improvement step with a known one-step
    Q-function). Its gradient ``p* − π`` never vanishes while the policy is wrong, and ``p*`` keeps
    probability on every nearly-as-good action, so exploration cannot die.
    """
    if kind == "soft":
        return (targets * F.log_softmax(logits.float(), dim=2)).sum(2)
    return (F.softmax(logits.float(), dim=2) * targets).sum(2)


def ppo_loss(
    new_log_prob: torch.Tensor,
    old_log_prob: torch.Tensor,
    advantages: torch.Tensor,
    new_value: torch.Tensor,
    returns: torch.Tensor,
    entropy: torch.Tensor,
    cfg: PPOConfig,
    expected: torch.Tensor | None = None,
) -> LossParts:
    """The clipped surrogate, value loss, entropy bonus and (given ``expected``, the per-agent
    :func:`all_action_objective`) the all-action term, averaged over every pixel agent."""
    log_ratio = new_log_prob - old_log_prob
    ratio = log_ratio.exp()
    surrogate = torch.min(ratio * advantages, ratio.clamp(1.0 - cfg.clip_eps, 1.0 + cfg.clip_eps) * advantages)
    surrogate_loss = -surrogate.mean()
    if cfg.value_loss == "mse":
        value_loss = 0.5 * F.mse_loss(new_value, returns)
    else:
        value_loss = F.smooth_l1_loss(new_value, returns)
    entropy_mean = entropy.mean()
    total = surrogate_loss + cfg.vf_coef * value_loss - cfg.ent_coef * entropy_mean
    expected_mean = torch.zeros_like(entropy_mean) if expected is None else expected.mean()
    if expected is not None:
        total = total - cfg.all_action_coef * expected_mean
    with torch.no_grad():
        approx_kl = ((ratio - 1.0) - log_ratio).mean()
        clipfrac = ((ratio - 1.0).abs() > cfg.clip_eps).float().mean()
    return LossParts(total, surrogate_loss, value_loss, entropy_mean, approx_kl, clipfrac, expected_mean.detach())


def ppo_objective(
    logits: torch.Tensor,
    values: torch.Tensor,
    actions: torch.Tensor,
    old_log_prob: torch.Tensor,
    advantages: torch.Tensor,
    returns: torch.Tensor,
    cfg: PPOConfig,
    action_targets: torch.Tensor | None = None,
) -> LossParts:
    """:func:`ppo_loss` from the network's outputs: everything between the forward pass and backward.

    ``action_targets`` ``(B, C, A, H, W)`` from :func:`all_action_targets` adds the all-action term.
    """
    new_logp, entropy = log_prob_entropy(logits, actions)
    expected = None if action_targets is None else all_action_objective(logits, action_targets, cfg.all_action)
    return ppo_loss(new_logp, old_log_prob, advantages, values.float(), returns, entropy, cfg, expected)


class PPO(Algorithm):
    """Pixel-wise PPO on a task: owns the optimiser, the rollout and the update.

    The network maps states to ``(logits, values)``. ``forward`` is what the rollout and the update call instead
    of ``net`` (a compiled version of it, say); ``compile == "all"`` compiles the loss too (with ``mode``).
    """

    Options = PPOConfig
    """Its options: the config's ``algo`` section with ``name: ppo``."""
    cfg: PPOConfig
    trains_policies = True
    compiles_whole_update = True
    """The rollout and update have static shapes, so ``train.compile: auto`` compiles all of it on CUDA."""

    def __init__(self, net: nn.Module, cfg: PPOConfig, env: BatchImageEnv, precision: Precision | None = None,
                 forward=None, compile: str = "off", mode: str = "default", world: World = SINGLE):
        if cfg.freeze_temperature and hasattr(net, "log_temperature"):  # before the optimiser takes it
            net.log_temperature.requires_grad_(False)
        super().__init__(net, cfg, env, precision, forward, compile, mode, world)
        self.group = cfg.group_size if cfg.advantage == "group" else 1
        """Plays of each crop per episode (1 under GAE)."""
        self.tempered = isinstance(cfg.explore_temperature, list) or cfg.explore_temperature != 1.0
        """Whether rollouts and updates divide the logits by an exploration temperature."""
        if self.group > 1 and cfg.vf_coef == 0 and self.forward is net and hasattr(net, "policy_logits"):
            self.forward = self._policy_only  # no critic to train: skip the value head's three convolutions
        self.anchor: nn.Module | None = None
        """A frozen copy of the starting network, for ``ppo.anchor_coef`` (:meth:`anchor_to`)."""
        if cfg.anchor_coef > 0:
            self.anchor_to(net)
        self.loss = ppo_objective
        if compile == "all":
            self.loss = torch.compile(ppo_objective, mode=None if mode == "default" else mode, dynamic=False)

    @staticmethod
    def check(cfg: PPOConfig, batch_size: int, where: str = "config key ppo") -> None:
        """What the option types cannot say about a run of global batch ``batch_size``."""
        given = cfg.explore_temperature
        if isinstance(given, list) and (len(given) != 2 or not 0 < given[0] <= given[1]):
            raise R3LError(f"{where}.explore_temperature: a range must be [low, high] with 0 < low <= high, "
                           f"got {given}")
        if not isinstance(given, list) and given <= 0:
            raise R3LError(f"{where}.explore_temperature: must be positive, got {given}")
        if cfg.anchor_weight != "uniform" and cfg.anchor_coef == 0:
            raise R3LError(f"{where}.anchor_weight: {cfg.anchor_weight} weighs an anchor that anchor_coef: 0 turns "
                           "off; set anchor_coef above 0")
        if cfg.anchor_states == "greedy" and cfg.anchor_coef == 0:
            raise R3LError(f"{where}.anchor_states: greedy places an anchor that anchor_coef: 0 turns off; set "
                           "anchor_coef above 0")
        if cfg.anchor_states == "greedy" and cfg.anchor_weight != "uniform":
            raise R3LError(f"{where}.anchor_states: greedy weighs every pixel agent alike; set anchor_weight: "
                           "uniform")
        if cfg.anchor_weight == "not_learning" and cfg.learn_max_error is None:
            raise R3LError(f"{where}.anchor_weight: not_learning holds the plays that learn_max_error stops; set "
                           "learn_max_error")
        if cfg.learn_max_error is not None and cfg.learn_max_error <= 0:
            raise R3LError(f"{where}.learn_max_error: must be positive (gray levels) or null, got "
                           f"{cfg.learn_max_error}")
        if cfg.advantage == "group":
            if cfg.group_size < 2:
                raise R3LError(f"{where}.group_size: the group baseline needs at least 2 plays of each crop, "
                               f"got {cfg.group_size}")
            batch_size *= cfg.group_size
        elif cfg.advantage_scale == "crop":
            raise R3LError(f"{where}.advantage_scale: crop scales each crop's group of plays; it needs advantage: "
                           "group")
        if batch_size % cfg.minibatches:
            raise R3LError(f"{where}.minibatches: {cfg.minibatches} does not divide the {batch_size} plays of an "
                           "update (data.batch_size × ppo.group_size under advantage: group)")

    def explore_temperatures(self, crops: int, device: torch.device, generator: torch.Generator) -> torch.Tensor:
        """One exploration temperature per crop, ``(crops,)``: ``ppo.explore_temperature`` or log-uniform in its
        range (drawn only for a range, so a fixed one changes no random stream)."""
        given = self.cfg.explore_temperature
        if not isinstance(given, list):
            return torch.full((crops,), float(given), device=device)
        low, high = math.log(given[0]), math.log(given[1])
        return (low + (high - low) * torch.rand(crops, device=device, generator=generator)).exp()

    def make_optimizer(self) -> torch.optim.Optimizer:
        """Adam, with a parameter group per top-level submodule when the encoder or value head has its own
        learning-rate scale (or the value head warms up alone)."""
        cfg = self.cfg
        scales = {"encoder": cfg.encoder_lr_scale, "value": cfg.value_lr_scale}
        grouped = cfg.value_warmup > 0 or any(v != 1.0 for v in scales.values())
        return make_adam(self.net, cfg.lr, cfg.adam_eps, cfg.weight_decay, scales if grouped else None)

    def anchor_to(self, start: nn.Module) -> None:
        """Make a frozen copy of ``start`` the policy that ``ppo.anchor_coef`` keeps this one near (a resumed run
        passes the network its config starts from, not the one it resumes)."""
        self.anchor = copy.deepcopy(start).requires_grad_(False).eval()

    def _anchor_logits(self, state: torch.Tensor) -> torch.Tensor:
        """The anchor's logits on ``state``, without gradients."""
        with torch.no_grad(), self.precision.autocast():
            return self.anchor.policy_logits(state) if hasattr(self.anchor, "policy_logits") \
                else self.anchor(state)[0]

    def _anchor_kl(self, state: torch.Tensor, logits: torch.Tensor, weights: torch.Tensor | None = None,
                   anchored: torch.Tensor | None = None) -> torch.Tensor:
        """Mean over pixel agents of ``KL(π ‖ π₀)`` between the (untempered) ``logits`` and the anchor's on
        ``state`` (or ``anchored``, its logits there when already known), each play's agents weighted by
        ``weights`` ``(B, 1, 1, 1)`` when given."""
        if anchored is None:
            anchored = self._anchor_logits(state)
        logp = F.log_softmax(logits.float(), dim=2)
        kl = (logp.exp() * (logp - F.log_softmax(anchored.float(), dim=2))).sum(2)
        return kl.mean() if weights is None else (kl * weights).mean()

    def anchor_weights(self, start: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
        """Each play's anchor weight ``(B,)`` under ``ppo.anchor_weight: error`` (``squared_error``): the RMS
        (mean squared) error of its starting state over the mean of that over the update's plays (every rank's,
        under torchrun); all zero when every play starts at its target."""
        error = (start.float() - clean.float()).square().mean(dim=(1, 2, 3))
        if self.cfg.anchor_weight == "error":
            error = error.sqrt()
        total = torch.stack([error.sum(), torch.tensor(float(error.numel()), device=error.device)])
        if self.world.active:
            total = self.world.sum_(total)
        return error / (total[0] / total[1]).clamp_min(1e-12)

    def _start_greedy_play(self, state: torch.Tensor, buf: RolloutBuffer) -> None:
        """Play the anchor greedily from ``state``, this rank's distinct start states, and keep its states and
        logits in ``buf`` for ``algo.anchor_states: greedy``."""
        states, logits = [], []
        for _ in range(self.env.steps):
            anchored = self._anchor_logits(state)
            states.append(state)
            logits.append(anchored)
            state = self.env.transition(state, anchored.float().argmax(dim=2))
        buf.anchor_states, buf.anchor_logits = torch.stack(states), torch.stack(logits)

    def _policy_only(self, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The network's logits and zeros for values: the forward pass of a critic-free run."""
        logits = self.net.policy_logits(state)
        return logits, torch.zeros(state.shape, device=state.device)

    def learn(self, clean: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """One episode on ``clean`` ``(B, C, H, W)`` and the update on it; device-side diagnostics.

        With several processes, ``clean`` is the episode's global batch and this rank plays and learns from its
        own part (the gradients are averaged by DistributedDataParallel)."""
        buf, metrics = self.collect(clean, generator)
        stats = self.update(buf, generator)
        stats["charts/episode_reward"] = buf.rewards.sum(0).mean()
        stats.update(metrics)
        return stats

    def collect(self, clean: torch.Tensor, generator: torch.Generator) -> tuple[RolloutBuffer, dict[str, torch.Tensor]]:
        """Play one episode on ``clean``; returns the filled buffer (with GAE) and the task's
        :meth:`~r3l.tasks.base.BatchImageEnv.episode_metrics`."""
        env, cfg, group = self.env, self.cfg, self.group
        device = clean.device
        crops = self.world.shard(clean.shape[0]) if self.world.active else None
        episode = env.reset(clean, generator)  # the global batch's noise, as one process would draw it
        temperature = self.explore_temperatures(clean.shape[0], device, generator)
        if group > 1:  # every play of a crop starts from the same state; a rank plays whole groups
            clean = clean.repeat_interleave(group, 0)
            episode = Episode(clean, episode.state.repeat_interleave(group, 0))
            temperature = temperature.repeat_interleave(group, 0)
        batch = clean.shape[0]
        shard = None if crops is None else slice(crops.start * group, crops.stop * group)
        if shard is not None:
            clean, temperature = clean[shard], temperature[shard]
            episode = Episode(clean, episode.state[shard])
        buf = RolloutBuffer(env.steps, tuple(clean.shape), device)
        if self.anchor is not None and cfg.anchor_states == "greedy":
            self._start_greedy_play(episode.state[::group], buf)
        buf.temperatures[:] = temperature.view(1, -1, 1, 1, 1, 1)
        start = episode.state
        if cfg.learn_max_error is not None:
            error = 255.0 * (start.float() - clean.float()).square().mean(dim=(1, 2, 3)).sqrt()
            buf.learns = (error <= cfg.learn_max_error).float().view(1, -1, 1, 1, 1)
        if self.anchor is not None and cfg.anchor_weight != "uniform":
            weights = 1.0 - buf.learns if cfg.anchor_weight == "not_learning" else \
                self.anchor_weights(start, clean).view(1, -1, 1, 1, 1)
            buf.anchor_weights = weights.expand(env.steps, -1, 1, 1, 1)
        all_actions = cfg.all_action_coef > 0
        with torch.no_grad():
            for t in range(env.steps):
                state = episode.state
                with self.precision.autocast():
                    logits, value = self.forward(state)
                if self.tempered:
                    logits = logits / buf.temperatures[t]
                actions = sample_actions(logits, generator, batch, shard)
                log_prob, _ = log_prob_entropy(logits, actions)
                action_rewards = env.action_rewards(state, clean) if all_actions else None
                _, reward, done = env.step(episode, actions)
                buf.add(t, state, actions, log_prob, value, reward, action_rewards)
                if done:
                    break
        if group > 1:
            buf.compute_group_advantage(cfg.gamma, group)
        else:
            buf.compute_returns_and_advantage(cfg.gamma, cfg.gae_lambda)
        return buf, env.episode_metrics(start, episode.state, clean)

    def _normalized(self, advantages: torch.Tensor) -> torch.Tensor:
        """Advantages scaled to zero mean and unit variance over the global batch (under torchrun, every rank's
        advantages together), or, with ``advantage_scale: crop``, to unit variance within each crop's group of
        plays (whose leave-one-out advantages have zero mean already; a rank holds whole groups)."""
        if self.cfg.advantage_scale == "crop":
            grouped = advantages.unflatten(1, (-1, self.group))
            std = grouped.std(dim=(0, 2, 3, 4, 5), keepdim=True)
            return (grouped / (std + 1e-8)).flatten(1, 2)
        if not self.world.active:
            return (advantages - advantages.mean()) / (advantages.std() + 1e-8)
        moments = self.world.sum_(torch.stack([advantages.sum(), advantages.square().sum(),
                                               torch.tensor(float(advantages.numel()), device=advantages.device)]))
        mean = moments[0] / moments[2]
        std = ((moments[1] - moments[2] * mean.square()) / (moments[2] - 1)).clamp_min(0).sqrt()
        return (advantages - mean) / (std + 1e-8)

    def update(self, buf: RolloutBuffer, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """K epochs over minibatches of whole images; returns device-side diagnostics (no host sync)."""
        cfg = self.cfg
        assert buf.advantages is not None and buf.returns is not None
        batch = buf.shape[0]
        advantages = self._normalized(buf.advantages) if cfg.normalize_advantages else buf.advantages
        if buf.learns is not None:
            advantages = advantages * buf.learns
        action_targets = None
        if cfg.all_action_coef > 0 and buf.action_rewards is not None:
            action_targets = all_action_targets(buf.action_rewards, cfg)
        per_mb = batch // cfg.minibatches
        device = buf.states.device
        sums: dict[str, torch.Tensor] = {}
        count = 0
        skipped = torch.zeros((), device=device)
        overflows = torch.zeros((), device=device)
        stopped = torch.zeros((), device=device)
        for _ in range(cfg.epochs):
            order = torch.randperm(batch, device=device, generator=generator) if cfg.minibatches > 1 else None
            for m in range(cfg.minibatches):
                idx = None if order is None else order[m * per_mb : (m + 1) * per_mb]

                def take(x: torch.Tensor | None) -> torch.Tensor | None:
                    if x is None:
                        return None
                    x = x if idx is None else x[:, idx]
                    return x.reshape(-1, *x.shape[2:])

                states = take(buf.states)
                with self.precision.autocast():
                    logits, values = self.forward(states)
                if self.anchor is None:
                    anchor_kl = None
                elif buf.anchor_states is None:
                    anchor_kl = self._anchor_kl(states, logits, take(buf.anchor_weights))
                else:  # every step of the update holds all of the start's greedy states
                    greedy = buf.anchor_states.flatten(0, 1)
                    with self.precision.autocast():
                        greedy_logits = self.forward(greedy)[0]
                    anchor_kl = self._anchor_kl(greedy, greedy_logits, anchored=buf.anchor_logits.flatten(0, 1))
                if self.tempered:
                    logits = logits / take(buf.temperatures)
                parts = self.loss(
                    logits, values, take(buf.actions), take(buf.log_probs), take(advantages), take(buf.returns), cfg,
                    take(action_targets),
                )
                total = parts.total if anchor_kl is None else parts.total + cfg.anchor_coef * anchor_kl
                grad_norm, bad, overflow = self.precision.step(total, self.net, self.optimizer, cfg.max_grad_norm)
                if anchor_kl is not None:
                    sums["losses/anchor_kl"] = sums.get("losses/anchor_kl", 0.0) + anchor_kl.detach()
                skipped = skipped + bad.float()
                overflows = overflows + overflow.float()
                for name, value in (
                    ("losses/policy_loss", parts.policy), ("losses/value_loss", parts.value),
                    ("losses/entropy", parts.entropy), ("losses/approx_kl", parts.approx_kl),
                    ("losses/clipfrac", parts.clipfrac), ("losses/grad_norm", grad_norm),
                    ("losses/all_action", parts.all_action),
                ):
                    sums[name] = sums.get(name, 0.0) + value.detach().float()
                count += 1
            if cfg.target_kl > 0:
                # Reading approx-KL syncs with the device once per epoch, only when early stopping is on.
                if parts.approx_kl.item() > cfg.target_kl:
                    stopped = torch.ones((), device=device)
                    break
        stats = {k: v / count for k, v in sums.items()}
        stats["health/skipped_steps"] = skipped
        stats["health/bad_update"] = (skipped > 0).float()
        stats["health/scale_overflows"] = overflows
        returns, values = buf.returns, buf.values
        var_returns = returns.var()
        stats["losses/explained_variance"] = 1.0 - (returns - values).var() / var_returns.clamp_min(1e-12)
        stats["losses/early_stop"] = stopped
        if self.forward == self._policy_only:  # no critic ran: its loss and explained variance mean nothing
            del stats["losses/value_loss"], stats["losses/explained_variance"]
        return stats

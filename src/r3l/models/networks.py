"""Network definitions: R3L's actor-critic, R3N and DnCNN, and loading KAIR's DnCNN weights."""

from __future__ import annotations

import math
import re
from pathlib import Path

import torch
from torch import nn

from r3l.errors import R3LError, warn
from r3l.io.files import file_sha256


def _conv(cin: int, cout: int, dilation: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, padding=dilation, dilation=dilation)


def _head(features: int, out: int) -> nn.Sequential:
    """conv d3 + ReLU, conv d2 + ReLU, conv d1 (paper Table 2)."""
    return nn.Sequential(
        _conv(features, features, 3), nn.ReLU(inplace=True),
        _conv(features, features, 2), nn.ReLU(inplace=True),
        _conv(features, out, 1),
    )


def _encoder(channels: int, features: int) -> nn.Sequential:
    """conv d1, d2, d3, d4, each followed by ReLU (paper Table 2)."""
    layers: list[nn.Module] = []
    for i, dilation in enumerate((1, 2, 3, 4)):
        layers += [_conv(channels if i == 0 else features, features, dilation), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


def _kaiming(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            nn.init.zeros_(m.bias)


def _fp32_output(head: nn.Sequential, features: torch.Tensor) -> torch.Tensor:
    """``head(features)`` with its last convolution in float32 even under autocast.

    In bf16 the logits would carry 8 significant bits (steps of 0.03 at |logit| ≈ 6): log-probabilities, the
    PPO ratio, and the values behind GAE's returns would all inherit that rounding. One 64→A convolution in
    float32 costs a few percent of the network's arithmetic.
    """
    hidden = head[:-1](features)
    with torch.autocast(features.device.type, enabled=False):
        return head[-1](hidden.float())


class ActorCritic(nn.Module):
    """R3L's fully convolutional actor-critic shared by all pixel agents.

    ``forward`` maps a state ``(B, C, H, W)`` to action logits ``(B, C, A, H, W)`` (an independent
    categorical per pixel and channel) and values ``(B, C, H, W)``. With C = 1, 27 actions and 64 features
    it has 275,292 parameters, 200,859 of them in the encoder and policy head used at inference.

    ``policy_form`` says how the policy head's output becomes logits:

    - ``logits`` (the paper's): one output channel per action and image channel.
    - ``gaussian``: one output channel per image channel, the residual ``r`` to add (0–1 scale), and one learnt
      temperature τ per image channel; action ``k`` with value ``a_k = (k − A//2)·action_step`` gray levels
      gets the logit ``(a_k·255r − a_k²/2) / τ``, i.e. ``−(a_k − 255r)² / 2τ`` up to a per-pixel constant: a
      discretised Gaussian of variance τ around the residual, whose argmax is ``255r`` rounded and clipped to
      the actions. The same categorical policy over the same actions (every function it can express, the
      ``logits`` form can too), with 26 fewer output channels and a scale that a residual network's weights
      (IRCNN's, ``r3l.models.ircnn``) carry over to without amplification.
    """

    def __init__(self, channels: int = 1, n_actions: int = 27, features: int = 64, head_init: str = "kaiming",
                 policy_form: str = "logits", action_step: float = 1.0, temperature: float = 16.0):
        super().__init__()
        self.channels, self.n_actions, self.features = channels, n_actions, features
        self.policy_form, self.action_step = policy_form, action_step
        self.encoder = _encoder(channels, features)
        self.policy = _head(features, channels * (n_actions if policy_form == "logits" else 1))
        self.value = _head(features, channels)
        if policy_form == "gaussian":
            values = (torch.arange(n_actions, dtype=torch.float32) - n_actions // 2) * action_step
            self.register_buffer("action_values", values, persistent=False)
            self.log_temperature = nn.Parameter(torch.full((channels,), math.log(temperature)))
        _kaiming(self)
        if head_init == "residual":  # the policy's last layer is set from IRCNN's (r3l.models.ircnn)
            nn.init.normal_(self.value[-1].weight, std=1e-3)
        if head_init == "small":
            # Start close to "change nothing": near-constant logits that fall off with the action's distance
            # from the middle (no-op) action, so early random walks do not swamp the image with noise.
            for out in (self.policy[-1], self.value[-1]):
                nn.init.normal_(out.weight, std=1e-3)
            with torch.no_grad():
                if policy_form == "logits":
                    distance = (torch.arange(n_actions) - n_actions // 2).abs().float()
                    self.policy[-1].bias.copy_((-0.5 * distance).repeat(channels))
                else:
                    self.policy[-1].bias.zero_()

    def _logits(self, z: torch.Tensor, shape: torch.Size) -> torch.Tensor:
        b, c, h, w = shape
        out = _fp32_output(self.policy, z)
        if self.policy_form == "logits":
            return out.view(b, c, self.n_actions, h, w)
        a = self.action_values.view(1, 1, -1, 1, 1)
        tau = self.log_temperature.float().exp().view(1, -1, 1, 1, 1)
        return (a * (255.0 * out.unsqueeze(2)) - 0.5 * a.square()) / tau

    def policy_logits(self, state: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, C, A, H, W)`` from state ``(B, C, H, W)``."""
        return self._logits(self.encoder(state), state.shape)

    def greedy_actions(self, state: torch.Tensor) -> torch.Tensor:
        """The most probable action ``(B, C, H, W)`` (int64) in state ``(B, C, H, W)``: the argmax of
        :meth:`policy_logits`. For the Gaussian form, the residual rounded to the nearest action and clipped to the
        range, which is that argmax without the ``A`` logits per pixel (ties aside: an exact half rounds to even,
        where the argmax takes the lower action)."""
        if self.policy_form != "gaussian":
            return self.policy_logits(state).argmax(dim=2)
        half = self.n_actions // 2
        nearest = (255.0 / self.action_step) * _fp32_output(self.policy, self.encoder(state))
        return nearest.round().clamp(-half, self.n_actions - 1 - half).long() + half

    def forward(self, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits ``(B, C, A, H, W)`` and values ``(B, C, H, W)``, both float32 under any autocast."""
        z = self.encoder(state)
        return self._logits(z, state.shape), _fp32_output(self.value, z)


class R3N(nn.Module):
    """The deterministic counterpart of R3L: the same encoder and a tanh residual head, applied recurrently.

    ``max_step`` (gray levels, 0 for none) clips each step's residual to ``±max_step/255`` as R3L's actions
    are clipped (13 for its 27 actions), with the gradient passed straight through the clip: R3N then learns the
    deterministic version of R3L's greedy policy, whose residuals a Gaussian policy head can start from.
    """

    def __init__(self, channels: int = 1, features: int = 64, steps: int = 6, head_init: str = "kaiming",
                 max_step: float = 0.0):
        super().__init__()
        self.channels, self.features, self.steps, self.max_step = channels, features, steps, max_step
        self.encoder = _encoder(channels, features)
        self.head = _head(features, channels)
        _kaiming(self)
        if head_init == "small":  # start as the identity: every step adds almost nothing
            nn.init.normal_(self.head[-1].weight, std=1e-3)

    def residual(self, state: torch.Tensor) -> torch.Tensor:
        """One step's residual ``tanh(f(I))`` ``(B, C, H, W)`` on the [0, 1] scale, clipped when ``max_step``."""
        step = torch.tanh(self.head(self.encoder(state)))
        if self.max_step:
            bound = self.max_step / 255.0
            step = step + (step.clamp(-bound, bound) - step).detach()
        return step

    def forward(self, noisy: torch.Tensor) -> torch.Tensor:
        """Final estimate ``(B, C, H, W)`` after ``steps`` updates ``I ← I + tanh(f(I))``."""
        state = noisy
        for _ in range(self.steps):
            state = state + self.residual(state)
        return state


#: An opponent colour transform: the channels' mean and two colour differences, each in [0, 1] for an image in
#: [0, 1] (after :data:`OPPONENT_OFFSET`). Its rows are orthogonal, so white noise of σ in R, G and B stays white
#: and independent across the new channels, at σ/√3, σ/√2 and σ·√6/4: less than in any colour channel.
OPPONENT = ((1 / 3, 1 / 3, 1 / 3), (1 / 2, 0.0, -1 / 2), (1 / 4, -1 / 2, 1 / 4))
OPPONENT_OFFSET = (0.0, 0.5, 0.5)


class OpponentColour(nn.Module):
    """A gray network denoising colour images: each channel of the image in an opponent colour space
    (:data:`OPPONENT`) as its own gray image, then back to RGB. For a network trained blind over a range of σ
    (which then fits the lower noise of each opponent channel), measured 1.0–1.7 dB above denoising R, G and B
    on their own (docs/experiments.md); ``inner`` keeps its own parameter names under ``inner.``."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        if getattr(inner, "channels", 1) != 1:
            raise R3LError("an opponent-colour model wraps a gray (1-channel) network")
        self.inner = inner
        self.channels, self.features = 3, getattr(inner, "features", 0)
        forward = torch.tensor(OPPONENT)
        self.register_buffer("to_opponent", forward, persistent=False)
        self.register_buffer("to_rgb", torch.linalg.inv(forward), persistent=False)
        self.register_buffer("offset", torch.tensor(OPPONENT_OFFSET).view(1, 3, 1, 1), persistent=False)

    def forward(self, noisy: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` RGB in, RGB estimate out (the inner estimates clipped to [0, 1] as gray outputs are)."""
        b, _, h, w = noisy.shape
        opponent = torch.einsum("ij,bjhw->bihw", self.to_opponent, noisy) + self.offset
        clean = self.inner(opponent.reshape(b * 3, 1, h, w)).reshape(b, 3, h, w).clamp(0.0, 1.0)
        return torch.einsum("ij,bjhw->bihw", self.to_rgb, clean - self.offset)


class DnCNN(nn.Module):
    """DnCNN (Zhang et al., 2017) with batch norm folded into the convolutions; predicts the noise.

    Parameter names match KAIR's ``model.0`` … ``model.32`` so its weights load directly.
    """

    def __init__(self, channels: int = 1, features: int = 64, depth: int = 17):
        super().__init__()
        self.channels, self.features, self.depth = channels, features, depth
        layers: list[nn.Module] = [_conv(channels, features), nn.ReLU(inplace=True)]
        for _ in range(depth - 2):
            layers += [_conv(features, features), nn.ReLU(inplace=True)]
        layers.append(_conv(features, channels))
        self.model = nn.Sequential(*layers)
        _kaiming(self)

    def forward(self, noisy: torch.Tensor) -> torch.Tensor:
        """Clean estimate ``noisy − noise``, ``(B, C, H, W)``."""
        return noisy - self.model(noisy)


#: R3N shares R3L's encoder, and its head has the shape of the policy head: the same layers are copied.
DNCNN_TO_R3N = {
    "encoder.2": "model.6",
    "encoder.4": "model.12",
    "encoder.6": "model.18",
    "head.0": "model.24",
    "head.2": "model.30",
}

#: Actor-critic parameter ← DnCNN parameter (the paper code's initialisation).
DNCNN_TO_ACTOR_CRITIC = {
    "encoder.2": "model.6",
    "encoder.4": "model.12",
    "encoder.6": "model.18",
    "policy.0": "model.24",
    "policy.2": "model.30",
    "value.0": "model.24",
    "value.2": "model.30",
}


#: SHA-256 of KAIR's published DnCNN files, by file name: a file of that name with other bytes gets a warning.
KAIR_SHA256 = {
    "dncnn_25.pth": "0451a70de9b672ae037270498fbb1c17a1c1c4403785df586ff65df5b858e5b0",
}
#: Trained DnCNN weights stay within a few units (KAIR's σ-25 file: |w| ≤ 2.6, max |w| ≤ 14 standard deviations
#: of its tensor); values far outside come from a damaged file, whose output would be garbage.
PLAUSIBLE_ABS, PLAUSIBLE_SPREAD = 100.0, 40.0
_DNCNN_KEY = re.compile(r"model\.(\d+)\.(weight|bias)")


def check_plausible(state: dict[str, torch.Tensor], path: str | Path) -> None:
    """Refuse weights that cannot come from training: NaN/inf, or values far outside their tensor's spread."""
    for key, value in state.items():
        v = value.detach().float()
        if not torch.isfinite(v).all():
            raise R3LError(f"{path}: {key} holds NaN or infinite values; the file is damaged")
        peak = v.abs().max().item() if v.numel() else 0.0
        spread = v.std().item() if v.numel() > 1 else 0.0
        if peak > PLAUSIBLE_ABS or (v.numel() >= 1024 and peak > PLAUSIBLE_SPREAD * spread):
            raise R3LError(f"{path}: {key} holds implausible values (|w| up to {peak:.4g}, standard deviation "
                           f"{spread:.3g}); the file is damaged")


def load_dncnn_state(path: str | Path) -> dict[str, torch.Tensor]:
    """Read KAIR's ``dncnn_25.pth`` (a plain state dict) without unpickling code, and check its values."""
    path = Path(path)
    if not path.is_file():
        raise R3LError(f"{path}: DnCNN weights not found (get dncnn_25.pth from KAIR's model zoo, see README)")
    with open(path, "rb") as handle:
        head = handle.read(16)
    if len(head) >= 9 and head[8:9] == b"{":  # a safetensors file: 8-byte length, then a JSON header
        raise R3LError(f"{path}: this is an r3l checkpoint (safetensors), not KAIR's DnCNN .pth weights; "
                       "pass it as --checkpoint (Denoiser.from_checkpoint)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        raise R3LError(f"{path}: not a PyTorch state dict of tensors") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise R3LError(f"{path}: expected a state dict of tensors")
    foreign = next((k for k in state if not _DNCNN_KEY.fullmatch(str(k))), None)
    if foreign is not None:
        raise R3LError(f"{path}: not KAIR's DnCNN layout (key {str(foreign)[:60]!r}; expected model.N.weight/bias)")
    check_plausible(state, path)
    known = KAIR_SHA256.get(path.name)
    if known is not None and file_sha256(path) != known:
        warn(f"{path}: differs from KAIR's published {path.name} (SHA-256 mismatch); results may not match "
             "the published numbers")
    return state


def dncnn_from_weights(path: str | Path) -> DnCNN:
    """A :class:`DnCNN` holding KAIR's weights; its shape is read from the file."""
    state = load_dncnn_state(path)
    convs = sorted(int(k.split(".")[1]) for k in state if k.endswith(".weight"))
    if not convs or "model.0.weight" not in state or state["model.0.weight"].ndim != 4:
        raise R3LError(f"{path}: no DnCNN layers (model.0.weight ...) in this file")
    first = state["model.0.weight"]
    net = DnCNN(channels=first.shape[1], features=first.shape[0], depth=len(convs))
    expected = net.state_dict()
    if set(expected) != set(state) or any(expected[k].shape != state[k].shape for k in expected):
        raise R3LError(f"{path}: layers do not form a plain DnCNN of {len(convs)} convolutions")
    net.load_state_dict(state)
    return net


def init_dncnn_from_dncnn(net: DnCNN, path: str | Path) -> None:
    """``model.init: dncnn`` for a :class:`DnCNN`: all of KAIR's weights, which must form a network of its shape."""
    source = dncnn_from_weights(path)
    if source.state_dict().keys() != net.state_dict().keys() or source.channels != net.channels:
        raise R3LError(f"{path}: holds a {source.depth}-layer DnCNN for {source.channels} channel(s); "
                       f"the model is {net.depth} layers for {net.channels}")
    net.load_state_dict(source.state_dict())


def init_r3l_from_dncnn(net: ActorCritic, path: str | Path) -> None:
    """``model.init: dncnn`` for R3L's actor-critic: the middle DnCNN convolutions, as the original code does
    (spec, "Initialisation"; :data:`DNCNN_TO_ACTOR_CRITIC`)."""
    _copy_dncnn_layers(net, path, DNCNN_TO_ACTOR_CRITIC)


def init_r3n_from_dncnn(net: R3N, path: str | Path) -> None:
    """``model.init: dncnn`` for R3N: the DnCNN convolutions of :data:`DNCNN_TO_R3N`."""
    _copy_dncnn_layers(net, path, DNCNN_TO_R3N)


def _copy_dncnn_layers(net: nn.Module, path: str | Path, mapping: dict[str, str]) -> None:
    state = load_dncnn_state(path)
    params = dict(net.named_parameters())
    with torch.no_grad():
        for ours, theirs in mapping.items():
            for suffix in ("weight", "bias"):
                src_key, dst_key = f"{theirs}.{suffix}", f"{ours}.{suffix}"
                if src_key not in state:
                    raise R3LError(f"{path}: missing {src_key}, expected KAIR's 17-layer DnCNN")
                src, dst = state[src_key], params[dst_key]
                if src.shape != dst.shape:
                    raise R3LError(
                        f"{path}: {src_key} has shape {tuple(src.shape)}, {dst_key} needs {tuple(dst.shape)} "
                        f"(model.features must be {src.shape[0]})"
                    )
                dst.copy_(src)

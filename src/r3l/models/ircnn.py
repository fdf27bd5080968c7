"""IRCNN's gray denoisers (Zhang et al., CVPR 2017): reading their weights and initialising R3L, R3N and pixelRL.

IRCNN is seven 3×3 convolutions of 64 features with dilations 1, 2, 3, 4, 3, 2, 1 and ReLUs between them,
predicting the noise (``clean = noisy − net(noisy)``, images in [0, 1]). That is exactly R3L's inference
network: the encoder (dilations 1–4) followed by the policy head (3, 2, 1), with one residual channel where R3L
has one logit per action. Two published forms of the same weights are read:

- the original Caffe files ``*.caffemodel`` (a protobuf ``NetParameter``), parsed here from the protobuf wire
  format itself: seven convolutions' blobs are all that is needed, and a 60-line reader of the format avoids
  a protobuf dependency and a compiled ``caffe.proto`` (the ``protobuf`` package alone cannot decode the
  message without that schema);
- KAIR's ``ircnn_gray.pth``: a dict ``'0'`` … ``'24'`` of state dicts (σ = 2, 4, …, 50), each
  ``model.0/2/…/12.{weight,bias}``; the entry for σ is ``ceil(σ / 2) − 1``.
"""

from __future__ import annotations

import hashlib
import math
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from r3l.errors import R3LError, warn

#: IRCNN's dilations, layer by layer.
DILATIONS = (1, 2, 3, 4, 3, 2, 1)
#: The noise levels of KAIR's ``ircnn_gray.pth``, in the order of its keys ``'0'`` … ``'24'``.
KAIR_SIGMAS = tuple(range(2, 51, 2))
#: SHA-256 of the published Caffe files, by name: a file of that name with other bytes gets a warning.
CAFFE_SHA256 = {
    "zhang_cvpr17_denoise_15_gray.caffemodel": "fbb2c927ad4fef335764770d678d323a8d0e9c885988612d1a196977cdebb28e",
    "zhang_cvpr17_denoise_25_gray.caffemodel": "cf993d1e2b093ddcf486dbf12a6a6aeee74b1901578120d108db85d49cb455a7",
    "zhang_cvpr17_denoise_50_gray.caffemodel": "755980938229477c36e9cb6d5749c531ca7d2fafa07e9276a447c916706da46f",
}
#: Trained IRCNN weights stay within a few units; values far outside come from a damaged file.
PLAUSIBLE_ABS = 100.0
HOW_TO_GET = ("get IRCNN's gray denoisers as KAIR's model_zoo/ircnn_gray.pth (MIT licence) or the original "
              "zhang_cvpr17_denoise_<sigma>_gray.caffemodel files, see README")

Layers = list[tuple[torch.Tensor, torch.Tensor]]
"""Seven (weight ``(out, in, 3, 3)``, bias ``(out,)``) pairs, input layer first."""


class IRCNN(nn.Module):
    """IRCNN's denoiser; parameter names match KAIR's (``model.0`` … ``model.12``), so its files load directly."""

    def __init__(self, channels: int = 1, features: int = 64):
        super().__init__()
        self.channels, self.features = channels, features
        layers: list[nn.Module] = []
        for i, d in enumerate(DILATIONS):
            cin = channels if i == 0 else features
            cout = channels if i == len(DILATIONS) - 1 else features
            layers.append(nn.Conv2d(cin, cout, 3, padding=d, dilation=d))
            if i < len(DILATIONS) - 1:
                layers.append(nn.ReLU(inplace=True))
        self.model = nn.Sequential(*layers)

    def forward(self, noisy: torch.Tensor) -> torch.Tensor:
        """Clean estimate ``noisy − noise``, ``(B, C, H, W)``."""
        return noisy - self.model(noisy)


# --- the protobuf wire format, as much of it as a caffemodel needs -------------------------------------------

def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ValueError("truncated varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def _fields(buf: bytes):
    """Yield ``(field number, wire type, value)``; length-delimited values as bytes, others as ints."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, kind = key >> 3, key & 7
        if kind == 0:
            value, pos = _varint(buf, pos)
        elif kind == 1:
            value, pos = int.from_bytes(buf[pos:pos + 8], "little"), pos + 8
        elif kind == 2:
            size, pos = _varint(buf, pos)
            if pos + size > len(buf):
                raise ValueError("truncated field")
            value, pos = buf[pos:pos + size], pos + size
        elif kind == 5:
            value, pos = int.from_bytes(buf[pos:pos + 4], "little"), pos + 4
        else:
            raise ValueError(f"wire type {kind}")
        if pos > len(buf):
            raise ValueError("truncated field")
        yield number, kind, value


def _blob(buf: bytes) -> np.ndarray:
    """A Caffe ``BlobProto``: float data (field 5, packed or not) shaped by ``shape`` (7) or num/channels/h/w."""
    data: list[bytes] = []
    dims: list[int] = []
    legacy = {}
    for number, kind, value in _fields(buf):
        if number == 5 and kind == 2:
            data.append(value)
        elif number == 5 and kind == 5:
            data.append(struct.pack("<I", value))
        elif number == 7 and kind == 2:
            for n, k, v in _fields(value):
                if n == 1 and k == 2:  # packed int64 dims
                    p = 0
                    while p < len(v):
                        d, p = _varint(v, p)
                        dims.append(d)
                elif n == 1 and k == 0:
                    dims.append(v)
        elif number in (1, 2, 3, 4) and kind == 0:
            legacy[number] = value
    array = np.frombuffer(b"".join(data), dtype="<f4")
    if not dims and legacy:
        dims = [legacy.get(i, 1) for i in (1, 2, 3, 4)]
    if dims and int(np.prod(dims)) == array.size:
        array = array.reshape(dims)
    return array


def read_caffemodel(path: Path) -> Layers:
    """The convolutions of a Caffe ``NetParameter`` file, in order (``layer``, field 100; or the V1 ``layers``)."""
    buf = path.read_bytes()
    convs: Layers = []
    try:
        for number, kind, value in _fields(buf):
            if kind != 2 or number not in (100, 2):
                continue
            name_field, type_field, blob_field = (1, 2, 7) if number == 100 else (4, 5, 6)
            kind_name, blobs = None, []
            for n, k, v in _fields(value):
                if n == type_field:
                    kind_name = v.decode("utf-8", "replace") if k == 2 else ("Convolution" if v == 4 else str(v))
                elif n == blob_field and k == 2:
                    blobs.append(_blob(v))
            if kind_name == "Convolution":
                if len(blobs) != 2 or blobs[0].ndim != 4 or blobs[1].size != blobs[0].shape[0]:
                    raise ValueError("a convolution without a 4-D weight and a bias")
                convs.append((torch.from_numpy(blobs[0].copy()), torch.from_numpy(blobs[1].reshape(-1).copy())))
    except (ValueError, UnicodeError) as exc:
        raise R3LError(f"{path}: not a readable Caffe model ({exc}); {HOW_TO_GET}") from None
    return convs


def _kair_key(sigma: float) -> str:
    return str(max(0, math.ceil(sigma / 2) - 1))


def read_kair(path: Path, sigma: float) -> Layers:
    """The σ entry of KAIR's ``ircnn_gray.pth`` (or a single state dict ``model.0`` … ``model.12``)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        raise R3LError(f"{path}: neither a Caffe model nor a PyTorch file; {HOW_TO_GET}") from None
    if not isinstance(state, dict):
        raise R3LError(f"{path}: expected KAIR's ircnn_gray.pth (a dict of state dicts); {HOW_TO_GET}")
    if "model.0.weight" not in state:
        key = _kair_key(sigma)
        if key not in state:
            raise R3LError(f"{path}: no entry {key!r} for sigma {sigma:g} (KAIR's ircnn_gray.pth has '0' … '24' "
                           f"for sigma 2 … 50); {HOW_TO_GET}")
        if int(key) < len(KAIR_SIGMAS) and abs(KAIR_SIGMAS[int(key)] - sigma) > 1e-6:
            warn(f"{path}: no IRCNN model for sigma {sigma:g}; using the one for sigma {KAIR_SIGMAS[int(key)]}")
        state = state[key]
    if not isinstance(state, dict):
        raise R3LError(f"{path}: entry for sigma {sigma:g} is not a state dict; {HOW_TO_GET}")
    layers = []
    for i in range(len(DILATIONS)):
        w, b = state.get(f"model.{2 * i}.weight"), state.get(f"model.{2 * i}.bias")
        if not isinstance(w, torch.Tensor) or not isinstance(b, torch.Tensor):
            raise R3LError(f"{path}: not IRCNN's layout (missing model.{2 * i}.weight/bias); {HOW_TO_GET}")
        layers.append((w.float(), b.float()))
    return layers


def load_ircnn_layers(path: str | Path, sigma: float = 25.0) -> Layers:
    """IRCNN's seven convolutions from a ``.caffemodel`` or KAIR's ``ircnn_gray.pth``, checked for shape and values.

    ``sigma`` picks the entry of KAIR's multi-level file; a Caffe file holds one level (named in its file name).
    """
    path = Path(path)
    if not path.is_file():
        raise R3LError(f"{path}: IRCNN weights not found ({HOW_TO_GET})")
    with open(path, "rb") as handle:
        head = handle.read(16)
    if len(head) >= 9 and head[8:9] == b"{":
        raise R3LError(f"{path}: this is an r3l checkpoint (safetensors), not IRCNN's weights; "
                       "pass it as --checkpoint (Denoiser.from_checkpoint)")
    is_torch = head[:2] == b"PK" or head[:1] == b"\x80"
    layers = read_kair(path, sigma) if is_torch else read_caffemodel(path)
    if len(layers) != len(DILATIONS):
        raise R3LError(f"{path}: holds {len(layers)} convolutions, IRCNN has {len(DILATIONS)}; {HOW_TO_GET}")
    channels, features = layers[0][0].shape[1], layers[0][0].shape[0]
    for i, (w, b) in enumerate(layers):
        cin = channels if i == 0 else features
        cout = channels if i == len(DILATIONS) - 1 else features
        if tuple(w.shape) != (cout, cin, 3, 3) or tuple(b.shape) != (cout,):
            raise R3LError(f"{path}: convolution {i + 1} has shape {tuple(w.shape)}, IRCNN needs "
                           f"{(cout, cin, 3, 3)}; {HOW_TO_GET}")
        for what, t in (("weight", w), ("bias", b)):
            if not torch.isfinite(t).all() or t.abs().max().item() > PLAUSIBLE_ABS:
                raise R3LError(f"{path}: convolution {i + 1}'s {what} holds NaN, infinite or implausible values; "
                               "the file is damaged")
    known = CAFFE_SHA256.get(path.name)
    if known is not None and hashlib.sha256(path.read_bytes()).hexdigest() != known:
        warn(f"{path}: differs from the published {path.name} (SHA-256 mismatch); results may not match the "
             "published numbers")
    return layers


def ircnn_from_weights(path: str | Path, sigma: float = 25.0) -> IRCNN:
    """An :class:`IRCNN` holding the weights of ``path`` (σ picks the entry of KAIR's file)."""
    layers = load_ircnn_layers(path, sigma)
    net = IRCNN(channels=layers[0][0].shape[1], features=layers[0][0].shape[0])
    with torch.no_grad():
        for i, (w, b) in enumerate(layers):
            net.model[2 * i].weight.copy_(w)
            net.model[2 * i].bias.copy_(b)
    return net


def residual_logits_layer(weight: torch.Tensor, bias: torch.Tensor, n_actions: int, action_step: float,
                          temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The policy's last convolution from IRCNN's last one, so that the greedy action is IRCNN's residual.

    IRCNN's output ``W·h + b`` is the noise on the [0, 1] scale, so the residual to add is ``r̂ = −255 (W·h + b)``
    gray levels. The logit of action value ``a`` (gray levels) is ``(a·r̂ − a²/2) / τ``: up to a per-pixel
    constant, ``−(a − r̂)² / 2τ``, a discretised Gaussian around ``r̂`` with variance τ (levels²), whose
    argmax is ``r̂`` rounded and clipped to the action range. Returns ``(A, in, 3, 3)`` weights and ``(A,)``.
    """
    values = (torch.arange(n_actions, dtype=torch.float64) - n_actions // 2) * action_step
    w = weight.double().reshape(1, *weight.shape[1:])
    new_w = (-255.0 * values.view(-1, 1, 1, 1) * w) / temperature
    new_b = (-255.0 * values * bias.double().reshape(()) - values.square() / 2) / temperature
    return new_w.float(), new_b.float()


@dataclass(frozen=True)
class IrcnnStart:
    """How a network starts from IRCNN's weights (``model.init: ircnn``; the ``model`` section's options)."""

    sigma: float = 25.0
    """The noise level of the IRCNN model to take from KAIR's multi-level file."""
    head_init: str = "residual"
    """``residual``: the last layer is set from IRCNN's, so that a step is IRCNN's residual; otherwise the last
    layer keeps its own initialisation."""
    temperature: float = 16.0
    """R3L, ``residual``: the initial policy is a discretised Gaussian of this variance (gray levels²)."""
    action_step: float = 1.0
    """R3L: the gray levels between two actions."""
    gain: float = 1.0
    """``residual``: the residual each step starts with, as a fraction of IRCNN's."""


def init_ircnn_from_ircnn(net: IRCNN, path: str | Path, start: IrcnnStart = IrcnnStart()) -> None:
    """``model.init: ircnn`` for an :class:`IRCNN`: all its layers, which must have the file's shape."""
    source = ircnn_from_weights(path, start.sigma)
    if source.channels != net.channels or source.features != net.features:
        raise R3LError(f"{path}: holds an IRCNN of {source.features} features for {source.channels} channel(s); "
                       f"the model has {net.features} for {net.channels}")
    net.load_state_dict(source.state_dict())


def init_r3l_from_ircnn(net: nn.Module, path: str | Path, start: IrcnnStart = IrcnnStart()) -> None:
    """``model.init: ircnn`` for R3L's actor-critic: the encoder gets IRCNN's layers 1–4 and each head its layers
    5–6 (same dilations, so no kernel lands in a layer it was not trained for). With ``head_init: residual`` the
    policy's last layer is :func:`residual_logits_layer` of IRCNN's (greedy action = IRCNN's residual), or for
    the Gaussian form IRCNN's last layer negated; otherwise it keeps its own initialisation, as does the value
    head's last layer."""
    layers = _ircnn_body(net, path, start, [net.policy, net.value])
    if start.head_init == "residual":
        w, b = start.gain * layers[6][0], start.gain * layers[6][1]
        with torch.no_grad():
            if net.policy_form == "gaussian":  # the head outputs the residual itself
                _put(net.policy[-1], (-w, -b))
                net.log_temperature.fill_(math.log(start.temperature))
            else:
                _put(net.policy[-1],
                     residual_logits_layer(w, b, net.n_actions, start.action_step, start.temperature))


def init_r3n_from_ircnn(net: nn.Module, path: str | Path, start: IrcnnStart = IrcnnStart()) -> None:
    """``model.init: ircnn`` for R3N: the encoder gets IRCNN's layers 1–4 and the head its layers 5–6; with
    ``head_init: residual`` the last layer is IRCNN's negated, so ``tanh(f(I)) ≈ −noise`` (tanh is near-linear
    there)."""
    layers = _ircnn_body(net, path, start, [net.head])
    if start.head_init == "residual":
        with torch.no_grad():
            _put(net.head[-1], (-start.gain * layers[6][0], -start.gain * layers[6][1]))


def _ircnn_body(net: nn.Module, path: str | Path, start: IrcnnStart,
                heads: list[nn.Sequential]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """IRCNN's layers 1–4 into ``net.encoder`` and 5–6 into each head's first two convolutions; its seven layers."""
    layers = load_ircnn_layers(path, start.sigma)
    channels, features = layers[0][0].shape[1], layers[0][0].shape[0]
    if getattr(net, "channels", None) != channels or getattr(net, "features", None) != features:
        raise R3LError(f"{path}: IRCNN's weights are for {channels} channel(s) and {features} features; the model "
                       f"has {getattr(net, 'channels', '?')} and {getattr(net, 'features', '?')} "
                       f"(model.channels must be {channels}, model.features {features})")
    with torch.no_grad():
        for i in range(4):
            _put(net.encoder[2 * i], layers[i])
        for head in heads:
            _put(head[0], layers[4])
            _put(head[2], layers[5])
    return layers


def _put(conv: nn.Conv2d, wb: tuple[torch.Tensor, torch.Tensor]) -> None:
    conv.weight.copy_(wb[0])
    conv.bias.copy_(wb[1])


def init_r3l_from_network(net: nn.Module, source: nn.Module, source_model: str, temperature: float = 1.0,
                          action_step: float = 1.0) -> None:
    """``model.init: checkpoint`` for R3L's actor-critic from another architecture's network: a trained R3N (best
    one trained with ``max_step`` = R3L's action range; ``source_model`` is its registry name).

    R3N's step ``tanh(f(I))`` is near-linear over ±13 levels (tanh(13/255) is 0.1% below 13/255), so the
    policy's greedy action starts as R3N's step rounded to a gray level: the encoder and the head's hidden
    layers are copied into the encoder, the policy head and the value head; R3N's last layer becomes the
    Gaussian policy's residual output (or, for the ``logits`` form, :func:`residual_logits_layer` of it). The
    value head's last layer keeps its own initialisation.
    """
    if source_model != "r3n":
        raise R3LError(f"model.init checkpoint starts an r3l policy from an r3n checkpoint; this one holds "
                       f"{source_model}")
    if (source.channels, source.features) != (net.channels, net.features):
        raise R3LError(f"the R3N checkpoint has {source.channels} channel(s) and {source.features} features; the "
                       f"model has {net.channels} and {net.features}")
    with torch.no_grad():
        net.encoder.load_state_dict(source.encoder.state_dict())
        for head in (net.policy, net.value):
            for i in (0, 2):
                head[i].load_state_dict(source.head[i].state_dict())
        w, b = source.head[-1].weight, source.head[-1].bias
        if net.policy_form == "gaussian":
            net.policy[-1].weight.copy_(w)
            net.policy[-1].bias.copy_(b)
            net.log_temperature.fill_(math.log(temperature))
        else:
            new_w, new_b = residual_logits_layer(-w, -b, net.n_actions, action_step, temperature)
            net.policy[-1].weight.copy_(new_w)
            net.policy[-1].bias.copy_(new_b)


def init_r3n_from_network(net: nn.Module, source: nn.Module, source_model: str, temperature: float = 1.0,
                          action_step: float = 1.0) -> None:
    """``model.init: checkpoint`` for R3N from a network of another shape: a gray R3N widened to colour
    (:func:`widen_to_colour`)."""
    if source_model != "r3n" or (source.channels, net.channels) != (1, 3) or source.features != net.features:
        held = (f"{source.channels} channel(s) and {source.features} features" if source_model == "r3n"
                else source_model)
        raise R3LError(f"model.init checkpoint: an r3n continues from an r3n checkpoint of its shape, or widens a "
                       f"gray one of the same width to colour; the checkpoint holds {held}, the model has "
                       f"{net.channels} channel(s) and {net.features} features")
    widen_to_colour(net, source)


def widen_to_colour(net: nn.Module, source: nn.Module) -> None:
    """Start a colour R3N from a gray one: the first convolution reads the mean of the three channels (the gray
    kernel divided by 3 on each), the last writes the gray residual to each channel, every other layer is copied.
    The start removes the noise the channels share; learning the rest is left to training."""
    if (source.channels, net.channels) != (1, 3) or source.features != net.features:
        raise R3LError(f"a colour model starts from a gray one of the same width: the checkpoint has "
                       f"{source.channels} channel(s) and {source.features} features, the model {net.channels} "
                       f"and {net.features}")
    state = source.state_dict()
    first, last = "encoder.0", f"head.{len(source.head) - 1}"
    with torch.no_grad():
        for name, value in net.state_dict().items():
            src = state[name]
            if name == f"{first}.weight":
                value.copy_(src.expand_as(value) / value.shape[1])
            elif name.startswith(last):
                value.copy_(src.expand_as(value) if name.endswith("bias") else src.expand(value.shape))
            else:
                value.copy_(src)

"""The network a training config describes, with its starting weights (``model.init``): from scratch, KAIR's
DnCNN, IRCNN's weights (``head_init: residual`` makes the greedy step IRCNN's residual) or an r3l checkpoint
(the same network continued, a gray R3N widened to colour, or R3L's policy started from an R3N)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

from torch import nn

from r3l.errors import R3LError
from r3l.io.files import expand_path
from r3l.models.checkpoint import load_checkpoint, load_weights
from r3l.models.ircnn import IrcnnStart
from r3l.models.networks import OpponentColour
from r3l.models.spec import ArchSpec, build_network
from r3l.models.zoo import find_model
from r3l.schema import positive


@dataclass
class InitOptions:
    """How training starts a network's weights: options of every model's config section, not of its
    architecture (a checkpoint does not store them)."""

    init: Literal["dncnn", "ircnn", "checkpoint", "scratch"] = "dncnn"
    """``dncnn`` (copy layers from KAIR's DnCNN σ=25 weights, as the original code), ``ircnn`` (IRCNN's gray
    denoiser, whose seven dilated convolutions are R3L's inference network; see ``ircnn_weights``),
    ``checkpoint`` (see ``init_checkpoint``) or ``scratch``."""
    dncnn_weights: str = "${R3L_WEIGHTS}/dncnn_25.pth"
    ircnn_weights: str = "${R3L_WEIGHTS}/ircnn/zhang_cvpr17_denoise_25_gray.caffemodel"
    """IRCNN's weights: a ``.caffemodel`` or KAIR's ``ircnn_gray.pth`` (its entry for ``ircnn_sigma``)."""
    ircnn_sigma: float = positive(25.0)
    """The noise level of the IRCNN model to take from KAIR's multi-level file."""
    head_gain: float = positive(1.0)
    """``head_init: residual``: the residual each step starts with, as a fraction of IRCNN's (below 1, each step
    removes part of the estimated noise and leaves Gaussian-like noise of a lower level for the next)."""
    head_temperature: float = positive(16.0)
    """``head_init: residual``: the initial policy is a discretised Gaussian of this variance (gray levels²)
    around IRCNN's residual."""
    init_checkpoint: str = ""
    """``init: checkpoint``: an r3l checkpoint, or a registry model's name, whose layers start this model (an R3N's
    encoder and head start R3L's encoder, its Gaussian policy head and the value head's hidden layers)."""


def build_model(spec: ArchSpec, m: InitOptions) -> nn.Module:
    """The network of ``spec`` with the starting weights ``m`` says (a training config's ``model`` section holds
    both: :func:`r3l.models.spec.spec_from_config` makes the spec of it and of the ``env`` section)."""
    net = build_network(spec)
    # An opponent-colour model's weights are its gray network's: every init below applies to that network.
    start = net.inner if isinstance(net, OpponentColour) else net
    entry = spec.entry
    head_init = getattr(spec.options, "head_init", "kaiming")
    if head_init == "residual" and m.init not in ("ircnn", "checkpoint"):
        raise R3LError("model.head_init residual needs model.init ircnn (the residual comes from IRCNN's last layer)")
    if m.init == "dncnn":
        _starter(entry.from_dncnn, m.init, spec)(start, expand_path(m.dncnn_weights, "model.dncnn_weights"))
    elif m.init == "ircnn":
        how = IrcnnStart(m.ircnn_sigma, head_init, m.head_temperature, spec.action_step, m.head_gain)
        _starter(entry.from_ircnn, m.init, spec)(start, expand_path(m.ircnn_weights, "model.ircnn_weights"), how)
    elif m.init == "checkpoint":
        if not m.init_checkpoint:
            raise R3LError("model.init checkpoint needs model.init_checkpoint (an r3l checkpoint to start from)")
        path = checkpoint_path(m.init_checkpoint)
        ckpt = load_checkpoint(path)
        source = build_network(ckpt.arch)
        load_weights(source, ckpt, ckpt.arch, path)
        if _same_shape(source, start):  # the same network (perhaps clipped otherwise): continue from its weights
            start.load_state_dict(source.state_dict())
        else:
            _starter(entry.from_network, f"{m.init} ({path} holds {ckpt.arch.name})", spec)(
                start, source, ckpt.arch.name, m.head_temperature, spec.action_step)
    return net


def _starter(function: Callable | None, init: str, spec: ArchSpec) -> Callable:
    """The registry entry's function for ``model.init``, or a one-line error when the model has none."""
    if function is None:
        raise R3LError(f"config key model.init: {init} does not apply to the model {spec.name}")
    return function


def checkpoint_path(value: str) -> Path:
    """``model.init_checkpoint``'s file: a path (``${VAR}`` expanded), or the name of a registry model
    (``r3n-gray-s25``: a shipped model, or one in ``R3L_MODELS``)."""
    path = expand_path(value, "model.init_checkpoint")
    if not path.exists() and path.suffix != ".safetensors" and len(path.parts) == 1:
        return find_model(value).path
    return path


def _same_shape(a: nn.Module, b: nn.Module) -> bool:
    """Whether ``a``'s weights fit ``b`` as they are: the same class with the same parameter names and shapes
    (an R3N with another ``max_step``, or with another step count, is such a network)."""
    sa, sb = a.state_dict(), b.state_dict()
    return type(a) is type(b) and sa.keys() == sb.keys() and all(sa[k].shape == sb[k].shape for k in sa)

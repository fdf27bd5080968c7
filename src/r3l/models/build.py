"""The network a training config describes, with its starting weights (``model.init``): from scratch, KAIR's
DnCNN, IRCNN's weights (``head_init: residual`` makes the greedy step IRCNN's residual) or an r3l checkpoint
(the same network continued, a gray R3N widened to colour, or R3L's policy started from an R3N)."""

from __future__ import annotations

from torch import nn

from r3l.config import Config
from r3l.errors import R3LError
from r3l.io.checkpoint import load_checkpoint, load_weights
from r3l.io.files import expand_path
from r3l.models.ircnn import init_from_ircnn, init_from_r3n, widen_to_colour
from r3l.models.networks import init_from_dncnn
from r3l.models.spec import build_network, spec_from_config


def build_model(cfg: Config) -> nn.Module:
    """The configured network, initialised from scratch or from KAIR's DnCNN weights."""
    net = build_network(spec_from_config(cfg))
    m = cfg.model
    if m.head_init == "residual" and m.init not in ("ircnn", "checkpoint"):
        raise R3LError("model.head_init residual needs model.init ircnn (the residual comes from IRCNN's last layer)")
    if m.head_init == "residual" and m.name == "r3l" and cfg.env.name != "residual_denoise":
        raise R3LError(f"model.head_init residual: the {cfg.env.name} task's actions are not residuals; use "
                       "head_init small or kaiming (IRCNN's layers still initialise the network)")
    if m.init == "dncnn":
        init_from_dncnn(net, expand_path(m.dncnn_weights, "model.dncnn_weights"))
    elif m.init == "ircnn":
        init_from_ircnn(net, expand_path(m.ircnn_weights, "model.ircnn_weights"), m.ircnn_sigma, m.head_init,
                        m.head_temperature, cfg.env.action_step, m.head_gain)
    elif m.init == "checkpoint":
        if not m.init_checkpoint:
            raise R3LError("model.init checkpoint needs model.init_checkpoint (an r3l checkpoint to start from)")
        path = expand_path(m.init_checkpoint, "model.init_checkpoint")
        ckpt = load_checkpoint(path)
        source = build_network(ckpt.arch)
        load_weights(source, ckpt, ckpt.arch, path)
        if _same_shape(source, net):  # the same network (perhaps clipped otherwise): continue from its weights
            net.load_state_dict(source.state_dict())
        elif getattr(source, "channels", None) == 1 and getattr(net, "channels", None) == 3:
            widen_to_colour(net, source)
        else:
            init_from_r3n(net, source, m.head_temperature, cfg.env.action_step)
    return net


def _same_shape(a: nn.Module, b: nn.Module) -> bool:
    """Whether ``a``'s weights fit ``b`` as they are: the same class with the same parameter names and shapes
    (an R3N with another ``max_step``, or with another step count, is such a network)."""
    sa, sb = a.state_dict(), b.state_dict()
    return type(a) is type(b) and sa.keys() == sb.keys() and all(sa[k].shape == sb[k].shape for k in sa)

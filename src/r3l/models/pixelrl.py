"""pixelRL's published denoisers (Furuta et al., AAAI 2019 / IEEE TMM 2020), read into r3l's actor-critic.

pixelRL's authors published three trained gray denoisers, ``pretrained_15.npz``, ``pretrained_25.npz`` and
``pretrained_50.npz`` (σ 15, 25, 50; the pixel-wise A3C without its convGRU or reward-map convolution). Each is
a NumPy archive of Chainer parameters whose layers are R3L's actor-critic with 9 actions, layer for layer:

========================  ============================  =========
pixelRL array             r3l parameter                 dilation
========================  ============================  =========
``conv1``                 ``encoder.0``                 1
``diconv2/diconv``        ``encoder.2``                 2
``diconv3/diconv``        ``encoder.4``                 3
``diconv4/diconv``        ``encoder.6``                 4
``diconv5_pi/diconv``     ``policy.0``                  3
``diconv6_pi/diconv``     ``policy.2``                  2
``conv7_pi/model``        ``policy.4`` (9 logits)       1
``diconv5_V/diconv``      ``value.0``                   3
``diconv6_V/diconv``      ``value.2``                   2
``conv7_V``               ``value.4``                   1
========================  ============================  =========

each with ``W`` ``(out, in, 3, 3)`` and ``b`` ``(out,)`` (Chainer's convolution is a cross-correlation, as
torch's is). The actions are pixelRL's, in its order (:data:`r3l.tasks.denoise.FILTER_ACTIONS`), applied for 5
greedy steps by r3l's ``pixelrl_denoise`` task. pixelRL's repository carries no licence file: r3l reads the files
a user has, it does not ship them.
"""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import numpy as np
import torch

from r3l.errors import R3LError, warn
from r3l.models.spec import ArchSpec, build_network

#: r3l's parameter prefix for each pixelRL array prefix.
LAYERS = {
    "conv1": "encoder.0", "diconv2/diconv": "encoder.2", "diconv3/diconv": "encoder.4",
    "diconv4/diconv": "encoder.6", "diconv5_pi/diconv": "policy.0", "diconv6_pi/diconv": "policy.2",
    "conv7_pi/model": "policy.4", "diconv5_V/diconv": "value.0", "diconv6_V/diconv": "value.2",
    "conv7_V": "value.4",
}
#: SHA-256 of the published files, by name: a file of that name with other bytes gets a warning.
PUBLISHED_SHA256 = {
    "pretrained_15.npz": "0df7479e3597ecefd4234466e4d08ad9d1434524abda3dbaf9f199aa6e00581b",
    "pretrained_25.npz": "cd55442e94222f65de0f52a27674d4f19f9138d68d3377bde1b97ceeacff0659",
    "pretrained_50.npz": "c8a2a9fbe7c923adb1a520b44c8f232bbb2ee8b5201850284b961e22a5cbfdd8",
}
#: The architecture of every published file: R3L's network with pixelRL's 9 filter actions and 5 steps.
PIXELRL_ARCH = ArchSpec.of("r3l", "pixelrl_denoise", channels=1, features=64, head_init="kaiming",
                           policy_form="logits", n_actions=9, steps=5)
HOW_TO_GET = ("pixelRL's published models are denoise/model/pretrained_{15,25,50}.npz in pixelRL's repository "
              "(github.com/rfuruta/pixelRL; it has no licence file), see README")


def read_pixelrl(path: str | Path) -> dict[str, torch.Tensor]:
    """The archive's arrays as an r3l actor-critic state dict, every name and shape checked."""
    path = Path(path)
    if not path.is_file():
        raise R3LError(f"{path}: no such pixelRL model file ({HOW_TO_GET})")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError):
        raise R3LError(f"{path}: not a pixelRL model (expected a NumPy .npz archive of Chainer parameters)") from None
    expected = PUBLISHED_SHA256.get(path.name)
    if expected and hashlib.sha256(path.read_bytes()).hexdigest() != expected:
        warn(f"{path}: not the published {path.name} (its SHA-256 differs); reading it anyway")
    state: dict[str, torch.Tensor] = {}
    shapes = _shapes()
    for source, target in LAYERS.items():
        for part, suffix in (("W", "weight"), ("b", "bias")):
            key, name = f"{source}/{part}", f"{target}.{suffix}"
            if key not in arrays:
                raise R3LError(f"{path}: not a pixelRL model (no array {key!r}; it has {len(arrays)} arrays)")
            value = arrays[key]
            if tuple(value.shape) != shapes[name]:
                raise R3LError(f"{path}: array {key!r} has shape {tuple(value.shape)}, expected {shapes[name]} "
                               "(pixelRL's gray denoiser: 64 features, 9 actions)")
            if not np.isfinite(value).all():
                raise R3LError(f"{path}: array {key!r} holds NaN or infinite values (a damaged file)")
            state[name] = torch.from_numpy(np.asarray(value, dtype=np.float32).copy())
    return state


def _shapes() -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in build_network(PIXELRL_ARCH).state_dict().items()}


def pixelrl_from_npz(path: str | Path) -> torch.nn.Module:
    """pixelRL's published model as r3l's actor-critic (:data:`PIXELRL_ARCH`), ready for inference."""
    net = build_network(PIXELRL_ARCH)
    net.load_state_dict(read_pixelrl(path))
    return net

"""Fuzz the image and config loaders: the only allowed failure is R3LError.

Runs a few hundred cases by default; `make fuzz` (HYPOTHESIS_PROFILE=fuzz) runs 10,000 per test.
"""

import io
import os

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from r3l.config import Config, config_class, from_dict
from r3l.errors import R3LError
from r3l.io.images import read_image

settings.register_profile("ci", max_examples=150, deadline=None,
                          suppress_health_check=[HealthCheck.function_scoped_fixture])
settings.register_profile("fuzz", max_examples=10_000, deadline=None,
                          suppress_health_check=[HealthCheck.function_scoped_fixture])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def _seed_files() -> list[bytes]:
    rng = np.random.default_rng(0)
    pixels = (rng.random((12, 10, 3)) * 255).astype(np.uint8)
    out = []
    for fmt, mode in (("PNG", "RGB"), ("PNG", "L"), ("PNG", "P"), ("JPEG", "RGB"), ("BMP", "RGB"),
                      ("TIFF", "RGB"), ("PNG", "I;16"), ("PNG", "LA")):
        buffer = io.BytesIO()
        image = Image.fromarray(pixels)
        image = image.convert("L").convert("I;16") if mode == "I;16" else image.convert(mode)
        image.save(buffer, format=fmt)
        out.append(buffer.getvalue())
    return out


SEEDS = _seed_files()


@st.composite
def mutated_image(draw):
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(0, 8))):
        kind = draw(st.sampled_from(["flip", "cut", "insert"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "flip" and data:
            data[pos] = draw(st.integers(0, 255))
        elif kind == "cut":
            del data[pos : pos + draw(st.integers(1, 64))]
        else:
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
    return bytes(data)


def _check_image(tmp_path_factory, data: bytes) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "x.png"
    path.write_bytes(data)
    try:
        image, info = read_image(path, channels=1)
    except R3LError as exc:
        assert str(exc).startswith(str(path)) and "\n" not in str(exc)
        return
    assert image.ndim == 3 and image.shape[2] == 1 and image.dtype == np.float32
    assert np.isfinite(image).all() and image.min() >= 0 and image.max() <= 1
    assert (info.height, info.width) == image.shape[:2]


@given(data=mutated_image())
def test_fuzz_image_loader_mutated_files(tmp_path_factory, data):
    _check_image(tmp_path_factory, data)


@given(data=st.binary(max_size=512))
def test_fuzz_image_loader_random_bytes(tmp_path_factory, data):
    _check_image(tmp_path_factory, data)


KEYS = {name: list(config_class().__dataclass_fields__[name].default_factory().__dataclass_fields__)
        for name in ("env", "model", "algo", "data", "train")}
scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True),
                    st.text(max_size=12), st.lists(st.floats(-100, 100), max_size=3))


@st.composite
def config_dicts(draw):
    out = {}
    for section in draw(st.lists(st.sampled_from([*KEYS, "seed", "name", "preset", "junk"]), max_size=4)):
        if section in KEYS:
            keys = draw(st.lists(st.sampled_from(KEYS[section] + ["bogus"]), max_size=4))
            out[section] = {k: draw(scalars) for k in keys}
        else:
            out[section] = draw(scalars)
    return out


@given(values=config_dicts())
def test_fuzz_config_values(values):
    try:
        cfg = from_dict(values)
    except R3LError as exc:
        assert "\n" not in str(exc)
        return
    assert isinstance(cfg, Config)


@given(text=st.text(max_size=200))
def test_fuzz_config_text(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("cfg") / "c.yaml"
    path.write_text(text)
    from r3l.config import load_config

    try:
        load_config(path)
    except R3LError:
        pass


# The Python API: any array (or non-array) gives a same-shaped, same-dtype result or r3l's own one-line error.
_DENOISER = []


def _tiny_denoiser():
    if not _DENOISER:
        import torch

        from r3l.inference.denoiser import Denoiser
        from r3l.models.spec import build_network

        torch.manual_seed(0)
        arch = {"name": "r3l", "channels": 1, "features": 4, "n_actions": 5, "action_step": 1.0, "steps": 2}
        _DENOISER.append(Denoiser(build_network(arch), arch, "cpu"))
    return _DENOISER[0]


DTYPES = [np.uint8, np.uint16, np.int8, np.int16, np.int32, np.int64, np.uint32, np.float16, np.float32,
          np.float64, np.bool_, np.complex64]


@st.composite
def arrays(draw):
    kind = draw(st.sampled_from(["array", "array", "array", "list", "scalar"]))
    if kind == "list":
        return draw(st.lists(st.lists(st.floats(-2, 300), max_size=4), max_size=4))
    if kind == "scalar":
        return draw(st.one_of(st.floats(), st.integers(), st.none(), st.text(max_size=4)))
    shape = tuple(draw(st.lists(st.integers(0, 9), min_size=0, max_size=4)))
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    scale = draw(st.sampled_from([1.0, 255.0, 65535.0, 1e30]))
    values = rng.random(shape) * scale - draw(st.sampled_from([0.0, 0.5]))
    if dtype.kind in "ui":
        info = np.iinfo(dtype)
        values = np.clip(values, info.min, info.max)
    elif dtype.kind == "f" and draw(st.booleans()) and values.size:
        values.flat[0] = draw(st.sampled_from([np.nan, np.inf, -np.inf, 0.5]))
    with np.errstate(all="ignore"):
        return values.astype(dtype)


@given(image=arrays())
def test_fuzz_python_api(image):
    denoiser = _tiny_denoiser()
    try:
        out = denoiser.denoise(image)
    except R3LError as exc:
        assert "\n" not in str(exc) and str(exc)
        return
    assert isinstance(image, np.ndarray)
    assert out.shape == image.shape and out.dtype == image.dtype
    if out.dtype.kind == "f":
        assert np.isfinite(out).all()


# Checkpoint headers: random edits of the JSON (re-signed or not) load to a valid checkpoint or give r3l's error.
_CHECKPOINT = []


def _checkpoint_bytes(tmp_path_factory) -> bytes:
    if not _CHECKPOINT:
        import torch

        from r3l.models.checkpoint import Checkpoint, save_checkpoint
        from r3l.models.spec import build_network

        arch = {"name": "r3l", "channels": 1, "features": 4, "n_actions": 5, "action_step": 1.0, "steps": 2,
                "head_init": "small"}
        torch.manual_seed(0)
        path = tmp_path_factory.mktemp("ckpt") / "c.safetensors"
        save_checkpoint(path, Checkpoint(arch, build_network(arch).state_dict(), {"seed": 0}, 3,
                                         {"best_val_psnr": float("-inf")}))
        _CHECKPOINT.append(path.read_bytes())
    return _CHECKPOINT[0]


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-10**9, 10**9), st.floats(allow_nan=False),
              st.text(max_size=8)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=6)


@given(data=st.data())
def test_fuzz_checkpoint_header(tmp_path_factory, data):
    import json

    from safetensors.torch import load as st_load
    from safetensors.torch import save as st_save

    from r3l.models.checkpoint import _digest, _header_digest, load_checkpoint, load_weights
    from r3l.models.spec import build_network

    raw = _checkpoint_bytes(tmp_path_factory)
    size = int.from_bytes(raw[:8], "little")
    meta = json.loads(json.loads(raw[8 : 8 + size])["__metadata__"]["r3l"])
    for _ in range(data.draw(st.integers(1, 3))):
        node = meta
        path = data.draw(st.lists(st.sampled_from(["arch", "info", "config", "episode", "format_version",
                                                   "optim_groups", "name", "channels", "features", "n_actions",
                                                   "action_step", "steps", "head_init", "x"]), min_size=1,
                                  max_size=2))
        for key in path[:-1]:
            if not isinstance(node.get(key), dict):
                break
            node = node[key]
        else:
            if data.draw(st.booleans()) and path[-1] in node:
                del node[path[-1]]
            else:
                node[path[-1]] = data.draw(json_values)
    tensors = st_load(raw)
    if data.draw(st.booleans()):
        meta["sha256"] = _header_digest(_digest(tensors), meta)
    file = tmp_path_factory.mktemp("edit") / "c.safetensors"
    file.write_bytes(st_save(tensors, metadata={"r3l": json.dumps(meta)}))
    try:
        ckpt = load_checkpoint(file)
        net = build_network(ckpt.arch)
        load_weights(net, ckpt, ckpt.arch, file)
    except R3LError as exc:
        assert "\n" not in str(exc) and str(exc)
        return
    assert isinstance(ckpt.episode, int) and ckpt.episode >= 0

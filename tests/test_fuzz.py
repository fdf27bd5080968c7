"""Fuzz the image and config loaders: the only allowed failure is R3LError.

Runs a few hundred cases by default; `make fuzz` (HYPOTHESIS_PROFILE=fuzz) runs 10,000 per test.
"""

import io
import os

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from r3l.config import Config, from_dict
from r3l.errors import R3LError
from r3l.images import read_image

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


KEYS = {name: list(Config.__dataclass_fields__[name].default_factory().__dataclass_fields__)
        for name in ("env", "model", "ppo", "data", "train")}
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

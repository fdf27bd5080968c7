"""A benchmark's YAML file: its methods and noise levels, checked with the training configs' validator."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from r3l.errors import R3LError
from r3l.io.files import expand_path, read_yaml_mapping
from r3l.schema import build_dataclass, check_rules, field_rules, non_negative

#: Method kinds read from a file, and the :func:`~r3l.inference.denoiser.open_denoiser` model of each (``None``: an r3l
#: checkpoint).
WEIGHT_KINDS = {"checkpoint": None, "dncnn_weights": "dncnn", "ircnn_weights": "ircnn", "pixelrl_weights": "pixelrl"}
METHOD_KINDS = ("checkpoint", "model", "dncnn_weights", "ircnn_weights", "pixelrl_weights", "bm3d", "noisy",
                "untrained")


@dataclass
class MethodSpec:
    name: str
    kind: str
    value: Any
    published: str = ""
    """Which published column to compare with (defaults to ``name``)."""
    optional: bool = False
    """Leave the method out, with a warning, when its file or registry model is not there (a row that needs a
    model of your own training in a table that otherwise runs from a fresh install)."""


@dataclass
class BenchmarkConfig:
    data: str
    sigma_train: float = non_negative(25.0)
    sigmas: list[float] = field(default_factory=list, metadata={"bound": "non_negative"})
    methods: list[MethodSpec] = field(default_factory=list)
    name: str = ""
    seed: int = non_negative(0)
    max_images: int = non_negative(0)
    example_image: str = ""
    bm3d_workers: int = non_negative(0)
    device: str = "auto"
    published: Literal["auto", "BSD68", "none"] = "auto"
    """Print the paper's BSD68 numbers beside ours: ``auto`` (when the data folder is named BSD68), ``BSD68``
    or ``none``."""


def benchmark_number(value: Any, key: str, minimum: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value) or value < minimum:
        raise R3LError(f"benchmark key {key}: expected a number >= {minimum:g}, got {value!r}")
    return float(value)


def _flag(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise R3LError(f"benchmark key {key}: expected true or false, got {value!r}")
    return value


def method_missing(spec: MethodSpec) -> str | None:
    """What an optional method lacks (its file, or the registry model it names), else ``None``."""
    if spec.kind == "model":
        from r3l.models.zoo import list_models

        return None if any(c.name == spec.value for c in list_models()) else f"model {spec.value!r} is not installed"
    if spec.kind in WEIGHT_KINDS:
        path = expand_path(str(spec.value), f"{spec.name}.{spec.kind}")
        return None if path.is_file() else f"{path} not found"
    return None


def _methods(entries: Any) -> list[MethodSpec]:
    if not isinstance(entries, list) or not entries:
        raise R3LError("benchmark key methods: expected a non-empty list")
    methods = []
    for i, entry in enumerate(entries):
        where = f"methods[{i}]"
        if not isinstance(entry, dict) or "name" not in entry:
            raise R3LError(f"benchmark key {where}: expected a mapping with a name")
        kinds = [k for k in METHOD_KINDS if k in entry]
        extra = sorted(set(entry) - set(METHOD_KINDS) - {"name", "published", "optional"})
        if extra:
            raise R3LError(f"unknown benchmark key {where}.{extra[0]}")
        if len(kinds) != 1:
            raise R3LError(f"benchmark key {where}: give exactly one of {', '.join(METHOD_KINDS)}")
        methods.append(MethodSpec(str(entry["name"]), kinds[0], entry[kinds[0]],
                                  str(entry.get("published", entry["name"])), _flag(entry.get("optional", False),
                                                                                f"{where}.optional")))
    names = [m.name for m in methods]
    if len(set(names)) != len(names):
        raise R3LError("benchmark key methods: method names must be unique")
    return methods


def load_benchmark_config(path: str | Path, overrides: dict[str, Any] | None = None) -> BenchmarkConfig:
    """Read and check a benchmark YAML file with the training configs' validator; errors name the file and
    the key."""
    path = Path(path)
    raw = read_yaml_mapping(path, "benchmark")
    raw.update({k: v for k, v in (overrides or {}).items() if v is not None})
    try:
        for key in ("data", "sigma_train", "sigmas", "methods"):
            if key not in raw:
                raise R3LError(f"benchmark key {key}: required")
        if not isinstance(raw["sigmas"], list) or not raw["sigmas"]:
            raise R3LError(f"benchmark key sigmas: expected a non-empty list of noise levels, got {raw['sigmas']!r}")
        raw = {**raw, "methods": _methods(raw["methods"])}
        raw.setdefault("name", path.stem)
        for key in ("name", "data", "example_image", "device"):
            if key in raw and raw[key] is not None and not isinstance(raw[key], str):
                raw[key] = str(raw[key])
        cfg = build_dataclass(BenchmarkConfig, raw, label="benchmark key", skip=("methods",))
        choices, bounds = field_rules(BenchmarkConfig)
        check_rules(dataclasses.asdict(cfg), choices, bounds, label="benchmark key")
        return cfg
    except R3LError as exc:
        raise R3LError(f"{path}: {exc}") from None

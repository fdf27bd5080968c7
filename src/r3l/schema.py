"""The schema engine of r3l's configs: dataclass fields with bounds, the rules derived from them, and a mapping
(from YAML) turned into a dataclass with every key checked; an unknown key, a wrong type or an out-of-range value
is an :class:`~r3l.errors.R3LError` naming the key. The training config (:mod:`r3l.config`) and the benchmark
config are built with it."""

from __future__ import annotations

import copy
import dataclasses
import math
import types
import typing
from dataclasses import field
from typing import Any, Literal

import yaml

from r3l.errors import R3LError


def _field(default: Any, bound: str | None, resumable: bool) -> Any:
    metadata = {"bound": bound} if bound else {}
    if resumable:
        metadata["resumable"] = True
    return field(default=default, metadata=metadata)


def positive(default: Any, resumable: bool = False) -> Any:
    """A field that must be > 0 (``resumable``: see :func:`resumable`)."""
    return _field(default, "positive", resumable)


def non_negative(default: Any, resumable: bool = False) -> Any:
    """A field that must be >= 0 (``resumable``: see :func:`resumable`)."""
    return _field(default, "non_negative", resumable)


def unit_interval(default: Any) -> Any:
    """A field that must lie in [0, 1]."""
    return _field(default, "unit_interval", False)


def resumable(default: Any) -> Any:
    """A field that a resumed run may change: it decides what is logged, saved and validated, where and how fast
    the run goes, but not the sequence of its updates (:func:`resumable_keys`)."""
    return _field(default, None, True)


def resumable_keys(cls: type, prefix: str = "") -> set[str]:
    """The dotted keys of a config dataclass whose fields are marked resumable, in nested dataclasses too."""
    keys: set[str] = set()
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            keys |= resumable_keys(hints[f.name], prefix + f.name + ".")
        elif f.metadata.get("resumable"):
            keys.add(prefix + f.name)
    return keys


def field_rules(cls: type, prefix: str = "") -> tuple[dict[str, tuple[str, ...]], dict[str, str]]:
    """The rules a config dataclass declares on its fields, by dotted key: the choices of ``Literal`` fields
    and the bounds of fields made with :func:`positive`, :func:`non_negative` or :func:`unit_interval`."""
    choices: dict[str, tuple[str, ...]] = {}
    bounds: dict[str, str] = {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key, hint = prefix + f.name, hints[f.name]
        if dataclasses.is_dataclass(hint):
            sub_choices, sub_bounds = field_rules(hint, key + ".")
            choices.update(sub_choices)
            bounds.update(sub_bounds)
        elif typing.get_origin(hint) is Literal:
            choices[key] = typing.get_args(hint)
        if "bound" in f.metadata:
            bounds[key] = f.metadata["bound"]
    return choices, bounds


def check_rules(flat: dict[str, Any], choices: dict[str, tuple], bounds: dict[str, str],
                label: str = "config key") -> None:
    """Check flattened values against choices and bounds; the error names the key (``label`` says which kind
    of config: training configs and benchmark configs share this validator and its messages)."""
    for key, allowed in choices.items():
        if key in flat and flat[key] not in allowed:
            raise R3LError(f"{label} {key}: {flat[key]!r} is not one of {', '.join(allowed)}")
    for key, bound in bounds.items():
        values = flat.get(key)
        for value in values if isinstance(values, list) else [values]:
            if value is None:
                continue
            if bound == "positive" and not value > 0:
                raise R3LError(f"{label} {key}: must be positive, got {value!r}")
            if bound == "non_negative" and value < 0:
                raise R3LError(f"{label} {key}: must not be negative, got {value!r}")
            if bound == "unit_interval" and not 0.0 <= value <= 1.0:
                raise R3LError(f"{label} {key}: must lie in [0, 1], got {value!r}")


def deep_merge(base: dict, update: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _type_name(hint: Any) -> str:
    """How an error names a type: ``a number``, ``a list``, ..."""
    if hint in (int, float):
        return "a number"
    if typing.get_origin(hint) is list:
        return "a list"
    return {bool: "true or false", str: "a string", type(None): "null"}.get(hint, getattr(hint, "__name__", str(hint)))


def _check_type(key: str, value: Any, hint: Any, label: str = "config key",
                switch_words: dict[str, tuple[str, str]] | None = None) -> Any:
    """Coerce ``value`` to the annotated type or raise naming ``key``. ``switch_words``: what ``true`` and
    ``false`` mean for an on/off/auto key whose "on" has another name (default ``on``)."""
    origin = typing.get_origin(hint)
    words: tuple = ()
    if origin is Literal:  # a string whose allowed values :func:`check_rules` checks
        words, hint = typing.get_args(hint), str
    if hint is type(None):  # the null of an optional key (``learn_max_error: null`` in a run's config.yaml)
        if value is None:
            return None
        raise R3LError(f"{label} {key}: expected null, got {value!r}")
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(hint):
            try:
                return _check_type(key, value, option, label, switch_words)
            except R3LError:
                continue
        names = " nor ".join(_type_name(option) for option in typing.get_args(hint))
        raise R3LError(f"{label} {key}: {value!r} is neither {names}")
    if origin is list:
        (item,) = typing.get_args(hint)
        if not isinstance(value, (list, tuple)):
            raise R3LError(f"{label} {key}: expected a list, got {value!r}")
        return [_check_type(key, v, item, label, switch_words) for v in value]
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise R3LError(f"{label} {key}: expected true or false, got {value!r}")
    if isinstance(value, str) and hint in (int, float):
        # YAML 1.1 reads "1e-3" (no dot) as a string; a number is what the user meant.
        try:
            value = float(value)
        except ValueError:
            pass
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise R3LError(f"{label} {key}: expected a whole number, got {value!r}")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = float(value)
            if not math.isfinite(value):
                raise R3LError(f"{label} {key}: expected a finite number, got {value!r}")
            return value
        raise R3LError(f"{label} {key}: expected a number, got {value!r}")
    if hint is str:
        if isinstance(value, str):
            return value
        if isinstance(value, bool) and "off" in words:
            # YAML 1.1 reads on/off/yes/no/true/false as booleans; for an on/off/auto key they mean the words.
            return (switch_words or {}).get(key, ("on", "off"))[0 if value else 1]
        if value is None:
            return ""
        raise R3LError(f"{label} {key}: expected a string, got {value!r}")
    raise TypeError(f"unsupported config type {hint} for {key}")


def build_dataclass(cls: type, values: dict, prefix: str = "", label: str = "config key",
                    skip: tuple[str, ...] = (), switch_words: dict[str, tuple[str, str]] | None = None) -> Any:
    """``cls`` from a mapping: unknown keys refused, every value coerced to its field's type (nested
    dataclasses recursively); ``skip`` names fields the caller builds itself (passed through as they are);
    ``switch_words`` as in :func:`_check_type`, by dotted key."""
    if not isinstance(values, dict):
        raise R3LError(f"{label} {prefix.rstrip('.') or '<root>'}: expected a mapping, got {values!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise R3LError(f"unknown {label} {prefix}{unknown[0]} (known keys here: {', '.join(sorted(fields))})")
    kwargs = {}
    for name, value in values.items():
        key = prefix + name
        hint = hints[name]
        if name in skip:
            kwargs[name] = value
        elif dataclasses.is_dataclass(hint):
            kwargs[name] = build_dataclass(hint, value, key + ".", label, switch_words=switch_words)
        else:
            kwargs[name] = _check_type(key, value, hint, label, switch_words)
    return cls(**kwargs)


def build_checked(cls: type, values: dict, prefix: str = "", label: str = "config key") -> Any:
    """:func:`build_dataclass`, then the choices and bounds ``cls`` declares checked (:func:`check_rules`)."""
    built = build_dataclass(cls, values, prefix, label)
    choices, bounds = field_rules(cls, prefix)
    check_rules(flatten(dataclasses.asdict(built), prefix), choices, bounds, label)
    return built


def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b=value`` to ``(["a", "b"], value)``; the value is parsed as YAML (numbers, lists, booleans)."""
    if "=" not in text:
        raise R3LError(f"--set {text!r}: expected key=value, e.g. algo.lr=1e-4")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def apply_override(tree: dict, path: list[str], value: Any) -> None:
    node = tree
    for part in path[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise R3LError(f"--set {'.'.join(path)}: {part} is not a section")
    node[path[-1]] = value

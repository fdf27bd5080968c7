"""Files that appear whole or not at all, JSON that every reader accepts, YAML mappings read with one-line errors,
and file digests."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
from pathlib import Path
from typing import Any, Iterator

from r3l.errors import R3LError


def ensure_folder(folder: str | Path) -> None:
    """Create ``folder`` (and its parents) if needed; a clear error if it cannot be."""
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise R3LError(f"{folder}: could not create the folder ({exc.strerror or exc})") from None


def atomic_write_bytes(path: str | Path, data: bytes, backup: str | Path | None = None) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder, fsync and rename.

    The file at ``path`` is replaced only once the new content is complete on disk. With ``backup``, the
    previous file also gets that name first (a hard link, then a rename), so at every moment ``path`` holds
    either the old or the new content: a process killed at any point never leaves it missing or half-written.
    """
    path = Path(path)
    ensure_folder(path.parent)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if backup is not None and path.exists():
            _keep_backup(path, Path(backup))
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise R3LError(f"{path}: could not write ({exc.strerror or exc}); the previous file is unchanged") from None


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary name beside ``path`` (same suffix) for a writer that wants a file name (an exporter,
    ``numpy.save``); renamed to ``path`` once the block completes, removed if it fails."""
    path = Path(path)
    if path.is_dir():
        raise R3LError(f"{path}: is a folder, expected an output file name")
    ensure_folder(path.parent)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as exc:
        raise R3LError(f"{path}: could not write ({exc.strerror or exc})") from None
    finally:
        tmp.unlink(missing_ok=True)


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file's bytes (hex), read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_yaml_mapping(path: str | Path, what: str = "config") -> dict[str, Any]:
    """A YAML file whose top level is a mapping (an empty file: ``{}``); one-line errors name the file: missing
    (``{what} file not found``), not YAML (with the line), not text, or not a mapping of ``{what}`` keys."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise R3LError(f"{path}: {what} file not found")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise R3LError(f"{path}: not valid YAML{where}") from None
    except UnicodeDecodeError:
        raise R3LError(f"{path}: not a text file") from None
    if not isinstance(values, dict):
        raise R3LError(f"{path}: expected a mapping of {what} keys at the top level")
    return values


def _keep_backup(path: Path, backup: Path) -> None:
    """Give the current ``path`` the name ``backup`` without ``path`` ever going missing."""
    staged = backup.with_name(f".{backup.name}.tmp{os.getpid()}")
    try:
        staged.unlink(missing_ok=True)
        os.link(path, staged)
        os.replace(staged, backup)
    except OSError:
        # A file system without hard links: move the file, leaving a moment in which only ``backup`` exists
        # (the resume code looks there too).
        staged.unlink(missing_ok=True)
        os.replace(path, backup)


def _fsync_dir(folder: Path) -> None:
    """Make the renames durable (a no-op where folders cannot be opened, e.g. on Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def json_ready(value: Any) -> Any:
    """``value`` with every non-finite float (an infinite PSNR of identical images, a NaN) replaced by ``None``,
    so that it serialises as strict JSON (RFC 8259 has no Infinity or NaN); tuples become lists."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    return value


def to_json(value: Any, indent: int | None = None) -> str:
    """Strict JSON text of ``value`` (non-finite numbers as ``null``, see :func:`json_ready`)."""
    return json.dumps(json_ready(value), indent=indent, allow_nan=False)


def write_json(data: Any, path: str | Path) -> None:
    """Write ``data`` as indented strict JSON, atomically."""
    atomic_write_bytes(path, (to_json(data, indent=2) + "\n").encode())


def expand_path(value: str, key: str) -> Path:
    """Expand ``${R3L_DATA}``-style variables in a config path; a clear error names an unset variable."""
    for var in re.findall(r"\$\{(\w+)\}|\$(\w+)", value):
        name = var[0] or var[1]
        if name not in os.environ:
            raise R3LError(f"config key {key}: {value!r} uses ${{{name}}}, which is not set (export {name}=...)")
    return Path(os.path.expanduser(os.path.expandvars(value)))

"""``r3l benchmark``: the paper's noise-mismatch tables for any set of methods, in one command.

Every method sees the same seeded noisy images (:func:`r3l.degradation.noisy_version`) and goes through the same
evaluation code (:func:`r3l.evaluation.protocol.evaluate`). Per-image results are appended to ``cache.jsonl`` in the
output folder as they are computed, so an interrupted benchmark continues where it stopped; BM3D outputs are
cached on disk by the hash of their noisy input and σ, so reruns are instant.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np
import torch

from r3l.degradation import noisy_version
from r3l.errors import R3LError, warn
from r3l.evaluation.figures import grid, label, plot_psnr, table_markdown
from r3l.evaluation.protocol import evaluate, psnr_8bit, write_csv
from r3l.inference.denoiser import Denoiser, open_denoiser
from r3l.io.data import NamedImage, load_images
from r3l.io.files import (
    atomic_path,
    atomic_write_bytes,
    expand_path,
    file_sha256,
    read_yaml_mapping,
    to_json,
    write_json,
)
from r3l.io.images import write_image
from r3l.metrics import to_uint8
from r3l.schema import build_dataclass, check_rules, field_rules, non_negative

#: Published BSD68 PSNR (dB), R3L paper Tables 3 and 4: σ_train → method → σ_test → PSNR.
PUBLISHED: dict[int, dict[str, dict[int, float]]] = {
    25: {
        "BM3D": {15: 29.05, 20: 28.87, 25: 28.56, 30: 27.48, 35: 24.88},
        "WNNM": {15: 28.15, 20: 28.57, 25: 28.80, 30: 26.94, 35: 23.77},
        "DnCNN": {15: 29.17, 20: 29.42, 25: 29.23, 30: 26.40, 35: 22.86},
        "R3N": {15: 28.83, 20: 29.07, 25: 28.95, 30: 26.70, 35: 23.15},
        "R3L": {15: 29.64, 20: 29.30, 25: 28.73, 30: 27.44, 35: 25.16},
    },
    35: {
        "BM3D": {25: 27.54, 30: 27.37, 35: 27.09, 40: 26.32, 45: 24.39},
        "WNNM": {25: 26.80, 30: 27.14, 35: 27.29, 40: 26.08, 45: 23.58},
        "DnCNN": {25: 27.68, 30: 27.85, 35: 27.69, 40: 25.68, 45: 22.53},
        "R3N": {25: 27.61, 30: 27.74, 35: 27.44, 40: 25.58, 45: 22.56},
        "R3L": {25: 28.00, 30: 27.67, 35: 27.18, 40: 26.24, 45: 24.60},
    },
}

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


def _number(value: Any, key: str, minimum: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value) or value < minimum:
        raise R3LError(f"benchmark key {key}: expected a number >= {minimum:g}, got {value!r}")
    return float(value)


def _flag(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise R3LError(f"benchmark key {key}: expected true or false, got {value!r}")
    return value


def _missing(spec: MethodSpec) -> str | None:
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


def _bm3d_one(args: tuple[np.ndarray, float]) -> np.ndarray:
    import bm3d

    noisy, sigma = args
    channels = [bm3d.bm3d(noisy[:, :, c], sigma / 255.0) for c in range(noisy.shape[2])]
    return to_uint8(np.stack(channels, axis=2))


class BM3DMethod:
    """BM3D (``pip install 'r3l[bm3d]'``) given a fixed σ, in parallel processes, cached by noisy-input hash."""

    def __init__(self, sigma: float, cache_dir: Path, workers: int = 0):
        try:
            import bm3d  # noqa: F401
        except ImportError:
            raise R3LError("BM3D needs the bm3d package: pip install 'r3l[bm3d]'") from None
        self.sigma, self.cache_dir = sigma, cache_dir
        self.workers = workers or os.cpu_count() or 1
        self.pool: ProcessPoolExecutor | None = None

    def _path(self, noisy: np.ndarray) -> Path:
        key = hashlib.sha256(noisy.tobytes() + str(noisy.shape).encode()).hexdigest()[:24]
        return self.cache_dir / f"{key}_s{self.sigma:g}.npy"

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        arrays = [np.ascontiguousarray(x) for x in batch.permute(0, 2, 3, 1).numpy()]
        paths = [self._path(a) for a in arrays]
        todo = [i for i, p in enumerate(paths) if not p.is_file()]
        if todo:
            if self.pool is None:
                self.pool = ProcessPoolExecutor(self.workers)
            for i, out in zip(todo, self.pool.map(_bm3d_one, [(arrays[i], self.sigma) for i in todo])):
                with atomic_path(paths[i]) as tmp:
                    np.save(tmp, out)
        outs = [np.load(p) for p in paths]
        return torch.from_numpy(np.stack(outs).astype(np.float32) / 255.0).permute(0, 3, 1, 2)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()


def build_method(spec: MethodSpec, cfg: BenchmarkConfig, cache_dir: Path) -> tuple[Callable, str]:
    """The method's denoise callable and the key its cached results are stored under."""
    seed_key = f"seed{cfg.seed}"
    if spec.kind == "model":
        from r3l.models.zoo import find_model

        path = find_model(str(spec.value)).path
        return open_denoiser(checkpoint=path, device=cfg.device), f"ckpt:{file_sha256(path)[:16]}:{seed_key}"
    if spec.kind in WEIGHT_KINDS:
        path = expand_path(str(spec.value), f"{spec.name}.{spec.kind}")
        model = WEIGHT_KINDS[spec.kind]
        if model is None:
            return open_denoiser(checkpoint=path, device=cfg.device), f"ckpt:{file_sha256(path)[:16]}:{seed_key}"
        # IRCNN at σ_train: the entry of KAIR's multi-level file (a Caffe file holds one level)
        den = open_denoiser(model=model, weights=path, weights_sigma=float(cfg.sigma_train), device=cfg.device)
        level = f":{cfg.sigma_train:g}" if model == "ircnn" else ""
        return den, f"{model}:{file_sha256(path)[:16]}{level}:{seed_key}"
    if spec.kind == "bm3d":
        sigma = cfg.sigma_train if spec.value is True else _number(spec.value, f"{spec.name}.bm3d")
        import bm3d as _bm3d_pkg  # noqa: F401  (checked in BM3DMethod with a clear error)

        return BM3DMethod(sigma, cache_dir / "bm3d", cfg.bm3d_workers), f"bm3d:{sigma:g}:{seed_key}"
    if spec.kind == "noisy":
        return (lambda batch: batch.clamp(0.0, 1.0)), f"noisy:{seed_key}"
    from r3l.models.spec import PAPER_SPECS, build_network

    kind = str(spec.value)
    arch = PAPER_SPECS.get(kind)
    if arch is None:
        raise R3LError(f"benchmark method {spec.name}: untrained takes {', '.join(PAPER_SPECS)}, got {kind!r}")
    torch.manual_seed(cfg.seed)
    return Denoiser(build_network(arch), arch, cfg.device), f"untrained:{kind}:{seed_key}"


RESULT_FIELDS = ("method", "sigma_train", "sigma_test", "image", "psnr", "ssim", "seconds", "noisy_sha256")


def _read_cache(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue  # a line cut short by an interruption: its images are simply computed again
        # Strict JSON stores an infinite PSNR (output equal to the clean image) as null.
        rows.append({k: float("inf") if v is None and k.startswith("psnr") else v for k, v in row.items()})
    return rows


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else float("nan")


def summarize_benchmark(cfg: BenchmarkConfig, rows: list[dict]) -> dict:
    """Mean PSNR/SSIM per method and σ, their averages, and the published numbers beside them."""
    compare = cfg.published == "BSD68" or (cfg.published == "auto" and Path(cfg.data).name.lower() == "bsd68")
    published = PUBLISHED.get(int(cfg.sigma_train), {}) if compare and float(cfg.sigma_train).is_integer() else {}
    methods = {}
    for spec in cfg.methods:
        mine = [r for r in rows if r["method"] == spec.name]
        per_sigma = {}
        for sigma in cfg.sigmas:
            sel = [r for r in mine if r["sigma_test"] == sigma]
            paper = published.get(spec.published, {}).get(int(sigma)) if float(sigma).is_integer() else None
            psnr = _mean([r["psnr"] for r in sel])
            per_sigma[f"{sigma:g}"] = {
                "psnr": psnr, "ssim": _mean([r["ssim"] for r in sel]), "images": len(sel),
                "published": paper, "difference": None if paper is None else psnr - paper,
            }
        papers = [v["published"] for v in per_sigma.values()]
        avg_paper = _mean(papers) if all(p is not None for p in papers) else None
        avg = _mean([v["psnr"] for v in per_sigma.values()])
        methods[spec.name] = {
            "sigmas": per_sigma, "average": avg, "average_ssim": _mean([v["ssim"] for v in per_sigma.values()]),
            "published_average": avg_paper, "average_difference": None if avg_paper is None else avg - avg_paper,
            "seconds_per_image": _mean([r["seconds"] for r in mine]),
        }
    return {"name": cfg.name, "data": cfg.data, "sigma_train": cfg.sigma_train, "sigmas": cfg.sigmas,
            "seed": cfg.seed, "methods": methods}


def example_grid(cfg: BenchmarkConfig, image: NamedImage, methods: dict[str, Callable], path: Path) -> None:
    """Noisy, each method's output and the clean image for one test image at σ_train, as one PNG."""
    clean = image.float[:, :, 0]
    noisy = noisy_version(image.float, image.name, cfg.sigma_train, cfg.seed)
    batch = torch.from_numpy(noisy).permute(2, 0, 1)[None]
    tiles = [label(to_uint8(noisy[:, :, 0]), f"noisy {psnr_8bit(clean, noisy[:, :, 0]):.2f} dB")]
    for name, method in methods.items():
        out = method(batch)[0, 0].float().cpu().numpy()
        tiles.append(label(to_uint8(out), f"{name} {psnr_8bit(clean, out):.2f} dB"))
    tiles.append(label(to_uint8(clean), f"clean ({image.name})"))
    per_row = 4
    write_image(path, grid([tiles[i : i + per_row] for i in range(0, len(tiles), per_row)]) / 255.0)


def run_benchmark(cfg: BenchmarkConfig, out_dir: Path, progress: bool = True) -> dict:
    """Evaluate every method at every σ on the same noisy images; write the table, CSV, JSON and figures."""
    start = time.perf_counter()
    kept = []
    for spec in cfg.methods:
        missing = _missing(spec) if spec.optional else None
        if missing:
            warn(f"benchmark method {spec.name} left out: {missing} (optional)")
        else:
            kept.append(spec)
    if not kept:
        raise R3LError("benchmark: every method was left out (all optional, none found)")
    cfg = dataclasses.replace(cfg, methods=kept)
    out_dir.mkdir(parents=True, exist_ok=True)
    data = cfg.data
    images = load_images(data, 1, "benchmark key data", cfg.max_images)
    cache_path = out_dir / "cache.jsonl"
    cached = _read_cache(cache_path)
    rows: list[dict] = []
    methods: dict[str, Callable] = {}
    with open(cache_path, "a") as cache:
        for spec in cfg.methods:
            method, key = build_method(spec, cfg, out_dir / "cache")
            methods[spec.name] = method
            done = {(r["image"], r["sigma"]): r for r in cached if r.get("key") == key}

            def append(new_rows: list[dict], key: str = key) -> None:
                for r in new_rows:
                    cache.write(to_json({**r, "key": key}) + "\n")
                cache.flush()

            found = evaluate(method, images, cfg.sigmas, cfg.seed, progress=progress, done=done, on_rows=append,
                             desc=spec.name)
            rows += [{"method": spec.name, "sigma_train": cfg.sigma_train, "sigma_test": r["sigma"],
                      "image": r["image"], "psnr": r["psnr"], "ssim": r["ssim"], "seconds": r["seconds"],
                      "noisy_sha256": r["noisy_sha256"]} for r in found]
    summary = summarize_benchmark(cfg, rows)
    names = {im.name: im for im in images}
    example = names.get(cfg.example_image) or images[0]
    example_grid(cfg, example, methods, out_dir / "examples.png")
    for method in methods.values():
        if isinstance(method, BM3DMethod):
            method.close()
    summary["wall_seconds"] = time.perf_counter() - start
    summary["plot"] = plot_psnr(summary, out_dir / "psnr_vs_sigma.png")
    write_csv(rows, out_dir / "results.csv", RESULT_FIELDS)
    write_json(summary, out_dir / "summary.json")
    atomic_write_bytes(out_dir / "table.md", table_markdown(summary).encode())
    return summary

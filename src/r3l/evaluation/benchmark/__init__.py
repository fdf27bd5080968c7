"""``r3l benchmark``: the paper's noise-mismatch tables for any set of methods, in one command.

Every method sees the same seeded noisy images (:func:`r3l.degradation.noisy_version`) and goes through the same
evaluation code (:func:`r3l.evaluation.protocol.evaluate`). Per-image results are appended to ``cache.jsonl`` in the
output folder as they are computed, so an interrupted benchmark continues where it stopped; BM3D outputs are
cached on disk by the hash of their noisy input and σ, so reruns are instant.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Callable

from r3l.errors import R3LError, warn
from r3l.evaluation.benchmark.config import (
    METHOD_KINDS,
    WEIGHT_KINDS,
    BenchmarkConfig,
    MethodSpec,
    load_benchmark_config,
    method_missing,
)
from r3l.evaluation.benchmark.methods import BM3DMethod, build_method
from r3l.evaluation.benchmark.report import PUBLISHED, example_grid, summarize_benchmark
from r3l.evaluation.figures import plot_psnr, table_markdown
from r3l.evaluation.protocol import evaluate, write_csv
from r3l.io.data import load_images
from r3l.io.files import atomic_write_bytes, to_json, write_json

__all__ = ["METHOD_KINDS", "PUBLISHED", "RESULT_FIELDS", "WEIGHT_KINDS", "BenchmarkConfig", "BM3DMethod", "MethodSpec",
           "build_method", "example_grid", "load_benchmark_config", "run_benchmark", "summarize_benchmark"]

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


def run_benchmark(cfg: BenchmarkConfig, out_dir: Path, progress: bool = True) -> dict:
    """Evaluate every method at every σ on the same noisy images; write the table, CSV, JSON and figures."""
    start = time.perf_counter()
    kept = []
    for spec in cfg.methods:
        missing = method_missing(spec) if spec.optional else None
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

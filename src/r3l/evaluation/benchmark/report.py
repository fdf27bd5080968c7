"""A benchmark's results: means per method and σ beside the paper's published numbers, and the example grid."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch

from r3l.degradation import noisy_version
from r3l.evaluation.benchmark.config import BenchmarkConfig
from r3l.evaluation.figures import grid, label
from r3l.evaluation.protocol import psnr_8bit
from r3l.io.data import NamedImage
from r3l.io.images import write_image
from r3l.metrics import to_uint8

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

"""The literature's evaluation protocol.

For each test image and σ: noise from a seed fixed per image (:func:`r3l.degradation.noise_for`), added without
clipping (the other noise models of :mod:`r3l.degradation` are seeded the same way, see
:func:`r3l.degradation.noisy_version`); the output clipped to [0, 1] and rounded to 8 bits; PSNR and SSIM against
the 8-bit clean image, no border crop; on colour images both over all three channels together (PSNR from the
mean squared error over R, G and B, as CBSD68 and Kodak24 results are reported). Images of the same size are
denoised together in one batch.
"""

from __future__ import annotations

import csv
import hashlib
import time
from collections import defaultdict
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm import tqdm

from r3l.degradation import noisy_version
from r3l.io.data import NamedImage
from r3l.io.files import atomic_write_bytes
from r3l.io.images import write_image
from r3l.metrics import psnr, ssim, to_uint8

FIELDS = ("image", "noise", "sigma", "psnr", "ssim", "psnr_noisy", "ssim_noisy", "seconds", "noisy_sha256")
METRICS = ("psnr", "ssim", "psnr_noisy", "ssim_noisy", "seconds")


def _groups(images: list[NamedImage], max_pixels: int) -> list[list[int]]:
    """Indices of same-shape images, in chunks of at most ``max_pixels`` pixels."""
    by_shape: dict[tuple, list[int]] = defaultdict(list)
    for i, im in enumerate(images):
        by_shape[im.native.shape].append(i)
    out = []
    for shape, members in by_shape.items():
        per = max(1, max_pixels // (shape[0] * shape[1]))
        out += [members[k : k + per] for k in range(0, len(members), per)]
    return out


def psnr_8bit(clean: np.ndarray, estimate: np.ndarray) -> float:
    """The protocol's PSNR of one image in [0, 1]: both clipped and rounded to 8 bits first (no border crop)."""
    return psnr(to_uint8(estimate), to_uint8(clean))


def quality(clean: np.ndarray, estimate: np.ndarray, noisy: np.ndarray) -> dict[str, float]:
    """The protocol's metrics of one image ``(H, W, C)`` in [0, 1]: the estimate's and the noisy input's PSNR
    and SSIM against the clean image, each clipped and rounded to 8 bits first (no border crop)."""
    clean8, est8, noisy8 = to_uint8(clean), to_uint8(estimate), to_uint8(noisy)
    return {"psnr": psnr(est8, clean8), "ssim": ssim(est8, clean8),
            "psnr_noisy": psnr(noisy8, clean8), "ssim_noisy": ssim(noisy8, clean8)}


def _rows_of_group(denoise, group: list[NamedImage], sigma: float, seed: int, noise: str, degrade,
                   save_dir: str | Path | None) -> list[dict]:
    """Denoise one batch of same-shape images at ``sigma``; their rows (and, with ``save_dir``, their outputs)."""
    new_rows = []
    clean = [im.float for im in group]
    degrade_one = degrade or (lambda image, name, level, s: noisy_version(image, name, level, s, noise))
    noisy = np.stack([degrade_one(c, im.name, sigma, seed) for c, im in zip(clean, group)])
    batch = torch.from_numpy(noisy).permute(0, 3, 1, 2)
    start = time.perf_counter()
    out = denoise(batch)
    out = out.float().cpu()
    seconds = (time.perf_counter() - start) / len(group)
    for k, im in enumerate(group):
        estimate = out[k].permute(1, 2, 0).numpy()
        new_rows.append({
            "image": im.name, "noise": noise, "sigma": sigma,
            **quality(clean[k], estimate, noisy[k]),
            "seconds": seconds, "noisy_sha256": hashlib.sha256(noisy[k].tobytes()).hexdigest()[:16],
        })
        if save_dir is not None:
            write_image(Path(save_dir) / f"sigma{sigma:g}" / f"{im.name}.png",
                        to_uint8(estimate) / 255.0)
    return new_rows


def evaluate(
    denoise: Callable[[torch.Tensor], torch.Tensor],
    images: list[NamedImage],
    sigmas: list[float],
    seed: int = 0,
    save_dir: str | Path | None = None,
    max_batch_pixels: int | None = None,
    progress: bool = True,
    done: dict[tuple[str, float], dict] | None = None,
    on_rows: Callable[[list[dict]], None] | None = None,
    desc: str = "eval",
    noise: str = "gaussian",
    degrade: Callable[[np.ndarray, str, float, int], np.ndarray] | None = None,
) -> list[dict]:
    """Per-image results (rows with :data:`FIELDS`) for every σ, in image order.

    ``noise`` names the noise model (:mod:`r3l.degradation`); ``sigmas`` are its levels (σ for the Gaussian
    models, the peak for ``poisson``, the density for ``salt_pepper``). ``degrade(image, name, level, seed)``
    replaces the noise for other tasks (a task's :meth:`~r3l.tasks.base.BatchImageEnv.test_input`); ``noise``
    then only labels the rows.

    ``denoise`` maps ``(B, C, H, W)`` float noisy images to estimates (clipped or not; they are clipped here).
    ``done`` holds rows already computed, keyed by ``(image, σ)``: they are reused, not recomputed.
    ``on_rows`` receives each new group of rows as soon as it exists (a resumable cache appends them).
    Same-shape images are denoised together, up to ``max_batch_pixels`` per call. The default is 2^22 pixels
    (BSD68: 27 images) on a GPU and for other methods, and 2^19 for a :class:`Denoiser` on the CPU, where
    batching gains little and inference holds about 1 kB per pixel.
    """
    if max_batch_pixels is None:
        device = getattr(denoise, "device", None)
        on_cpu = isinstance(device, torch.device) and device.type == "cpu"
        max_batch_pixels = 1 << 19 if on_cpu else 1 << 22
    done = done or {}
    rows: list[dict] = []
    groups = _groups(images, max_batch_pixels)
    bar = tqdm(total=len(images) * len(sigmas), desc=desc, unit="img", disable=not progress, leave=False)
    for sigma in sigmas:
        for all_members in groups:
            group = [i for i in all_members if (images[i].name, sigma) not in done]
            rows += [done[(images[i].name, sigma)] for i in all_members if (images[i].name, sigma) in done]
            bar.update(len(all_members) - len(group))
            if not group:
                continue
            new_rows = _rows_of_group(denoise, [images[i] for i in group], sigma, seed, noise, degrade, save_dir)
            rows += new_rows
            if on_rows is not None:
                on_rows(new_rows)
            bar.update(len(group))
    bar.close()
    order = {im.name: i for i, im in enumerate(images)}
    rows.sort(key=lambda r: (r["sigma"], order[r["image"]]))
    return rows


def summarize(rows: list[dict]) -> dict[str, dict[str, float]]:
    """Mean of every metric per σ, keyed by the σ as text."""
    by_sigma: dict[float, list[dict]] = defaultdict(list)
    for row in rows:
        by_sigma[row["sigma"]].append(row)
    return {
        f"{sigma:g}": {
            "images": len(group),
            **{k: float(np.mean([r[k] for r in group])) for k in METRICS},
        }
        for sigma, group in sorted(by_sigma.items())
    }


def write_csv(rows: list[dict], path: str | Path, fields: tuple[str, ...] = FIELDS) -> None:
    import io

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields)
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.4f}" if k in METRICS else v) for k, v in row.items()})
    atomic_write_bytes(path, buffer.getvalue().encode())


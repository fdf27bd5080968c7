"""Action maps: what an R3L policy does to each pixel at each step."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from r3l.errors import R3LError
from r3l.inference.denoiser import Denoiser
from r3l.io.files import atomic_write_bytes
from r3l.io.images import to_channels, write_image
from r3l.metrics import to_uint8


def residual_colours(residual: np.ndarray, limit: float) -> np.ndarray:
    """``(H, W)`` residuals on the 0–255 scale to RGB: blue subtracts, white keeps, red adds (±limit saturates)."""
    x = np.clip(residual / max(limit, 1e-9), -1.0, 1.0)
    red = np.where(x < 0, 1.0 + x, 1.0)
    blue = np.where(x > 0, 1.0 - x, 1.0)
    green = 1.0 - np.abs(x)
    return np.stack([red, green, blue], axis=2)


def trajectory(denoiser: Denoiser, image: np.ndarray) -> list[np.ndarray]:
    """The estimate ``(C, H, W)`` before the first step and after each, for one float ``(H, W, C)`` image in
    [0, 1] (a gray model sees a colour image's luma)."""
    if denoiser.env is None:
        raise R3LError(f"--explain needs an R3L checkpoint; this one holds {denoiser.arch.name}")
    if denoiser.channels == 1 and image.shape[2] != 1:
        image = to_channels((image * 65535).round().astype(np.uint16), 1).astype(np.float32) / 65535
    tensor = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))[None]
    if denoiser.channels == 3 and tensor.shape[1] == 1:
        tensor = tensor.expand(1, 3, -1, -1)
    return [s[0].float().cpu().numpy() for s in denoiser.trajectory(tensor.to(denoiser.device))]


OTHER_LIMIT = 32.0
"""Levels (0–255) at which the step maps of tasks without residual actions saturate."""


def step_maps(denoiser: Denoiser, states: list[np.ndarray]) -> list[np.ndarray]:
    """The change each pixel's action made at each step, as ``(H, W, 3)`` colour maps in [0, 1]: saturated at
    the largest residual for R3L, at ±32 levels for other tasks (a filter's change has no fixed bound)."""
    limit = denoiser.env.step_limit() or OTHER_LIMIT
    return [residual_colours((states[t] - states[t - 1]).mean(axis=0) * 255.0, limit)
            for t in range(1, len(states))]


def explain(denoiser: Denoiser, image: np.ndarray, out_dir: Path) -> list[Path]:
    """Write ``step1.png`` … (the residual chosen per pixel at each step, as a colour map) and ``estimate.gif``
    (the noisy input, then the estimate after each step, with a step bar below) for one float ``(H, W, C)``
    image in [0, 1]."""
    states = trajectory(denoiser, image)
    gray = states[0].shape[0] == 1
    written = []
    for t, colours in enumerate(step_maps(denoiser, states), start=1):
        path = out_dir / f"step{t}.png"
        write_image(path, colours)
        written.append(path)
    frames = []
    for t, state in enumerate(states):
        frame = to_uint8(state.transpose(1, 2, 0))
        # A band along the bottom fills as the steps go by, so each frame shows which step it is.
        band = np.zeros((4, frame.shape[1], frame.shape[2]), np.uint8)
        band[1:3, : round(frame.shape[1] * t / (len(states) - 1))] = 255
        frame = np.concatenate([frame, band], axis=0)
        frames.append(Image.fromarray(frame[:, :, 0] if gray else frame))
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=600, loop=0)
    gif = out_dir / "estimate.gif"
    atomic_write_bytes(gif, buffer.getvalue())
    written.append(gif)
    return written

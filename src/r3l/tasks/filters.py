"""Image filters of pixelRL's action set, computed in torch on the device for a whole batch.

Each takes ``(B, C, H, W)`` float images and filters every channel on its own, with OpenCV's border rules so that
the results match ``cv2`` on a single-channel float32 image (``tests/test_tasks.py`` states the tolerances):
Gaussian, box and bilateral filters mirror the border without repeating the edge (``BORDER_REFLECT_101``, torch's
``reflect``), the median repeats the edge (``BORDER_REPLICATE``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _depthwise(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """``kernel`` ``(k, k)`` applied to every channel, reflect-101 border."""
    b, c, h, w = x.shape
    r = kernel.shape[0] // 2
    padded = F.pad(x.reshape(b * c, 1, h, w), (r, r, r, r), mode="reflect")
    return F.conv2d(padded, kernel.to(x.dtype)[None, None]).reshape(b, c, h, w)


def gaussian_kernel(size: int, sigma: float, device: torch.device | None = None) -> torch.Tensor:
    """The 1-D kernel ``cv2.getGaussianKernel(size, sigma)`` returns (float64 weights, summing to 1)."""
    offsets = torch.arange(size, dtype=torch.float64, device=device) - (size - 1) / 2
    weights = torch.exp(-offsets.square() / (2 * sigma * sigma))
    return weights / weights.sum()


def gaussian_blur(x: torch.Tensor, sigma: float, size: int = 5) -> torch.Tensor:
    """``cv2.GaussianBlur(x, (size, size), sigma)``."""
    k = gaussian_kernel(size, sigma, x.device)
    return _depthwise(x, torch.outer(k, k))


def box_blur(x: torch.Tensor, size: int = 5) -> torch.Tensor:
    """``cv2.blur(x, (size, size))``: the mean of each ``size × size`` window."""
    return _depthwise(x, torch.full((size, size), 1.0 / (size * size), device=x.device))


def _windows(x: torch.Tensor, size: int, mode: str) -> torch.Tensor:
    """Every pixel's ``size × size`` neighbourhood, ``(B, C, size², H, W)``."""
    b, c, h, w = x.shape
    r = size // 2
    padded = F.pad(x.reshape(b * c, 1, h, w), (r, r, r, r), mode=mode)
    return F.unfold(padded, size).reshape(b, c, size * size, h, w)


def median_blur(x: torch.Tensor, size: int = 5) -> torch.Tensor:
    """``cv2.medianBlur(x, size)``: the median of each window (an odd count, so one value), edge replicated."""
    return _windows(x, size, "replicate").median(dim=2).values


def bilateral_filter(x: torch.Tensor, d: int, sigma_color: float, sigma_space: float) -> torch.Tensor:
    """``cv2.bilateralFilter(x, d, sigma_color, sigma_space)`` per channel.

    Neighbours within the disc of radius ``d // 2`` weigh ``exp(−r² / 2σ_s²) · exp(−Δ² / 2σ_c²)``, Δ being the
    difference of values. (OpenCV reads the colour weight off a table with linear interpolation, which is
    where the two differ, by about 1e-5 on [0, 1] images.)
    """
    r = d // 2
    offsets = torch.arange(-r, r + 1, device=x.device, dtype=torch.float32)
    dist2 = (offsets[:, None].square() + offsets[None, :].square()).flatten()
    inside = dist2.sqrt() <= r
    spatial = torch.exp(-dist2[inside] / (2 * sigma_space * sigma_space)).to(x.dtype)
    windows = _windows(x, 2 * r + 1, "reflect")[:, :, inside]
    colour = torch.exp(-(windows - x.unsqueeze(2)).square() / (2 * sigma_color * sigma_color))
    weights = colour * spatial.view(1, 1, -1, 1, 1)
    return (weights * windows).sum(2) / weights.sum(2)


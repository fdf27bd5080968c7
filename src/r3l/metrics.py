"""PSNR and SSIM as the denoising literature computes them: on 8-bit images, no border crop."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def to_uint8(image: np.ndarray | torch.Tensor) -> np.ndarray:
    """Clip to [0, 1] and round to 8 bits."""
    if isinstance(image, torch.Tensor):
        image = image.detach().float().cpu().numpy()
    return np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)


def psnr(estimate: np.ndarray, clean: np.ndarray) -> float:
    """PSNR in dB between two uint8 images of the same shape (peak 255)."""
    mse = np.mean((estimate.astype(np.float64) - clean.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10.0 * np.log10(255.0**2 / mse))


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def ssim(estimate: np.ndarray, clean: np.ndarray, size: int = 11, sigma: float = 1.5) -> float:
    """SSIM (Wang et al., 2004) between uint8 images ``(H, W)`` or ``(H, W, C)``, averaged over channels.

    Gaussian window 11×11, σ 1.5, K1 0.01, K2 0.03, data range 255, statistics over the valid window
    positions; equal to ``skimage.metrics.structural_similarity(..., gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=255)``.

    Images under 11 pixels on a side are evaluated as scikit-image does with ``win_size`` set to the largest odd
    size that fits: the same Gaussian filter over the image mirrored at its borders, averaged over the positions
    at least ``win_size // 2`` from the border (a 1 × 1 image compares its single pixel's luminance).
    """
    a, b = np.asarray(estimate, dtype=np.float64), np.asarray(clean, dtype=np.float64)
    if a.ndim == 2:
        a, b = a[..., None], b[..., None]
    crop = 0
    if min(a.shape[0], a.shape[1]) < size:
        fits = min(a.shape[0], a.shape[1])
        crop = (fits - 1) // 2 if fits % 2 else (fits - 2) // 2
        pad = ((size // 2, size // 2), (size // 2, size // 2), (0, 0))
        a, b = np.pad(a, pad, mode="symmetric"), np.pad(b, pad, mode="symmetric")
    a, b = torch.from_numpy(a).permute(2, 0, 1)[:, None], torch.from_numpy(b).permute(2, 0, 1)[:, None]
    g = _gaussian_window(size, sigma)
    gx, gy = g.view(1, 1, 1, -1), g.view(1, 1, -1, 1)

    def blur(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.conv2d(x, gx), gy)

    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    if crop:
        s = s[:, :, crop:-crop, crop:-crop]
    return float(s.mean(dim=(1, 2, 3)).mean())


def batch_psnr(estimate: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR ``(B,)`` of float images ``(B, C, H, W)`` in [0, 1], on the device (training diagnostics)."""
    mse = (estimate.float() - clean.float()).square().mean(dim=(1, 2, 3)).clamp_min(1e-12)
    return -10.0 * torch.log10(mse)

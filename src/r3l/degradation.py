"""Degradation: the noise models (how the denoising tasks corrupt a clean image, on the device, for a whole
batch), the seeded test noise of the evaluation protocol (:func:`noisy_version`: the same noisy image for every
method and run) and Immerkær's noise-level estimate.

Each model has one *level* per image (``level`` ``(B, 1, 1, 1)``), the number a config's ``env.sigma`` and
``r3l eval --sigma`` give:

- ``gaussian``: additive white Gaussian noise of standard deviation σ = level (0–255 scale);
- ``poisson``: photon (shot) noise at a ``peak`` = level: ``Poisson(x · peak) / peak``, so the noise variance at
  intensity x is x / peak (a lower peak is noisier);
- ``salt_pepper``: each value is replaced, with probability ``density`` = level (in [0, 1]), by 0 or 1 with equal
  odds (independently per channel);
- ``spatial_gaussian``: Gaussian noise whose σ varies smoothly over the image from 0 to level: σ(x, y) = level ·
  m(x, y), with m a 4 × 4 grid of uniform [0, 1] values bilinearly upsampled to the image (a new grid per image);
- ``mixed``: a real-world-like mixture: signal-dependent Gaussian noise (shot plus read noise) of variance
  ``(level / 255)² · (0.25 + 1.5 · x)`` — at mid-gray x = 0.5 its σ equals the level, dark pixels get half of it —
  plus impulses (salt and pepper) with density ``0.02 · level / 255``.

Results are not clipped (as the literature's Gaussian protocol), except where the model itself bounds them
(salt and pepper's 0 and 1; Poisson counts are non-negative).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
import torch
import torch.nn.functional as F

from r3l.errors import R3LError


class NoiseModel(ABC):
    """A degradation with one level per image."""

    name: str
    level_name: str = "sigma"
    """What the level means (shown in messages and docs)."""
    level_help: str = "sigma on the 0-255 scale"
    """The level's meaning and scale, as ``r3l eval --help`` states it."""
    default_level: float = 25.0
    """The level ``r3l eval`` tests at when no ``--sigma`` is given."""

    def check_level(self, level: float, key: str) -> None:
        """An error naming ``key`` if ``level`` is outside this model's range."""
        if level < 0:
            raise R3LError(f"{key}: the {self.name} noise {self.level_name} must not be negative, got {level:g}")

    @abstractmethod
    def apply(self, clean: torch.Tensor, level: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """``clean`` ``(B, C, H, W)`` in [0, 1] corrupted at ``level`` ``(B, 1, 1, 1)``."""


def _normal(like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return torch.randn(like.shape, device=like.device, dtype=like.dtype, generator=generator)


def _uniform(like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return torch.rand(like.shape, device=like.device, dtype=like.dtype, generator=generator)


class Gaussian(NoiseModel):
    name = "gaussian"

    def apply(self, clean, level, generator):
        return clean + _normal(clean, generator) * (level / 255.0)


class Poisson(NoiseModel):
    name, level_name = "poisson", "peak"
    level_help, default_level = "the peak (photons at white)", 30.0

    def check_level(self, level, key):
        if not level > 0:
            raise R3LError(f"{key}: the poisson noise peak must be positive, got {level:g}")

    def apply(self, clean, level, generator):
        rate = clean.float().clamp_min(0.0) * level
        return (torch.poisson(rate, generator=generator) / level).to(clean.dtype)


def _impulses(clean: torch.Tensor, density: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    hit = _uniform(clean, generator) < density
    salt = _uniform(clean, generator) < 0.5
    return torch.where(hit, salt.to(clean.dtype), clean)


class SaltPepper(NoiseModel):
    name, level_name = "salt_pepper", "density"
    level_help, default_level = "the density of impulses, in [0, 1]", 0.1

    def check_level(self, level, key):
        if not 0.0 <= level <= 1.0:
            raise R3LError(f"{key}: the salt_pepper noise density must lie in [0, 1], got {level:g}")

    def apply(self, clean, level, generator):
        return _impulses(clean, level, generator)


class SpatialGaussian(NoiseModel):
    name = "spatial_gaussian"
    level_help, default_level = "the largest sigma of the map, 0-255 scale", 50.0
    grid = 4
    """The σ map is a ``grid × grid`` random field upsampled to the image."""

    def sigma_map(self, clean: torch.Tensor, level: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """σ per pixel, ``(B, 1, H, W)``, on the 0–255 scale."""
        b, _, h, w = clean.shape
        coarse = torch.rand((b, 1, self.grid, self.grid), device=clean.device, generator=generator)
        field = F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=True)
        return field.to(clean.dtype) * level

    def apply(self, clean, level, generator):
        sigma = self.sigma_map(clean, level, generator)  # the map first, then the noise
        return clean + _normal(clean, generator) * (sigma / 255.0)


class Mixed(NoiseModel):
    name = "mixed"
    impulse_fraction = 0.02

    def apply(self, clean, level, generator):
        sigma = (level / 255.0) * (0.25 + 1.5 * clean.clamp(0.0, 1.0)).sqrt()
        noisy = clean + _normal(clean, generator) * sigma
        return _impulses(noisy, self.impulse_fraction * level / 255.0, generator)


NOISES: dict[str, NoiseModel] = {m.name: m for m in (Gaussian(), Poisson(), SaltPepper(), SpatialGaussian(), Mixed())}


def noise_model(name: str, key: str = "env.noise") -> NoiseModel:
    if name not in NOISES:
        raise R3LError(f"{key}: {name!r} is not one of {', '.join(NOISES)}")
    return NOISES[name]


#: Immerkær's 3 × 3 operator: the difference of two Laplacians, blind to an image's local planes. Its norm is 6.
_IMMERKAER = torch.tensor([[1.0, -2.0, 1.0], [-2.0, 4.0, -2.0], [1.0, -2.0, 1.0]])


def estimate_gaussian_sigma(image: torch.Tensor) -> float:
    """The standard deviation (0–255 scale) of additive white Gaussian noise in ``image`` ``(C, H, W)`` or
    ``(H, W)``, [0, 1] floats: the median absolute response to Immerkær's operator (J. Immerkær, "Fast noise
    variance estimation", CVIU 1996, which is blind to planes) over 0.6745 · 6, the robust scale of Donoho and
    Johnstone, which edges and texture move far less than the mean Immerkær used. Measured on clean photos
    (BSD68, scikit-image's): 1–2.5 for most, 7 for a heavily textured one; on noisy ones σ + 0.3 to σ + 3."""
    x = image.float().reshape(-1, 1, *image.shape[-2:])
    if min(x.shape[-2:]) < 3:
        return 0.0
    response = F.conv2d(x, _IMMERKAER.to(x.device).view(1, 1, 3, 3))
    return float(response.abs().median() / (0.6745 * 6.0) * 255.0)


def noise_for(name: str, shape: tuple[int, ...], seed: int) -> np.ndarray:
    """The fixed unit-variance noise for the test image ``name``: the same for every method, run and σ.

    It depends on the image's name and the seed only, so a subset or another order sees the same noise.
    """
    import zlib

    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    return rng.standard_normal(shape).astype(np.float32)


def noisy_version(image: np.ndarray, name: str, sigma: float, seed: int, noise: str = "gaussian") -> np.ndarray:
    """The test image ``name`` degraded at level ``sigma`` by the noise model ``noise``, the same for every method
    and run; not clipped.

    Gaussian noise is ``image + σ/255 · n`` with the seeded noise of :func:`noise_for` (the literature's
    protocol). The other models (this module) draw from a CPU torch generator seeded, as that noise,
    by the seed and the image's name.
    """
    if noise == "gaussian":
        return image + noise_for(name, image.shape, seed) * np.float32(sigma / 255.0)
    model = noise_model(noise, "noise")
    model.check_level(sigma, "noise level")
    level = torch.full((1, 1, 1, 1), float(sigma))
    return on_tensor(lambda x: model.apply(x, level, image_generator(name, seed)), image)


def image_generator(name: str, seed: int) -> torch.Generator:
    """A CPU generator seeded by ``seed`` and the test image's name (so a subset or another order of the images
    draws the same for each)."""
    import zlib

    state = np.random.SeedSequence([seed, zlib.crc32(name.encode()), 1]).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(state >> np.uint64(1)))


def on_tensor(fn, image: np.ndarray) -> np.ndarray:
    """``fn`` of ``(1, C, H, W)`` float32 tensors applied to an ``(H, W, C)`` array."""
    x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)).permute(2, 0, 1)[None]
    return fn(x)[0].permute(1, 2, 0).contiguous().numpy()

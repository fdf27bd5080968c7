"""Training and test images: folders, scikit-image's bundled samples, crops and augmentation.

Training draws every random choice from ``(seed, episode)``, so the batch of episode ``e`` is the same
whichever worker builds it and whether or not the run was resumed.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from r3l.errors import R3LError
from r3l.io.files import expand_path
from r3l.io.images import list_images, read_native, to_channels, to_float
from r3l.schema import non_negative, positive, resumable, unit_interval

#: scikit-image samples for training and for testing (disjoint), used when no data set is at hand.
SKIMAGE_TRAIN = ("brick", "grass", "gravel", "coins", "moon", "clock", "chelsea", "rocket", "coffee",
                 "hubble_deep_field", "page", "text")
SKIMAGE_TEST = ("camera", "astronaut", "immunohistochemistry")
SKIMAGE_SOURCES = {"skimage": SKIMAGE_TRAIN, "skimage-test": SKIMAGE_TEST}


@dataclass
class DataConfig:
    train: str = "${R3L_DATA}/Train400"
    """A folder of training images, or ``skimage`` for scikit-image's bundled samples."""
    val: str = resumable("${R3L_DATA}/BSD68")
    """A folder of validation images, or ``skimage``; empty for none."""
    batch_size: int = positive(32)
    """The global batch: under torchrun it is split evenly over the processes (docs/distributed.md)."""
    crop: int = positive(70)
    hflip: float = unit_interval(0.5)
    rotate_prob: float = unit_interval(0.5)
    rotate_degrees: float = non_negative(10.0)
    workers: int = non_negative(2, resumable=True)
    val_sigma: float | list[float] = non_negative(0.0, resumable=True)
    """Noise level(s) for validation: one, or a list (the mean PSNR over them picks ``best``, and each is logged);
    0 uses the training level (the middle of a range)."""
    val_max_images: int = non_negative(0, resumable=True)
    """Validate on the first N images only; 0 uses all."""
    val_seed: int = non_negative(0, resumable=True)
    holdout: int = non_negative(0)
    """The last N images of ``train`` (by name) are kept out of training; ``val: holdout`` validates on them,
    so that checkpoints are chosen without looking at a test set."""


@dataclass
class NamedImage:
    name: str
    native: np.ndarray
    """``(H, W, C)`` uint8 or uint16, already converted to the model's channel count."""

    @property
    def float(self) -> np.ndarray:
        return to_float(self.native)


def _skimage_images(names: tuple[str, ...], channels: int) -> list[NamedImage]:
    import skimage.data

    out = []
    for name in names:
        array = getattr(skimage.data, name)()
        if array.ndim == 2:
            array = array[:, :, None]
        out.append(NamedImage(name, to_channels(np.ascontiguousarray(array[:, :, :3]), channels)))
    return out


def load_images(source: str | Path, channels: int, key: str = "data", limit: int = 0) -> list[NamedImage]:
    """All images of a folder (or a scikit-image sample set) converted to ``channels``; sorted by name."""
    source = str(source)
    if source in SKIMAGE_SOURCES:
        images = _skimage_images(SKIMAGE_SOURCES[source], channels)
    else:
        folder = expand_path(source, key) if "$" in source else Path(source)
        try:
            files = list_images(folder)
        except R3LError as exc:
            raise R3LError(f"{key}: {exc}") from None
        if limit:
            files = files[:limit]
        images = [NamedImage(p.stem, to_channels(read_native(p), channels)) for p in files]
    return images[:limit] if limit else images


def reflect_pad_to(image: np.ndarray, size: int) -> np.ndarray:
    """Reflect-pad ``(H, W, C)`` so both sides are at least ``size``."""
    h, w = image.shape[:2]
    ph, pw = max(0, size - h), max(0, size - w)
    if ph == 0 and pw == 0:
        return image
    return np.pad(image, ((ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)), mode="symmetric")


def augment_crop(image: np.ndarray, crop: int, rng: np.random.Generator, cfg: DataConfig) -> np.ndarray:
    """A random ``crop × crop`` patch of ``(H, W, C)`` float32, flipped and rotated as configured.

    Rotation turns a larger window about its centre and keeps the middle, so no border enters the patch.
    """
    flip = rng.random() < cfg.hflip
    rotate = rng.random() < cfg.rotate_prob
    angle = rng.uniform(-cfg.rotate_degrees, cfg.rotate_degrees) if rotate else 0.0
    if angle:
        rad = math.radians(abs(angle))
        window = int(math.ceil(crop * (math.cos(rad) + math.sin(rad)))) + 2
    else:
        window = crop
    image = reflect_pad_to(image, window)
    h, w = image.shape[:2]
    top = int(rng.integers(0, h - window + 1))
    left = int(rng.integers(0, w - window + 1))
    patch = image[top : top + window, left : left + window]
    if angle:
        centre = ((window - 1) / 2.0, (window - 1) / 2.0)
        matrix = cv2.getRotationMatrix2D(centre, angle, 1.0)
        rotated = cv2.warpAffine(patch, matrix, (window, window), flags=cv2.INTER_LINEAR,
                                 borderMode=cv2.BORDER_REFLECT_101)
        if rotated.ndim == 2:
            rotated = rotated[:, :, None]
        off = (window - crop) // 2
        patch = rotated[off : off + crop, off : off + crop]
    if flip:
        patch = patch[:, ::-1]
    return np.ascontiguousarray(patch)


class EpisodeBatches(Dataset):
    """Item ``e`` is the training batch of episode ``e``: ``(B, C, crop, crop)`` float32 in [0, 1].

    Images are visited in a fresh random order each pass over the data set (epoch-wise shuffling).
    """

    def __init__(self, images: list[NamedImage], cfg: DataConfig, seed: int, episodes: int):
        self.images, self.cfg, self.seed, self.episodes = images, cfg, seed, episodes
        self._perm_cache: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return self.episodes

    def _permutation(self, epoch: int) -> np.ndarray:
        if epoch not in self._perm_cache:
            self._perm_cache = {epoch: np.random.default_rng([self.seed, 1, epoch]).permutation(len(self.images))}
        return self._perm_cache[epoch]

    def __getitem__(self, episode: int) -> torch.Tensor:
        n, batch = len(self.images), self.cfg.batch_size
        patches = []
        for j in range(batch):
            sample = episode * batch + j
            index = self._permutation(sample // n)[sample % n]
            rng = np.random.default_rng([self.seed, 2, episode, j])
            image = self.images[index].float
            patches.append(augment_crop(image, self.cfg.crop, rng, self.cfg))
        return torch.from_numpy(np.stack(patches)).permute(0, 3, 1, 2).contiguous()


def check_crop(images: list[NamedImage], crop: int) -> None:
    largest = max(min(im.native.shape[:2]) for im in images)
    if crop > largest:
        raise R3LError(
            f"config key data.crop: {crop} is larger than every training image (the largest fits {largest}); "
            f"use data.crop <= {largest}"
        )


def make_train_loader(
    images: list[NamedImage], cfg: DataConfig, seed: int, start: int, episodes: int, pin_memory: bool
) -> DataLoader:
    """Batches for episodes ``start … episodes−1`` in order, built by ``cfg.workers`` processes."""
    dataset = EpisodeBatches(images, cfg, seed, episodes)
    workers = min(cfg.workers, os.cpu_count() or 1)  # more processes than cores only slow the loop down
    return DataLoader(
        dataset,
        batch_size=None,
        sampler=range(start, episodes),
        num_workers=workers,
        pin_memory=pin_memory,
        prefetch_factor=4 if workers else None,
        persistent_workers=False,
    )

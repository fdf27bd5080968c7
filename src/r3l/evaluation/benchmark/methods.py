"""What a benchmark method is: an r3l or third-party network, BM3D (cached on disk), the noisy input itself, or an
untrained paper-size network, each with the key its cached results are stored under."""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from r3l.errors import R3LError
from r3l.evaluation.benchmark.config import WEIGHT_KINDS, BenchmarkConfig, MethodSpec, benchmark_number
from r3l.inference.denoiser import Denoiser, open_denoiser
from r3l.io.files import atomic_path, expand_path, file_sha256
from r3l.metrics import to_uint8


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
        sigma = cfg.sigma_train if spec.value is True else benchmark_number(spec.value, f"{spec.name}.bm3d")
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

"""``r3l demo``: the whole job on scikit-image's bundled images, on a CPU, in a few minutes."""

from __future__ import annotations

import shutil
from importlib.resources import files
from pathlib import Path

from r3l.config import load_config
from r3l.degradation import noisy_version
from r3l.evaluation.figures import grid, label
from r3l.evaluation.protocol import evaluate, summarize
from r3l.inference.denoiser import open_denoiser
from r3l.io.data import load_images
from r3l.io.files import write_json
from r3l.io.images import write_image
from r3l.metrics import to_uint8
from r3l.runtime import configure_torch
from r3l.training.trainer import Trainer


def demo_config_path() -> Path:
    return Path(str(files("r3l") / "presets" / "demo.yaml"))


def run_demo(out_dir: Path, episodes: int, device: str, sigma: float, progress: bool = True) -> dict:
    """Train, evaluate on the held-out samples, write ``demo.png`` and ``demo.json``; return the summary."""
    overrides = [f"train.episodes={episodes}", f"train.device={device}", f"env.sigma={sigma}",
                 f"train.progress={str(progress).lower()}"]
    cfg = load_config(demo_config_path(), overrides)
    run_dir = out_dir / "run"
    if run_dir.exists():
        shutil.rmtree(run_dir)
    Trainer(cfg, run_dir, device=configure_torch(cfg.train)).train()

    denoiser = open_denoiser(checkpoint=run_dir / "best.safetensors", device=device)
    images = load_images("skimage-test", 1)
    rows = evaluate(denoiser, images, [sigma], cfg.data.val_seed, progress=False)
    summary = summarize(rows)[f"{sigma:g}"]

    tiles = []
    for im, row in zip(images, rows):
        clean = im.float
        noisy = noisy_version(clean, im.name, sigma, cfg.data.val_seed)
        out = denoiser.denoise(noisy[:, :, 0])
        tiles.append([
            label(to_uint8(noisy[:, :, 0]), f"noisy {row['psnr_noisy']:.2f} dB"),
            label(to_uint8(out), f"R3L {row['psnr']:.2f} dB"),
            label(to_uint8(clean[:, :, 0]), f"clean ({im.name})"),
        ])
    write_image(out_dir / "demo.png", grid(tiles) / 255.0)
    result = {
        "sigma": sigma, "episodes": episodes, "checkpoint": str(run_dir / "best.safetensors"),
        "psnr_noisy": summary["psnr_noisy"], "psnr_denoised": summary["psnr"],
        "psnr_gain": summary["psnr"] - summary["psnr_noisy"], "ssim_denoised": summary["ssim"], "images": rows,
    }
    write_json(result, out_dir / "demo.json")
    print(f"demo: sigma {sigma:g}, held-out scikit-image samples: noisy {summary['psnr_noisy']:.2f} dB -> "
          f"R3L {summary['psnr']:.2f} dB (+{result['psnr_gain']:.2f} dB); see {out_dir / 'demo.png'}")
    return result

"""The wheel a user installs (``python -m build`` or ``pip wheel .``) holds what r3l needs outside this checkout:
its shipped models, their cards, the shipped configs and the web page; installed alone, it denoises with the
default model and lists the configs."""

import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def test_the_built_wheel_denoises_with_its_shipped_models_and_lists_its_configs(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", str(ROOT),
                    "-w", str(tmp_path / "dist")], check=True, cwd=tmp_path)
    wheel = next((tmp_path / "dist").glob("r3l-*.whl"))
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, cwd=tmp_path)
    noisy = np.clip(120 + np.random.default_rng(0).normal(0, 25, (40, 48)), 0, 255).astype(np.uint8)
    Image.fromarray(noisy).save(tmp_path / "in.png")
    env = {"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin", "R3L_CACHE_DIR": str(tmp_path / "cache")}

    def r3l(*args):  # from outside the checkout, so that only the installed wheel can be imported
        return subprocess.run([sys.executable, "-m", "r3l", *args], env=env, cwd=tmp_path, capture_output=True,
                              text=True)

    where = subprocess.run([sys.executable, "-c", "import r3l; print(r3l.__file__)"], env=env, cwd=tmp_path,
                           capture_output=True, text=True, check=True).stdout
    assert where.startswith(str(target))
    done = r3l("denoise", "in.png", "-o", "out.png", "--engine", "torch")
    assert done.returncode == 0, done.stderr
    assert "r3n-gray-blind" in done.stdout or "r3l-gray-blind" in done.stdout
    out = np.asarray(Image.open(tmp_path / "out.png"))
    assert out.shape == noisy.shape and np.abs(out.astype(float) - 120).std() < 0.5 * np.abs(noisy - 120.0).std()
    listed = r3l("train", "--list-configs")
    assert listed.returncode == 0 and "r3l_gray_sigma25_group" in listed.stdout
    models = r3l("models")
    assert models.returncode == 0 and "r3n-color-blind" in models.stdout

import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

from r3l.io.images import write_image

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("R3L_SHARED", ROOT.parent / "shared"))
DATASETS = SHARED / "datasets"
DNCNN_WEIGHTS = SHARED / "weights" / "dncnn_25.pth"

if os.environ.get("CI") and not DNCNN_WEIGHTS.is_file():
    # CI has the research data beside its clone; a missing copy must fail the run, not skip the referee tests.
    raise RuntimeError(f"CI is set but the research data is missing: {DNCNN_WEIGHTS}")
# Exported inference graphs (r3l.inference.engines) go to a folder of this test run, not the user's cache.
os.environ["R3L_CACHE_DIR"] = tempfile.mkdtemp(prefix="r3l-test-cache-")
needs_shared = pytest.mark.skipif(not DNCNN_WEIGHTS.is_file(), reason=f"research data not found at {SHARED}")


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(2)


def one_error(code, err, *fragments):
    """A CLI call failed with exit code 2 and one ``r3l: error:`` line holding every fragment."""
    assert code == 2
    lines = [line for line in err.strip().splitlines() if line]
    assert len(lines) == 1 and lines[0].startswith("r3l: error: "), err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def smooth_image(rng: np.random.Generator, h: int, w: int, channels: int = 1) -> np.ndarray:
    """A synthetic natural-looking image: blurred random field plus edges, float in [0, 1]."""
    import cv2

    field = rng.random((h // 4 + 1, w // 4 + 1, channels)).astype(np.float32)
    img = cv2.resize(field, (w, h), interpolation=cv2.INTER_CUBIC)
    if img.ndim == 2:
        img = img[:, :, None]
    img[h // 3 : h // 2, :] += 0.3
    return np.clip(img * 0.7 + 0.15, 0, 1)


@pytest.fixture
def tiny_folder(tmp_path):
    """Six 40×40 gray PNGs and two 32×32 test PNGs."""
    rng = np.random.default_rng(0)
    train, test = tmp_path / "train", tmp_path / "test"
    for i in range(6):
        write_image(train / f"im{i}.png", smooth_image(rng, 40, 40))
    for i in range(2):
        write_image(test / f"t{i}.png", smooth_image(rng, 32, 32))
    return tmp_path


def tiny_config(train: str, val: str, episodes: int = 4, **extra) -> dict:
    cfg = {
        "name": "tiny",
        "model": {"init": "scratch", "features": 8, "head_init": "small"},
        "data": {"train": train, "val": val, "batch_size": 4, "crop": 24, "workers": 0},
        "ppo": {"epochs": 2, "minibatches": 2, "lr": 1e-3},
        "train": {"episodes": episodes, "log_every": 2, "val_every": episodes, "save_every": 2,
                  "device": "cpu", "progress": False, "tensorboard": False},
    }
    for key, value in extra.items():
        section, name = key.split("__")
        cfg[section][name] = value
    return cfg


def train_tiny(root: Path, episodes: int = 2, validate: bool = True, steps: int | None = None) -> Path:
    """Write three 40×40 training images (and one 32×32 test image) under ``root``, its config as
    ``root/tiny.yaml``, and train a tiny R3L in-process into ``root/run``; returns ``root``. ``steps``: the
    episode length (default the config's 6)."""
    import yaml

    from r3l.config import from_dict
    from r3l.training.trainer import Trainer

    rng = np.random.default_rng(0)
    for i in range(3):
        write_image(root / "train" / f"im{i}.png", smooth_image(rng, 40, 40))
    write_image(root / "test" / "t0.png", smooth_image(rng, 32, 32))
    cfg = tiny_config(str(root / "train"), str(root / "test") if validate else "", episodes=episodes)
    if steps is not None:
        cfg["env"] = {"steps": steps}
    (root / "tiny.yaml").write_text(yaml.safe_dump(cfg))
    Trainer(from_dict(cfg), root / "run").train()
    return root

"""A model's training noise level: the estimator of an image's noise, and the warnings of eval and denoise."""

import numpy as np
import pytest
import torch

from conftest import smooth_image
from r3l.cli import main
from r3l.degradation import estimate_gaussian_sigma
from r3l.inference.denoiser import Denoiser
from r3l.io.images import write_image
from r3l.models.checkpoint import Checkpoint, save_checkpoint
from r3l.models.networks import R3N
from r3l.models.spec import ArchSpec


@pytest.mark.parametrize("sigma", [10.0, 25.0, 50.0])
def test_estimator_finds_the_level_of_white_noise(sigma):
    rng = np.random.default_rng(0)
    clean = torch.from_numpy(smooth_image(rng, 96, 96)).movedim(-1, 0)
    noisy = clean + torch.from_numpy(rng.normal(0.0, sigma / 255, clean.shape).astype(np.float32))
    assert estimate_gaussian_sigma(noisy) == pytest.approx(sigma, abs=1.5)
    assert estimate_gaussian_sigma(clean) < 3.0


def checkpoint(path, sigma):
    arch = ArchSpec.of("r3n", channels=1, features=4, steps=1)
    torch.manual_seed(0)
    save_checkpoint(path, Checkpoint(arch, R3N(1, 4, 1).state_dict(), {"env": {"sigma": sigma}}, 1, {}))
    return path


def test_warning_outside_the_training_levels(tmp_path):
    fixed = Denoiser.from_checkpoint(checkpoint(tmp_path / "a.safetensors", 25.0), "cpu", engine="torch")
    assert fixed.training_sigma == (25.0, 25.0)
    assert fixed.sigma_warning(25) is None and fixed.sigma_warning(29) is None and fixed.sigma_warning(21) is None
    assert "noise left" in fixed.sigma_warning(35) and "detail smoothed" in fixed.sigma_warning(15)
    blind = Denoiser.from_checkpoint(checkpoint(tmp_path / "b.safetensors", [0.0, 55.0]), "cpu", engine="torch")
    assert blind.training_sigma == (0.0, 55.0)
    assert all(blind.sigma_warning(s) is None for s in (0, 5, 30, 60))
    assert "about 70" in blind.sigma_warning(70.2, estimated=True)
    # The checkpoint's task options hold the level (what r3l writes today); they win over the stored config.
    arch = ArchSpec.of("r3n", channels=1, features=4, steps=1, sigma=[10.0, 20.0], noise="gaussian")
    state = R3N(1, 4, 1).state_dict()
    save_checkpoint(tmp_path / "c.safetensors", Checkpoint(arch, state, {"env": {"sigma": 50}}, 1, {}))
    assert Denoiser.from_checkpoint(tmp_path / "c.safetensors", "cpu", engine="torch").training_sigma == (10.0, 20.0)
    # Third-party weights say nothing of their training level: no warning.
    unknown = Denoiser(R3N(1, 4, 1), ArchSpec.of("r3n", channels=1, features=4, steps=1), "cpu", engine="torch")
    assert unknown.sigma_warning(80) is None


def test_eval_and_denoise_warn_in_one_line(tmp_path, capsys):
    ckpt = checkpoint(tmp_path / "m.safetensors", 25.0)
    rng = np.random.default_rng(1)
    clean = smooth_image(rng, 48, 48)
    write_image(tmp_path / "data" / "a.png", clean)
    write_image(tmp_path / "heavy.png", np.clip(clean + rng.normal(0, 50 / 255, clean.shape), 0, 1).astype(np.float32))
    assert main(["eval", "--checkpoint", str(ckpt), "--data", str(tmp_path / "data"), "--sigma", "25", "--sigma",
                 "50", "--quiet"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("r3l: warning: --sigma 50: ") and "training sigma 25" in err[0]
    assert main(["denoise", "--checkpoint", str(ckpt), str(tmp_path / "heavy.png"), "-o", str(tmp_path / "o.png")]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "heavy.png: noise sigma about" in err[0] and "noise left" in err[0]
    assert (tmp_path / "o.png").is_file()

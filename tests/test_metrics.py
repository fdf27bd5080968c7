import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from r3l.metrics import psnr, ssim, to_uint8


def test_psnr_known_value_and_matches_skimage():
    a = np.full((10, 10), 100, np.uint8)
    b = a.copy()
    b[0, 0] = 110  # MSE = 100 / 100 = 1
    assert psnr(b, a) == pytest.approx(10 * np.log10(255**2))
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (40, 50), dtype=np.uint8)
    y = np.clip(x + rng.normal(0, 10, x.shape), 0, 255).astype(np.uint8)
    assert psnr(y, x) == pytest.approx(peak_signal_noise_ratio(x, y, data_range=255), abs=1e-9)


@pytest.mark.parametrize("shape", [(64, 80), (37, 45, 3)])
def test_ssim_matches_scikit_image(shape):
    rng = np.random.default_rng(1)
    clean = rng.integers(0, 256, shape, dtype=np.uint8)
    noisy = np.clip(clean + rng.normal(0, 25, shape), 0, 255).astype(np.uint8)
    ours = ssim(noisy, clean)
    ref = structural_similarity(
        noisy, clean, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255,
        channel_axis=2 if len(shape) == 3 else None,
    )
    assert ours == pytest.approx(ref, abs=1e-6)
    assert ssim(clean, clean) == pytest.approx(1.0)


def test_to_uint8_clips_and_rounds():
    assert to_uint8(np.array([-0.1, 0.5, 1.2, 0.0019, 0.002])).tolist() == [0, 128, 255, 0, 1]


@pytest.mark.parametrize("shape", [(1, 1), (5, 7), (10, 12, 3), (3, 40)])
def test_ssim_of_images_smaller_than_the_window_uses_the_largest_window_that_fits(shape):
    rng = np.random.default_rng(2)
    clean = rng.integers(0, 256, shape, dtype=np.uint8)
    noisy = np.clip(clean + rng.normal(0, 25, shape), 0, 255).astype(np.uint8)
    fits = min(shape[0], shape[1], 11)
    win = fits if fits % 2 else fits - 1
    ref = structural_similarity(
        noisy, clean, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255,
        win_size=win, channel_axis=2 if len(shape) == 3 else None,
    )
    assert ssim(noisy, clean) == pytest.approx(ref, abs=1e-6)
    assert ssim(clean, clean) == pytest.approx(1.0)

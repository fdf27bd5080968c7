import numpy as np
import pytest
import torch
from PIL import Image

from r3l.degradation import noise_for, noisy_version
from r3l.errors import R3LError
from r3l.io.data import DataConfig, EpisodeBatches, NamedImage, augment_crop, check_crop, load_images
from r3l.io.images import read_image, write_image


@pytest.mark.parametrize("bits", [8, 16])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_image_roundtrip_keeps_size_channels_and_depth(tmp_path, bits, channels, suffix):
    rng = np.random.default_rng(0)
    image = rng.random((13, 21, channels)).astype(np.float32)
    path = tmp_path / f"x{suffix}"
    write_image(path, image, bits=bits)
    back, info = read_image(path)
    assert (info.height, info.width, info.channels, info.bits) == (13, 21, channels, bits)
    peak = 255 if bits == 8 else 65535
    assert np.abs(back - image).max() <= 0.5 / peak + 1e-6


def test_colour_to_gray_uses_bt601_luma(tmp_path):
    rgb = np.zeros((2, 2, 3), np.uint8)
    rgb[..., 0] = 200
    Image.fromarray(rgb).save(tmp_path / "red.png")
    gray, info = read_image(tmp_path / "red.png", channels=1)
    assert info.channels == 3 and gray.shape == (2, 2, 1)
    assert gray[0, 0, 0] * 255 == pytest.approx(round(0.299 * 200))


@pytest.mark.parametrize("mode", ["P", "RGBA", "LA", "CMYK", "1"])
def test_odd_modes_decode(tmp_path, mode):
    im = Image.fromarray((np.random.default_rng(0).random((9, 11, 3)) * 255).astype(np.uint8)).convert(mode)
    path = tmp_path / ("x.jpg" if mode == "CMYK" else "x.png")
    im.save(path)
    image, info = read_image(path, channels=1)
    assert image.shape == (9, 11, 1) and 0 <= image.min() and image.max() <= 1


def test_augmented_crops_are_deterministic_and_in_range():
    cfg = DataConfig(batch_size=3, crop=24, hflip=0.5, rotate_prob=1.0)
    images = [NamedImage(f"i{k}", (np.random.default_rng(k).random((40, 50, 1)) * 255).astype(np.uint8))
              for k in range(5)]
    data = EpisodeBatches(images, cfg, seed=7, episodes=10)
    a, b = data[3], EpisodeBatches(images, cfg, seed=7, episodes=10)[3]
    assert a.shape == (3, 1, 24, 24) and a.dtype == torch.float32
    assert torch.equal(a, b)
    assert not torch.equal(a, data[4])
    assert 0 <= a.min() and a.max() <= 1


def test_epoch_wise_shuffling_visits_every_image_once_per_epoch():
    cfg = DataConfig(batch_size=2, crop=4, hflip=0, rotate_prob=0)
    # Each image is constant with its own value, so a crop tells which image it came from.
    images = [NamedImage(f"i{k}", np.full((6, 6, 1), k * 20, np.uint8)) for k in range(6)]
    data = EpisodeBatches(images, cfg, seed=0, episodes=6)
    seen = [int(round(data[e][j, 0, 0, 0].item() * 255 / 20)) for e in range(6) for j in range(2)]
    assert sorted(seen[:6]) == list(range(6)) and sorted(seen[6:]) == list(range(6))
    assert seen[:6] != seen[6:]


def test_small_images_are_reflect_padded_and_crop_limit():
    rng = np.random.default_rng(0)
    cfg = DataConfig(crop=32, hflip=0, rotate_prob=0)
    patch = augment_crop(rng.random((20, 40, 1)).astype(np.float32), 32, rng, cfg)
    assert patch.shape == (32, 32, 1)
    images = [NamedImage("a", np.zeros((20, 40, 1), np.uint8)), NamedImage("b", np.zeros((30, 30, 1), np.uint8))]
    check_crop(images, 30)
    with pytest.raises(R3LError, match="data.crop: 31 is larger than every training image"):
        check_crop(images, 31)


def test_test_noise_is_fixed_per_image_name():
    clean = np.zeros((8, 8, 1), np.float32)
    a = noisy_version(clean, "house", 25, seed=0)
    assert np.array_equal(a, noisy_version(clean, "house", 25, seed=0))
    assert not np.array_equal(a, noisy_version(clean, "boat", 25, seed=0))
    assert not np.array_equal(a, noisy_version(clean, "house", 25, seed=1))
    assert np.allclose(noisy_version(clean, "house", 50, 0), 2 * a)
    assert noise_for("house", (400, 400), 0).std() == pytest.approx(1.0, abs=0.01)


def test_folder_errors(tmp_path):
    with pytest.raises(R3LError, match="no such folder"):
        load_images(str(tmp_path / "missing"), 1, "data.train")
    (tmp_path / "empty").mkdir()
    with pytest.raises(R3LError, match="data.train: .*empty: no image files"):
        load_images(str(tmp_path / "empty"), 1, "data.train")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "fake.png").write_text("this is not an image")
    with pytest.raises(R3LError, match="fake.png: not a readable image"):
        load_images(str(bad), 1)
    (bad / "fake.png").write_bytes(b"")
    with pytest.raises(R3LError, match="fake.png: empty file"):
        load_images(str(bad), 1)


def test_truncated_and_oversized_images(tmp_path, monkeypatch):
    write_image(tmp_path / "ok.png", np.random.default_rng(0).random((64, 64, 1)))
    data = (tmp_path / "ok.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(R3LError, match="cut.png: corrupt or truncated"):
        read_image(tmp_path / "cut.png")
    monkeypatch.setenv("R3L_MAX_PIXELS", "1000")
    with pytest.raises(R3LError, match="ok.png: 64x64 image exceeds the pixel limit of 1000"):
        read_image(tmp_path / "ok.png")


def test_skimage_sources_are_disjoint_and_loadable():
    train = load_images("skimage", 1)
    test = load_images("skimage-test", 1)
    assert len(train) >= 8 and len(test) == 3
    assert not {im.name for im in train} & {im.name for im in test}
    assert all(im.native.shape[2] == 1 and im.native.dtype == np.uint8 for im in train + test)

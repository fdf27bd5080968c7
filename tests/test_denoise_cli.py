"""``r3l denoise`` and ``Denoiser.denoise`` as a user meets them: no harm to a clean photo (the strength), phone
photos upright with their colour profile, the default model chosen per image from Python too, a progress bar on a
terminal, outputs checked before any work, and messages that name the model."""

import sys

import numpy as np
import pytest
from PIL import Image, ImageCms

from r3l.cli import main
from r3l.errors import R3LError
from r3l.inference.denoiser import Denoiser
from r3l.models.zoo import DEFAULT_COLOUR_MODEL, DEFAULT_MODEL
from test_zoo import constant_defaults

BRIGHTEN = 6 * 13
"""What the constant 'gray' policy below adds to every pixel (six steps of +13 levels)."""


@pytest.fixture
def registry(tmp_path, monkeypatch):
    """A gray default that brightens every pixel by :data:`BRIGHTEN` levels and a colour default that keeps the
    image (told apart by what they do)."""
    return constant_defaults(tmp_path, monkeypatch)


def cli(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def noisy_gray(sigma: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = np.tile(np.linspace(60, 160, 48), (40, 1))
    return np.clip(np.round(base + rng.normal(0, sigma, base.shape)), 0, 255).astype(np.uint8)


def test_a_clean_image_is_left_alone_and_a_noisy_one_denoised_in_full(registry):
    denoiser = Denoiser.pretrained(DEFAULT_MODEL, device="cpu")
    clean, noisy = noisy_gray(0.0), noisy_gray(25.0)
    assert denoiser.strength_for(clean) == (0.0, pytest.approx(0.0, abs=0.5))
    strength, sigma = denoiser.strength_for(noisy)
    assert strength == 1.0 and sigma == pytest.approx(25, abs=3)
    np.testing.assert_array_equal(denoiser.denoise(clean), clean)  # auto: the model is not even run
    np.testing.assert_array_equal(denoiser.denoise(noisy), np.minimum(noisy.astype(int) + BRIGHTEN, 255))
    np.testing.assert_array_equal(denoiser.denoise(clean, strength=1.0), clean + BRIGHTEN)
    half = denoiser.denoise(clean, strength=0.5)
    np.testing.assert_array_equal(half, clean + BRIGHTEN // 2)
    light = noisy_gray(6.0)
    strength, _ = denoiser.strength_for(light)
    assert 0.0 < strength < 1.0  # light noise: part of the model's change
    with pytest.raises(R3LError, match="strength"):
        denoiser.denoise(clean, strength=1.5)


def test_r3l_denoise_says_what_strength_it_chose_and_takes_one(registry, tmp_path, capsys):
    Image.fromarray(noisy_gray(0.0)).save(tmp_path / "clean.png")
    code, out, err = cli(capsys, "denoise", tmp_path / "clean.png", "-o", tmp_path / "a.png", "--device", "cpu")
    assert code == 0 and "left as it is" in err and "--strength 1" in err
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "a.png")), noisy_gray(0.0))
    code, out, err = cli(capsys, "denoise", tmp_path / "clean.png", "-o", tmp_path / "b.png", "--device", "cpu",
                         "--strength", "1")
    assert code == 0 and "strength" not in err
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "b.png")), noisy_gray(0.0) + BRIGHTEN)
    with pytest.raises(SystemExit) as stop:
        main(["denoise", str(tmp_path / "clean.png"), "-o", str(tmp_path / "c.png"), "--strength", "2"])
    assert stop.value.code == 2 and "expected auto or a number in [0, 1]" in capsys.readouterr().err


def test_a_rotated_phone_photo_comes_out_upright_with_its_colour_profile(registry, tmp_path, capsys):
    """A JPEG whose EXIF orientation 6 says "turn 90° clockwise to show": the output's pixels are upright, its
    orientation tag says so, and the ICC profile is kept."""
    rgb = np.full((40, 60, 3), 90, np.uint8)
    rgb[:10, :20] = 250  # a block at the stored image's top left: shown at the top right
    exif = Image.Exif()
    exif[0x0112] = 6
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    Image.fromarray(rgb).save(tmp_path / "phone.jpg", exif=exif.tobytes(), icc_profile=icc, quality=95)
    code, _, err = cli(capsys, "denoise", tmp_path / "phone.jpg", "-o", tmp_path / "out.jpg", "--device", "cpu")
    assert code == 0, err
    with Image.open(tmp_path / "out.jpg") as im:
        assert im.size == (40, 60)  # width 40, height 60: upright
        assert im.getexif().get(0x0112, 1) == 1 and im.info.get("icc_profile") == icc
        pixels = np.asarray(im)
    assert pixels[:10, -10:].mean() > 240 and pixels[:10, :10].mean() < 100


def test_the_default_denoiser_picks_the_model_for_each_image_from_python_too(registry):
    """``Denoiser.pretrained().denoise(rgb)`` (the README's snippet) gives a colour image to the colour default,
    as ``r3l denoise`` does, and a gray one to the gray default."""
    gray = np.full((8, 9), 100, np.uint8)
    colour = np.dstack([np.full((8, 9), v, np.uint8) for v in (30, 120, 200)])
    denoiser = Denoiser.pretrained(device="cpu")
    assert denoiser.name == DEFAULT_MODEL
    np.testing.assert_array_equal(denoiser.denoise(colour, strength=1.0), colour)  # the colour model's
    np.testing.assert_array_equal(denoiser.denoise(gray, strength=1.0), gray + BRIGHTEN)
    assert denoiser.for_image(colour).name == DEFAULT_COLOUR_MODEL and denoiser.for_image(gray) is denoiser
    named = Denoiser.pretrained(DEFAULT_MODEL, device="cpu")
    assert named.for_image(colour) is named  # a model asked for by name is what runs


def test_outputs_are_checked_before_any_work(registry, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(Denoiser, "denoise", lambda *a, **k: pytest.fail("denoised before checking the output"))
    Image.fromarray(noisy_gray(25.0)).save(tmp_path / "x.png")
    (tmp_path / "outdir").mkdir()
    (tmp_path / "d.png").mkdir()
    code, _, err = cli(capsys, "denoise", tmp_path / "x.png", "-o", tmp_path / "outdir")
    assert code == 2 and "is a folder" in err and "--out-dir" in err
    code, _, err = cli(capsys, "denoise", tmp_path / "x.png", "--out-dir", tmp_path / "o", "-o", tmp_path / "d.png")
    assert code == 2 and "d.png" in err
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "x.png").mkdir()
    code, _, err = cli(capsys, "denoise", tmp_path / "x.png", "--out-dir", tmp_path / "o")
    assert code == 2 and "in the way" in err
    code, _, err = cli(capsys, "denoise", tmp_path / "missing.png", "-o", tmp_path / "y.png")
    assert code == 2 and "missing.png: no such file" in err


def test_a_float_tiff_written_as_png_is_said(registry, tmp_path, capsys):
    import tifffile

    tifffile.imwrite(tmp_path / "in.tif", (noisy_gray(25.0) / 255.0).astype(np.float32))
    code, _, err = cli(capsys, "denoise", tmp_path / "in.tif", "-o", tmp_path / "out.png", "--device", "cpu")
    assert code == 0 and "as 16-bit integers" in err
    with Image.open(tmp_path / "out.png") as im:
        assert im.mode.startswith("I")  # 16-bit gray


def test_a_progress_bar_on_a_terminal_only(registry, tmp_path, capsys, monkeypatch):
    Image.fromarray(noisy_gray(25.0)).save(tmp_path / "x.png")
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    code, _, err = cli(capsys, "denoise", tmp_path / "x.png", "-o", tmp_path / "a.png", "--device", "cpu")
    assert code == 0 and "x.png" in err and "tile" in err
    code, _, err = cli(capsys, "denoise", tmp_path / "x.png", "-o", tmp_path / "b.png", "--device", "cpu", "-q")
    assert code == 0 and "tile" not in err
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    code, _, err = cli(capsys, "denoise", tmp_path / "x.png", "-o", tmp_path / "c.png", "--device", "cpu")
    assert code == 0 and "tile" not in err


def test_verbose_names_the_model_once_and_only_the_one_used(registry, tmp_path, capsys):
    colour = np.dstack([noisy_gray(25.0, seed) for seed in range(3)])
    Image.fromarray(colour).save(tmp_path / "c.png")
    code, _, err = cli(capsys, "denoise", tmp_path / "c.png", "-o", tmp_path / "o.png", "--device", "cpu",
                       "--verbose")
    lines = [line for line in err.splitlines() if " on " in line]
    assert code == 0 and len(lines) == 1 and lines[0].startswith(f"{DEFAULT_COLOUR_MODEL} (r3l) on ")


def test_a_blind_model_does_not_recommend_blind_models(registry):
    denoiser = Denoiser.pretrained(DEFAULT_MODEL, device="cpu")
    denoiser.training_sigma = (0.0, 55.0)
    assert "noise left" in denoiser.sigma_warning(90) and "blind models" not in denoiser.sigma_warning(90)
    denoiser.training_sigma = (25.0, 25.0)
    assert "blind models" in denoiser.sigma_warning(90)


def test_the_readme_python_snippet_runs_and_picks_the_colour_model(monkeypatch):
    """The README's snippet, as it is printed there, on a noisy colour image with the shipped models."""
    import re
    from pathlib import Path

    from r3l.models.zoo import default_model

    monkeypatch.delenv("R3L_MODELS", raising=False)
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    snippet = next(block for block in re.findall(r"```python\n(.*?)```", readme, re.S) if "pretrained()" in block)
    rng = np.random.default_rng(0)
    noisy = np.clip(100 + rng.normal(0, 25, (24, 28, 3)), 0, 255).astype(np.uint8)
    scope = {"noisy": noisy}
    exec(snippet, scope)
    assert scope["clean"].shape == noisy.shape and scope["clean"].dtype == np.uint8
    assert scope["denoiser"].for_image(noisy).name == default_model(3).name != default_model(1).name
    assert scope["named"].name == "r3n-gray-s25"

"""What a new user hits with odd inputs: each case gives r3l's own one-line message or does the right thing.

The command line runs in-process (``r3l.cli.main``) so that each case costs milliseconds, not an interpreter.
"""

import json
import shutil
import warnings

import numpy as np
import pytest
import yaml
from PIL import Image

from conftest import DNCNN_WEIGHTS, needs_shared, one_error, train_tiny
from r3l.cli import main
from r3l.errors import R3LError, R3LWarning
from r3l.inference.denoiser import Denoiser, open_denoiser
from r3l.io.images import read_image, read_image_with_alpha, write_image
from r3l.models.checkpoint import load_checkpoint


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny R3L run (2 episodes) with its config file and data."""
    return train_tiny(tmp_path_factory.mktemp("edge"))


def cli(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


# 1. SSIM on images smaller than its window
def test_eval_on_tiny_images(run, tmp_path, capsys):
    for name, size in (("a", (1, 1)), ("b", (5, 7))):
        Image.new("L", size, 120).save(tmp_path / f"{name}.png")
    code, out, err = cli(capsys, "eval", "--checkpoint", run / "run" / "best.safetensors", "--data", tmp_path,
                         "--json", tmp_path / "r.json", "--quiet")
    assert code == 0, err
    rows = json.loads((tmp_path / "r.json").read_text())["images"]
    assert len(rows) == 2 and all(-1 <= r["ssim"] <= 1 for r in rows)


# 2. damaged KAIR weights
@needs_shared
def test_damaged_dncnn_weights_are_refused(tmp_path, capsys):
    raw = bytearray(DNCNN_WEIGHTS.read_bytes())
    middle = len(raw) // 2
    for i in range(50):
        raw[middle + i] ^= 0xFF
    (tmp_path / "dncnn_25.pth").write_bytes(bytes(raw))
    Image.new("L", (16, 16), 100).save(tmp_path / "x.png")
    code, _, err = cli(capsys, "denoise", "--model", "dncnn", "--weights", tmp_path / "dncnn_25.pth",
                       tmp_path / "x.png", "-o", tmp_path / "y.png")
    one_error(code, err, "dncnn_25.pth", "implausible values", "damaged")
    assert not (tmp_path / "y.png").exists()


@needs_shared
def test_weights_that_differ_from_the_published_file_warn(tmp_path, capsys):
    import torch

    state = torch.load(DNCNN_WEIGHTS, weights_only=True)
    state["model.0.bias"] = state["model.0.bias"] * 1.001  # plausible, but not KAIR's bytes
    torch.save(state, tmp_path / "dncnn_25.pth")
    Image.new("L", (16, 16), 100).save(tmp_path / "x.png")
    code, _, err = cli(capsys, "denoise", "--model", "dncnn", "--weights", tmp_path / "dncnn_25.pth",
                       tmp_path / "x.png", "-o", tmp_path / "y.png", "--strength", "1")
    assert code == 0
    assert err.strip().splitlines() == [
        f"r3l: warning: {tmp_path / 'dncnn_25.pth'}: differs from KAIR's published dncnn_25.pth (SHA-256 "
        "mismatch); results may not match the published numbers"]


def test_non_finite_weights_are_refused(tmp_path):
    import torch

    from r3l.models.networks import DnCNN, dncnn_from_weights

    state = {f"model.{k.split('.', 1)[1]}": v for k, v in DnCNN(1, 8, 3).state_dict().items()}
    state["model.2.weight"][0, 0, 0, 0] = float("nan")
    torch.save(state, tmp_path / "w.pth")
    with pytest.raises(R3LError, match="model.2.weight holds NaN"):
        dncnn_from_weights(tmp_path / "w.pth")


# 3. an r3l checkpoint given as KAIR weights
def test_checkpoint_given_as_dncnn_weights(run, capsys):
    code, _, err = cli(capsys, "denoise", "--model", "dncnn", "--weights", run / "run" / "best.safetensors",
                       run / "test" / "t0.png", "-o", run / "o.png")
    one_error(code, err, "is an r3l checkpoint", "--checkpoint")


# 4. outputs that would overwrite each other
def test_same_named_inputs_are_refused_before_any_work(run, tmp_path, capsys):
    for folder in ("dA", "dB"):
        shutil.copy(run / "test" / "t0.png", tmp_path / f"{folder}_x.png")
        (tmp_path / folder).mkdir()
        shutil.copy(run / "test" / "t0.png", tmp_path / folder / "x.png")
    code, _, err = cli(capsys, "denoise", "--checkpoint", run / "run" / "best.safetensors",
                       tmp_path / "dA" / "x.png", tmp_path / "dB" / "x.png", "--out-dir", tmp_path / "oc")
    one_error(code, err, "would both be written to", "x.png")
    assert not (tmp_path / "oc").exists()
    code, _, err = cli(capsys, "denoise", "--checkpoint", run / "run" / "best.safetensors",
                       tmp_path / "dA", tmp_path / "dB", "--out-dir", tmp_path / "oc")
    one_error(code, err, "would both be written to")


def test_explain_folders_never_collide(run, tmp_path, capsys):
    shutil.copy(run / "test" / "t0.png", tmp_path / "a.png")
    Image.open(run / "test" / "t0.png").save(tmp_path / "a.tif")
    code, _, err = cli(capsys, "denoise", "--checkpoint", run / "run" / "best.safetensors", tmp_path / "a.png",
                       tmp_path / "a.tif", "--out-dir", tmp_path / "oc", "--explain", tmp_path / "ex")
    one_error(code, err, "--explain", "a.png", "a.tif")
    assert not (tmp_path / "oc").exists() and not (tmp_path / "ex").exists()


# 5. the Python API
@pytest.mark.parametrize("bad, fragment", [
    (np.zeros((8, 8), np.int32), "int32 image: its scale is ambiguous"),
    (np.zeros((2, 8, 8, 1), np.uint8), "shape (2, 8, 8, 1)"),
    (np.zeros((0, 8), np.uint8), "shape (0, 8)"),
    (np.zeros((8, 8, 5), np.uint8), "shape (8, 8, 5)"),
    ([[0.1, 0.2], [0.3, 0.4]], "got list"),
    (np.full((8, 8), 200.0), "float images are intensities in [0, 1]"),
    (np.full((8, 8), np.nan, np.float32), "NaN"),
])
def test_python_api_refuses_ambiguous_arrays(run, bad, fragment):
    denoiser = Denoiser.from_checkpoint(run / "run" / "best.safetensors", "cpu")
    with pytest.raises(R3LError) as info:
        denoiser.denoise(bad)
    assert fragment in str(info.value)


def test_python_api_keeps_alpha_and_dtype(run):
    denoiser = Denoiser.from_checkpoint(run / "run" / "best.safetensors", "cpu")
    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 256, (12, 10, 4), dtype=np.uint8)
    out = denoiser.denoise(rgba)
    assert out.shape == rgba.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out[:, :, 3], rgba[:, :, 3])
    gray16 = rng.integers(0, 65536, (12, 10), dtype=np.uint16)
    assert denoiser.denoise(gray16).dtype == np.uint16
    f16 = rng.random((12, 10, 3)).astype(np.float16)
    assert denoiser.denoise(f16).dtype == np.float16


# 6. alpha and float files keep what they hold
@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_denoise_keeps_alpha(run, tmp_path, capsys, mode):
    rng = np.random.default_rng(1)
    channels = len(mode)
    pixels = rng.integers(0, 256, (20, 24, channels), dtype=np.uint8)
    Image.fromarray(pixels, mode).save(tmp_path / "in.png")
    code, _, err = cli(capsys, "denoise", "--checkpoint", run / "run" / "best.safetensors", tmp_path / "in.png",
                       "-o", tmp_path / "out.png")
    assert code == 0, err
    with Image.open(tmp_path / "out.png") as im:
        assert im.mode == mode
        np.testing.assert_array_equal(np.asarray(im)[:, :, -1], pixels[:, :, -1])


def test_denoise_keeps_float_tiff_float(run, tmp_path, capsys):
    import tifffile

    rng = np.random.default_rng(2)
    tifffile.imwrite(tmp_path / "in.tif", rng.random((20, 24)).astype(np.float32))
    code, _, err = cli(capsys, "denoise", "--checkpoint", run / "run" / "best.safetensors", tmp_path / "in.tif",
                       "-o", tmp_path / "out.tif")
    assert code == 0, err
    out = tifffile.imread(tmp_path / "out.tif")  # 11. uncompressed: no imagecodecs needed
    assert out.dtype == np.float32 and out.shape == (20, 24) and 0 <= out.min() and out.max() <= 1


def test_float_colour_tiff_is_read(tmp_path):
    import tifffile

    pixels = np.random.default_rng(3).random((9, 11, 3)).astype(np.float32)
    tifffile.imwrite(tmp_path / "c.tif", pixels, photometric="rgb")
    image, info = read_image(tmp_path / "c.tif")
    assert info.bits == 32 and info.channels == 3
    np.testing.assert_allclose(image, pixels)
    write_image(tmp_path / "back.tif", image, bits=32)
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "back.tif"), pixels)


def test_float_image_outside_the_unit_range_is_refused(tmp_path):
    import tifffile

    tifffile.imwrite(tmp_path / "f.tif", np.full((4, 4), 200.0, np.float32))
    with pytest.raises(R3LError, match=r"f.tif: float image with values in \[200, 200\]"):
        read_image(tmp_path / "f.tif")


def test_alpha_into_a_format_without_alpha_warns(tmp_path):
    rgba = np.random.default_rng(4).integers(0, 256, (6, 6, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "in.png")
    image, alpha, _ = read_image_with_alpha(tmp_path / "in.png")
    with pytest.warns(R3LWarning, match="holds no alpha channel"):
        write_image(tmp_path / "out.jpg", image, alpha=alpha)


# 7. resume with another config
def test_resume_refuses_a_changed_config(run, tmp_path, capsys):
    shutil.copytree(run / "run", tmp_path / "run")
    code, _, err = cli(capsys, "train", "--config", run / "tiny.yaml", "--run-dir", tmp_path / "run", "--resume",
                       "--set", "data.batch_size=2")
    one_error(code, err, "data.batch_size: 4 -> 2", "--force")
    saved = (tmp_path / "run" / "config.yaml").read_text()
    assert yaml.safe_load(saved)["data"]["batch_size"] == 4
    code, out, err = cli(capsys, "train", "--config", run / "tiny.yaml", "--run-dir", tmp_path / "run",
                         "--resume", "--set", "train.episodes=3", "--set", "train.log_every=1", "--force")
    assert code == 0, err
    assert f"resuming {tmp_path / 'run'} at episode 2 of 3" in out
    assert err.strip().splitlines() == ["r3l: warning: resuming with a changed train.episodes: 2 -> 3"]


# 8. strict JSON
def test_sigma_zero_writes_strict_json(run, tmp_path, capsys):
    code, _, err = cli(capsys, "eval", "--checkpoint", run / "run" / "best.safetensors", "--data", run / "test",
                       "--sigma", 0, "--json", tmp_path / "r.json", "--quiet")
    assert code == 0, err
    text = (tmp_path / "r.json").read_text()
    data = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))
    assert data["summary"]["0"]["psnr_noisy"] is None


# 9. every argument checked before any work
def test_explain_with_dncnn_writes_nothing(tmp_path, capsys):
    import torch

    from r3l.models.networks import DnCNN

    state = {f"model.{k.split('.', 1)[1]}": v for k, v in DnCNN(1, 8, 3).state_dict().items()}
    torch.save(state, tmp_path / "w.pth")
    Image.new("L", (16, 16), 100).save(tmp_path / "x.png")
    code, _, err = cli(capsys, "denoise", "--model", "dncnn", "--weights", tmp_path / "w.pth", tmp_path / "x.png",
                       "-o", tmp_path / "y.png", "--explain", tmp_path / "ex")
    one_error(code, err, "--explain needs an R3L checkpoint")
    assert not (tmp_path / "y.png").exists() and not (tmp_path / "ex").exists()


def test_unknown_output_format_is_refused_before_denoising(run, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(Denoiser, "denoise", lambda *a: pytest.fail("denoised before checking the output"))
    code, _, err = cli(capsys, "denoise", "--checkpoint", run / "run" / "best.safetensors",
                       run / "test" / "t0.png", "-o", tmp_path / "y.webp")
    one_error(code, err, "y.webp", "unknown output format")


def test_contradictory_model_arguments(run, tmp_path, capsys):
    ck = run / "run" / "best.safetensors"
    code, _, err = cli(capsys, "denoise", "--checkpoint", ck, "--model", "dncnn", "--weights", "w.pth",
                       run / "test" / "t0.png", "-o", tmp_path / "y.png")
    one_error(code, err, "either --checkpoint", "not both")
    code, _, err = cli(capsys, "eval", "--weights", "w.pth", "--data", run / "test")
    one_error(code, err, "--weights FILE needs --model dncnn, --model ircnn or --model pixelrl")
    # open_denoiser is the one place that checks: the same line from denoise (weights alone), export and the API.
    code, _, err = cli(capsys, "denoise", "--weights", "w.pth", run / "test" / "t0.png", "-o", tmp_path / "z.png")
    one_error(code, err, "--weights FILE needs --model dncnn, --model ircnn or --model pixelrl")
    assert not (tmp_path / "z.png").exists()
    code, _, err = cli(capsys, "export", "--model", "dncnn", "--onnx", tmp_path / "m.onnx")
    one_error(code, err, "--model dncnn needs --weights PATH")
    with pytest.raises(R3LError, match="--decode expected applies to R3L policies, not to --model ircnn"):
        open_denoiser(model="ircnn", weights="w.caffemodel", decoding="expected")


# 10. checkpoint headers
@pytest.mark.parametrize("edit", [("episode", -6), ("episode", 9), ("arch.steps", -6), ("arch.n_actions", 4),
                                  ("arch.channels", 2), ("arch.name", "unet")])
def test_edited_checkpoint_headers_are_refused(run, tmp_path, edit):
    from safetensors.torch import load as st_load
    from safetensors.torch import save as st_save

    from r3l.models.checkpoint import FORMAT_VERSION, _digest, _header_digest

    raw = (run / "run" / "last.safetensors").read_bytes()
    size = int.from_bytes(raw[:8], "little")
    meta = json.loads(json.loads(raw[8 : 8 + size])["__metadata__"]["r3l"])
    assert meta["format_version"] == FORMAT_VERSION
    key, value = edit
    node = meta
    *parents, leaf = key.split(".")
    for part in parents:
        node = node[part]
    node[leaf] = value
    tensors = st_load(raw)
    path = tmp_path / "edited.safetensors"
    path.write_bytes(st_save(tensors, metadata={"r3l": json.dumps(meta)}))
    with pytest.raises(R3LError, match="checksum mismatch"):
        load_checkpoint(path)
    # Even with the checksum recomputed, the field itself is checked (episode 9 is in range: it only fails above).
    meta["sha256"] = _header_digest(_digest(tensors), meta)
    path.write_bytes(st_save(tensors, metadata={"r3l": json.dumps(meta)}))
    if edit == ("episode", 9):
        assert load_checkpoint(path).episode == 9
    else:
        with pytest.raises(R3LError, match=f"header field {key} "):
            load_checkpoint(path)


# 12. warnings are one plain line
def test_resume_fallback_warning_is_one_plain_line(run, tmp_path, capsys):
    shutil.copytree(run / "run", tmp_path / "run")
    last = tmp_path / "run" / "last.safetensors"
    shutil.copy(last, tmp_path / "run" / "last.prev.safetensors")
    last.write_bytes(last.read_bytes()[:-10])
    with warnings.catch_warnings():
        code, _, err = cli(capsys, "train", "--config", run / "tiny.yaml", "--run-dir", tmp_path / "run", "--resume")
    assert code == 0, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("r3l: warning: ") and "last.prev.safetensors" in lines[0]
    assert ".py:" not in lines[0] and "UserWarning" not in lines[0]

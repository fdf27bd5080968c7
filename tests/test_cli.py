import json
import os
import subprocess
import sys

import numpy as np
import pytest
import yaml
from PIL import Image

from conftest import DATASETS, DNCNN_WEIGHTS, needs_shared, tiny_config
from r3l.io.images import read_image, write_image


def r3l(*args, cwd=None, env=None):
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-m", "r3l", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=full_env, timeout=600)


def assert_clean_error(result, *fragments):
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.strip().splitlines() if line]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("r3l: error: ")
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


@pytest.fixture
def trained(tiny_folder):
    cfg = tiny_folder / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config(str(tiny_folder / "train"), str(tiny_folder / "test"))))
    run = tiny_folder / "run"
    result = r3l("train", "--config", cfg, "--run-dir", run, "--set", "train.episodes=2")
    assert result.returncode == 0, result.stderr
    return tiny_folder, run / "best.safetensors"


def test_train_eval_denoise(trained):
    folder, ckpt = trained
    out = folder / "eval"
    result = r3l("eval", "--checkpoint", ckpt, "--data", folder / "test", "--sigma", 15, "--sigma", 25,
                 "--csv", out / "r.csv", "--json", out / "r.json", "--save-images", out / "img", "--quiet")
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "r.json").read_text())["summary"]
    assert set(summary) == {"15", "25"} and summary["25"]["images"] == 2
    assert len((out / "r.csv").read_text().strip().splitlines()) == 1 + 4
    assert (out / "img" / "sigma25" / "t0.png").is_file()
    result = r3l("eval", "--checkpoint", ckpt, "--data", folder / "test", "--precision", "bf16", "--compile",
                 "--json", out / "bf16.json", "--quiet")
    assert result.returncode == 0, result.stderr
    fast = json.loads((out / "bf16.json").read_text())["summary"]["25"]["psnr"]
    assert fast == pytest.approx(summary["25"]["psnr"], abs=0.1)
    from r3l.cli import main  # another noise model at its own default level (r3l.degradation's)

    assert main(["eval", "--checkpoint", str(ckpt), "--data", str(folder / "test"), "--noise", "salt_pepper",
                 "--json", str(out / "sp.json"), "--quiet"]) == 0
    impulses = json.loads((out / "sp.json").read_text())
    assert impulses["noise"] == "salt_pepper" and set(impulses["summary"]) == {"0.1"}

    # 16-bit colour in, 16-bit colour out of the same size; 8-bit gray stays 8-bit gray.
    rng = np.random.default_rng(0)
    write_image(folder / "c16.png", rng.random((19, 23, 3)), bits=16)
    result = r3l("denoise", "--checkpoint", ckpt, folder / "c16.png", "-o", folder / "c16_out.png")
    assert result.returncode == 0, result.stderr
    _, info = read_image(folder / "c16_out.png")
    assert (info.height, info.width, info.channels, info.bits) == (19, 23, 3, 16)
    result = r3l("denoise", "--checkpoint", ckpt, folder / "test", "--out-dir", folder / "den")
    assert result.returncode == 0, result.stderr
    assert Image.open(folder / "den" / "t1.png").mode == "L"


def test_denoise_folder_skips_bad_files(trained):
    folder, ckpt = trained
    mixed = folder / "mixed"
    mixed.mkdir()
    write_image(mixed / "good.png", np.full((16, 16), 0.5))
    (mixed / "broken.png").write_text("nope")
    result = r3l("denoise", "--checkpoint", ckpt, mixed, "--out-dir", folder / "out")
    assert result.returncode == 1
    assert "skipped" in result.stderr and "broken.png" in result.stderr
    assert "denoised 1 of 2 image(s); 1 failed" in result.stdout
    assert (folder / "out" / "good.png").is_file() and not (folder / "out" / "broken.png").exists()


def test_bad_inputs_give_one_clear_line(trained, tmp_path):
    folder, ckpt = trained
    cfg = folder / "tiny.yaml"
    assert_clean_error(r3l("eval", "--checkpoint", ckpt, "--data", tmp_path / "missing"), "missing", "no such folder")
    (tmp_path / "empty").mkdir()
    assert_clean_error(r3l("eval", "--checkpoint", ckpt, "--data", tmp_path / "empty"), "no image files")
    (tmp_path / "junk.png").write_text("junk")
    assert_clean_error(r3l("denoise", "--checkpoint", ckpt, tmp_path / "junk.png", "-o", tmp_path / "o.png"),
                       "junk.png", "not a readable image")
    assert not (tmp_path / "o.png").exists()
    assert_clean_error(r3l("eval", "--checkpoint", tmp_path / "junk.png", "--data", folder / "test"),
                       "junk.png", "not a safetensors checkpoint")
    assert_clean_error(r3l("train", "--config", cfg, "--run-dir", tmp_path / "r", "--set", "env.sigma=-5"),
                       "env.sigma", "negative")
    assert_clean_error(r3l("train", "--config", cfg, "--run-dir", tmp_path / "r", "--set", "algo.clip=0.1"),
                       "unknown config key algo.clip")
    assert_clean_error(r3l("train", "--config", cfg, "--run-dir", tmp_path / "r", "--set", "data.crop=500"),
                       "data.crop")
    assert_clean_error(r3l("train", "--config", cfg, "--run-dir", tmp_path / "r",
                           "--set", f"data.train={tmp_path / 'empty'}"), "data.train", "no image files")
    assert_clean_error(r3l("train", "--config", cfg, "--run-dir", folder / "run"), "already holds a checkpoint")
    # a checkpoint of another architecture, loaded to resume a run configured differently
    assert_clean_error(r3l("train", "--config", cfg, "--run-dir", folder / "run", "--resume",
                           "--set", "model.features=16"), "config differs", "model.features: 8 -> 16", "--force")
    forced = r3l("train", "--config", cfg, "--run-dir", folder / "run", "--resume", "--force",
                 "--set", "model.features=16")
    assert forced.returncode == 2 and "Traceback" not in forced.stderr
    assert forced.stderr.strip().splitlines()[-1].endswith("expected name=r3l, channels=1, features=16, "
                                                            "n_actions=27, steps=6")
    assert "checkpoint holds" in forced.stderr and "warning: resuming with a changed model.features" in forced.stderr
    bad = r3l("eval", "--checkpoint", ckpt, "--data", folder / "test", "--sigma", "-3")
    assert bad.returncode == 2 and "--sigma" in bad.stderr and "Traceback" not in bad.stderr


def test_config_uses_data_environment_variable(tiny_folder):
    values = tiny_config("${R3L_DATA}/train", "${R3L_DATA}/test", episodes=1)
    cfg = tiny_folder / "env.yaml"
    cfg.write_text(yaml.safe_dump(values))
    ok = r3l("train", "--config", cfg, "--run-dir", tiny_folder / "r", env={"R3L_DATA": str(tiny_folder)})
    assert ok.returncode == 0, ok.stderr
    env = {k: v for k, v in os.environ.items() if k != "R3L_DATA"}
    missing = subprocess.run([sys.executable, "-m", "r3l", "train", "--config", str(cfg), "--run-dir",
                              str(tiny_folder / "r2")], capture_output=True, text=True, env=env)
    assert_clean_error(missing, "data.train", "R3L_DATA", "not set")


def test_help_and_version():
    for command in ("train", "eval", "denoise", "demo"):
        result = r3l(command, "--help")
        assert result.returncode == 0 and "usage: r3l " + command in result.stdout
    result = r3l("--version")
    assert result.returncode == 0 and result.stdout.startswith("r3l ")


@needs_shared
@pytest.mark.parametrize("dataset,published", [("Set12", 30.44), ("BSD68", 29.23)])
def test_dncnn_referee_reproduces_published_psnr(tmp_path, dataset, published):
    """KAIR's DnCNN σ=25 weights through `r3l eval` reproduce the published averages (±0.05 dB)."""
    out = tmp_path / "r.json"
    result = r3l("eval", "--model", "dncnn", "--weights", DNCNN_WEIGHTS, "--data", DATASETS / dataset,
                 "--sigma", 25, "--json", out, "--quiet", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    summary = json.loads(out.read_text())["summary"]["25"]
    assert summary["images"] == {"Set12": 12, "BSD68": 68}[dataset]
    assert summary["psnr"] == pytest.approx(published, abs=0.05)


def test_denoise_explain_writes_action_maps_and_gif(trained):
    folder, ckpt = trained
    out = folder / "explain"
    result = r3l("denoise", "--checkpoint", ckpt, folder / "test" / "t0.png", "-o", folder / "t0_out.png",
                 "--explain", out)
    assert result.returncode == 0, result.stderr
    maps = sorted((out / "t0").glob("step*.png"))
    assert [p.name for p in maps] == [f"step{t}.png" for t in range(1, 7)]
    _, info = read_image(maps[0])
    assert (info.height, info.width, info.channels) == (32, 32, 3)
    gif = Image.open(out / "t0" / "estimate.gif")
    assert gif.n_frames == 7 and gif.size == (32, 32 + 4)


@needs_shared
def test_explain_needs_an_r3l_model(tmp_path):
    write_image(tmp_path / "x.png", np.full((16, 16), 0.5))
    result = r3l("denoise", "--model", "dncnn", "--weights", DNCNN_WEIGHTS, tmp_path / "x.png", "-o",
                 tmp_path / "y.png", "--explain", tmp_path / "e")
    assert_clean_error(result, "--explain needs an R3L checkpoint")


def test_a_reader_that_stops_early_gets_no_traceback():
    """``r3l train --list-configs | head -1``: the pipe closes before r3l has written; it stops quietly."""
    import subprocess

    proc = subprocess.Popen([sys.executable, "-m", "r3l", "train", "--list-configs"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait() == 141 and "Traceback" not in err and "BrokenPipe" not in err, err

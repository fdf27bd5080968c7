"""pixelRL's published models: the reader, its errors, the referee figure, and the benchmark row."""

import json

import numpy as np
import pytest
import torch

from conftest import SHARED, one_error
from r3l.cli import main
from r3l.errors import R3LError
from r3l.inference.denoiser import Denoiser
from r3l.io.images import write_image
from r3l.models.pixelrl import LAYERS, PIXELRL_ARCH, read_pixelrl

NPZ = {s: SHARED / "weights" / "pixelrl" / f"pretrained_{s}.npz" for s in (15, 25, 50)}
needs_pixelrl = pytest.mark.skipif(not NPZ[25].is_file(), reason=f"pixelRL's models not found at {SHARED}")


def fake_archive(path, drop=None, reshape=None):
    """An archive in pixelRL's layout with random values (``drop``: an array left out; ``reshape``: one array
    given a wrong shape)."""
    from r3l.models.spec import build_network

    state = build_network(PIXELRL_ARCH).state_dict()
    arrays = {}
    for source, target in LAYERS.items():
        for part, suffix in (("W", "weight"), ("b", "bias")):
            arrays[f"{source}/{part}"] = state[f"{target}.{suffix}"].numpy()
    if drop:
        del arrays[drop]
    if reshape:
        arrays[reshape] = np.zeros((3, 3), np.float32)
    np.savez(path, **arrays)
    return path, state


def test_reader_maps_every_layer(tmp_path):
    path, state = fake_archive(tmp_path / "mine.npz")
    read = read_pixelrl(path)
    assert read.keys() == state.keys()
    assert all(torch.equal(read[k], state[k]) for k in state)


@pytest.mark.parametrize("case", ["missing", "not_npz", "dropped", "shape"])
def test_bad_files_one_line_errors(tmp_path, capsys, case):
    path = tmp_path / "model.npz"
    if case == "not_npz":
        path.write_bytes(b"not a zip archive at all")
    elif case == "dropped":
        fake_archive(path, drop="diconv4/diconv/W")
    elif case == "shape":
        fake_archive(path, reshape="conv7_pi/model/W")
    expected = {"missing": "no such pixelRL model file", "not_npz": "not a pixelRL model",
                "dropped": "diconv4/diconv/W", "shape": "conv7_pi/model/W"}[case]
    with pytest.raises(R3LError, match=expected):
        read_pixelrl(path)
    write_image(tmp_path / "x.png", np.full((8, 8, 1), 0.5, np.float32))
    code = main(["denoise", "--model", "pixelrl", "--weights", str(path), str(tmp_path / "x.png"),
                 "-o", str(tmp_path / "y.png")])
    one_error(code, capsys.readouterr().err, "model.npz")
    assert not (tmp_path / "y.png").exists()


def test_weights_need_a_known_model(capsys):
    code = main(["eval", "--model", "pixelrl", "--data", "nowhere"])
    one_error(code, capsys.readouterr().err, "--model pixelrl needs --weights", "pretrained_<sigma>.npz")


@needs_pixelrl
def test_published_files_are_distinct_policies():
    first = {s: read_pixelrl(NPZ[s])["encoder.0.weight"] for s in (15, 25, 50)}
    assert not torch.equal(first[15], first[25]) and not torch.equal(first[25], first[50])
    den = Denoiser.from_pixelrl_weights(NPZ[25], "cpu", engine="torch")
    assert (den.arch.n_actions, den.arch.steps, den.arch.task) == (9, 5, "pixelrl_denoise")


@needs_pixelrl
def test_referee_six_bsd68_images(tmp_path, capsys):
    """pixelRL's published σ-25 model, greedy through r3l's pixelRL task, gives 29.16 dB on the first 6 BSD68
    images (28.77 on all 68, measured with the same command without --max-images)."""
    out_json = tmp_path / "pixelrl.json"
    code = main(["eval", "--model", "pixelrl", "--weights", str(NPZ[25]), "--data", str(SHARED / "datasets" / "BSD68"),
                 "--sigma", "25", "--max-images", "6", "--quiet", "--json", str(out_json)])
    assert code == 0
    assert "PSNR 29.16 dB" in capsys.readouterr().out
    assert json.loads(out_json.read_text())["model"]["task"] == "pixelrl_denoise"


@needs_pixelrl
def test_benchmark_pixelrl_row_is_r3l_eval(tmp_path):
    """A ``pixelrl_weights`` method in ``r3l benchmark`` scores what ``r3l eval`` does on the same image."""
    from r3l.evaluation.benchmark import load_benchmark_config, run_benchmark

    data = SHARED / "datasets" / "BSD68"
    cfg_path = tmp_path / "b.yaml"
    cfg_path.write_text(f"data: {data}\nsigma_train: 25\nsigmas: [25]\nmax_images: 1\ndevice: cpu\nmethods:\n"
                        f"  - {{name: pixelRL, pixelrl_weights: {NPZ[25]}}}\n  - {{name: Noisy, noisy: true}}\n")
    summary = run_benchmark(load_benchmark_config(cfg_path), tmp_path / "out", progress=False)
    row = summary["methods"]["pixelRL"]["sigmas"]["25"]
    assert main(["eval", "--model", "pixelrl", "--weights", str(NPZ[25]), "--data", str(data), "--sigma", "25",
                 "--max-images", "1", "--quiet", "--json", str(tmp_path / "e.json")]) == 0
    expected = json.loads((tmp_path / "e.json").read_text())["summary"]["25"]["psnr"]
    assert row["images"] == 1 and row["psnr"] == pytest.approx(expected, abs=1e-6)
    assert row["psnr"] > summary["methods"]["Noisy"]["sigmas"]["25"]["psnr"] + 4

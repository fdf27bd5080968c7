import csv
import json
from collections import defaultdict

import numpy as np
import pytest
import yaml

import r3l.evaluation.benchmark as bench
from conftest import DATASETS, DNCNN_WEIGHTS, needs_shared
from r3l.errors import R3LError
from r3l.evaluation.benchmark import load_benchmark_config, run_benchmark
from r3l.io.images import read_image, write_image
from r3l.models.checkpoint import Checkpoint, save_checkpoint
from r3l.models.networks import R3N, ActorCritic


@pytest.fixture
def small_benchmark(tmp_path):
    """Three 64×64 crops of Set12 images, tiny untrained R3L, pixelRL and R3N checkpoints, BM3D and the noisy
    input."""
    data = tmp_path / "set12"
    for name in ("01", "02", "05"):
        image, _ = read_image(DATASETS / "Set12" / f"{name}.png")
        write_image(data / f"{name}.png", image[96:160, 96:160])
    r3l_arch = {"name": "r3l", "channels": 1, "features": 8, "n_actions": 27, "action_step": 1.0, "steps": 6}
    save_checkpoint(tmp_path / "r3l.safetensors", Checkpoint(r3l_arch, ActorCritic(1, 27, 8, "small").state_dict()))
    pixelrl_arch = {**r3l_arch, "n_actions": 9, "steps": 5, "task": "pixelrl_denoise"}
    save_checkpoint(tmp_path / "pixelrl.safetensors",
                    Checkpoint(pixelrl_arch, ActorCritic(1, 9, 8, "kaiming").state_dict()))
    r3n_arch = {"name": "r3n", "channels": 1, "features": 8, "steps": 6, "head_init": "small"}
    save_checkpoint(tmp_path / "r3n.safetensors", Checkpoint(r3n_arch, R3N(1, 8, 6, "small").state_dict()))
    cfg = {
        "name": "tiny", "data": str(data), "sigma_train": 25, "sigmas": [15, 25], "seed": 0,
        "example_image": "02", "bm3d_workers": 2, "device": "cpu",
        "published": "BSD68",  # crops of Set12: the comparison only exercises the table's layout
        "methods": [
            {"name": "R3L", "checkpoint": str(tmp_path / "r3l.safetensors")},
            {"name": "R3N", "checkpoint": str(tmp_path / "r3n.safetensors")},
            {"name": "pixelRL", "checkpoint": str(tmp_path / "pixelrl.safetensors")},
            {"name": "DnCNN", "dncnn_weights": str(DNCNN_WEIGHTS)},
            {"name": "BM3D", "bm3d": True},
            {"name": "Noisy", "noisy": True},
        ],
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path, tmp_path / "out"


@needs_shared
def test_benchmark_outputs_agree_and_rerun_uses_caches(small_benchmark, monkeypatch):
    path, out = small_benchmark
    summary = run_benchmark(load_benchmark_config(path), out, progress=False)
    for name in ("table.md", "results.csv", "summary.json", "psnr_vs_sigma.png", "examples.png"):
        assert (out / name).is_file(), name

    with open(out / "results.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 6 * 2 * 3
    means = defaultdict(list)
    hashes = defaultdict(set)
    for r in rows:
        means[(r["method"], float(r["sigma_test"]))].append(float(r["psnr"]))
        hashes[(r["image"], r["sigma_test"])].add(r["noisy_sha256"])
    # Every method saw the very same noisy image for each (image, sigma).
    assert all(len(h) == 1 for h in hashes.values()) and len(hashes) == 6

    saved = json.loads((out / "summary.json").read_text())
    table = (out / "table.md").read_text()
    for method, m in saved["methods"].items():
        for sigma in (15.0, 25.0):
            assert m["sigmas"][f"{sigma:g}"]["psnr"] == pytest.approx(np.mean(means[(method, sigma)]), abs=1e-3)
        assert m["average"] == pytest.approx(np.mean([m["sigmas"][s]["psnr"] for s in ("15", "25")]))
        assert f"{m['average']:.2f}" in table.splitlines()[-1]
    # Published numbers sit beside ours for the methods the paper reports.
    dn = saved["methods"]["DnCNN"]["sigmas"]["25"]
    assert dn["published"] == 29.23 and dn["difference"] == pytest.approx(dn["psnr"] - 29.23)
    assert saved["methods"]["Noisy"]["sigmas"]["25"]["published"] is None
    assert "(29.23, " in table
    cfg = load_benchmark_config(path)
    cfg.published = "auto"  # a folder not named BSD68: no published numbers
    assert bench.summarize_benchmark(cfg, [])["methods"]["DnCNN"]["sigmas"]["25"]["published"] is None
    assert saved["methods"]["DnCNN"]["average"] > saved["methods"]["Noisy"]["average"] + 5
    assert saved["methods"]["BM3D"]["average"] > saved["methods"]["Noisy"]["average"] + 5

    # Rerun with the per-image cache gone: BM3D's own cache must answer (computing it would raise).
    (out / "cache.jsonl").unlink()

    def no_bm3d(args):
        raise AssertionError("BM3D ran again instead of using its cache")

    monkeypatch.setattr(bench.methods, "_bm3d_one", no_bm3d)
    again = run_benchmark(load_benchmark_config(path), out, progress=False)
    assert again["methods"]["BM3D"]["average"] == pytest.approx(summary["methods"]["BM3D"]["average"])


@needs_shared
def test_benchmark_path_reproduces_published_dncnn(tmp_path):
    """The benchmark's path gives KAIR's DnCNN the PSNR r3l eval does: 29.61 dB on the first 6 BSD68 images at
    σ 25 (the full set's 29.23, the published figure, is test_cli's referee through the same protocol)."""
    cfg = {"name": "dncnn", "data": str(DATASETS / "BSD68"), "sigma_train": 25, "sigmas": [25], "device": "cpu",
           "max_images": 6, "methods": [{"name": "DnCNN", "dncnn_weights": str(DNCNN_WEIGHTS)}]}
    path = tmp_path / "b.yaml"
    path.write_text(yaml.safe_dump(cfg))
    summary = run_benchmark(load_benchmark_config(path), tmp_path / "out", progress=False)
    dncnn = summary["methods"]["DnCNN"]["sigmas"]["25"]
    assert dncnn["images"] == 6
    assert dncnn["psnr"] == pytest.approx(29.61, abs=0.005)


@pytest.mark.parametrize("text,message", [
    ("data: x\nsigma_train: 25\nsigmas: [25]\n", "methods: required"),
    ("data: x\nsigma_train: 25\nsigmas: []\nmethods: [{name: a, noisy: true}]\n", "sigmas"),
    ("data: x\nsigma_train: -1\nsigmas: [25]\nmethods: [{name: a, noisy: true}]\n", "sigma_train"),
    ("data: x\nsigma_train: 25\nsigmas: [25]\nmethods: [{name: a}]\n", "give exactly one of"),
    ("data: x\nsigma_train: 25\nsigmas: [25]\nmethods: [{name: a, noisy: true, colour: 1}]\n", "methods[0].colour"),
    ("data: x\nsigma_train: 25\nsigmas: [25]\nbogus: 1\nmethods: [{name: a, noisy: true}]\n",
     "unknown benchmark key bogus"),
])
def test_bad_benchmark_configs(tmp_path, text, message):
    path = tmp_path / "b.yaml"
    path.write_text(text)
    with pytest.raises(R3LError, match=message.replace("[", r"\[")):
        load_benchmark_config(path)


@pytest.mark.parametrize("name,methods", [
    ("paper_sigma25", ["R3L", "R3L (tempered)", "R3N", "DnCNN", "IRCNN", "pixelRL", "BM3D", "Noisy"]),
    ("paper_sigma35", ["R3L", "R3L (tempered)", "R3N", "DnCNN", "IRCNN", "BM3D", "Noisy"]),
    ("pixelrl_vs_r3l", ["R3L", "pixelRL", "pixelRL published", "BM3D", "Noisy"]),
])
def test_shipped_benchmark_configs_parse(name, methods):
    from conftest import ROOT

    cfg = load_benchmark_config(ROOT / "benchmarks" / f"{name}.yaml")
    assert [m.name for m in cfg.methods] == methods
    assert len(cfg.sigmas) == 5 and cfg.sigma_train in (25, 35)


def test_optional_methods_are_left_out_when_missing(tiny_folder, tmp_path):
    cfg = {"data": str(tiny_folder / "test"), "sigma_train": 25, "sigmas": [25], "device": "cpu",
           "methods": [{"name": "Mine", "checkpoint": str(tmp_path / "none.safetensors"), "optional": True},
                       {"name": "Zoo", "model": "not-installed", "optional": True},
                       {"name": "Noisy", "noisy": True}]}
    path = tmp_path / "b.yaml"
    path.write_text(yaml.safe_dump(cfg))
    with pytest.warns(UserWarning, match="Mine left out: .*none.safetensors not found"):
        summary = run_benchmark(load_benchmark_config(path), tmp_path / "out", progress=False)
    assert list(summary["methods"]) == ["Noisy"]
    cfg["methods"] = cfg["methods"][:1]
    path.write_text(yaml.safe_dump(cfg))
    with pytest.warns(UserWarning), pytest.raises(R3LError, match="every method was left out"):
        run_benchmark(load_benchmark_config(path), tmp_path / "out2", progress=False)
    cfg["methods"] = [{"name": "Noisy", "noisy": True, "optional": "yes"}]
    path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(R3LError, match="optional: expected true or false"):
        load_benchmark_config(path)

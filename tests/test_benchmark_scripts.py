"""The speed benchmarks run end to end on the CPU at tiny sizes and report consistent JSON."""

import json
import subprocess
import sys

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from conftest import ROOT
from r3l.algos.optim import resolve_precision
from r3l.models.networks import ActorCritic

BENCH = ROOT / "benchmarks"
CPU_AUTO = resolve_precision(torch.device("cpu"), "auto")
"""What ``train.precision: auto`` means on this CPU (bf16 where it has bf16 hardware)."""
TINY = ["--device", "cpu", "--preset", "default", "--batch", "4", "--crop", "16", "--set", "model.features=8"]


def run(script: str, *args: str) -> dict:
    proc = subprocess.run([sys.executable, str(BENCH / script), *args], capture_output=True, text=True,
                          timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def test_episode_benchmark_reports_ratio_flops_and_memory(tmp_path):
    out = tmp_path / "episode.json"
    result = run("episode.py", *TINY, "--episodes", "1", "--out", str(out))
    assert json.loads(out.read_text()) == result
    assert result["device"] and result["precision"] == CPU_AUTO and result["batch"] == 4
    assert result["ratio"] == pytest.approx(result["episode_s"] / result["network_floor_s"])
    assert result["pixel_steps_per_s"] == pytest.approx(4 * 16 * 16 * 6 / result["episode_s"])
    # The rollout's 6 × 4 image forwards plus 4 epochs of forward + backward over the 6 × 4 states: between
    # 24 + 96 (backward free) and 24 + 3 · 96 (backward twice the forward) single-image forwards.
    with FlopCounterMode(display=False) as counter:
        ActorCritic(1, 27, 8, "small")(torch.rand(1, 1, 16, 16))
    per_image = counter.get_total_flops() / 1e9
    assert 120 * per_image < result["network_gflop_per_episode"] <= 312 * per_image
    assert result["achieved_tflops"] == pytest.approx(result["network_gflop_per_episode"] / 1e3 / result["episode_s"])
    assert result["peak_host_mib"] > 0 and result["peak_device_mib"] is None
    assert result["training_episodes"] == 10000  # configs/r3l_gray_sigma25.yaml's length for the default preset
    assert result["training_estimate_min"] == pytest.approx(result["episode_s"] * 10000 / 60)


def test_profile_lists_the_convolutions_first():
    result = run("profile_episode.py", *TINY, "--episodes", "1", "--top", "5")
    names = [row["name"] for row in result["top"]]
    assert len(names) == 5 and any("conv" in n for n in names[:2]), names
    shares = [row["share"] for row in result["top"]]
    assert shares == sorted(shares, reverse=True) and 0 < sum(shares) <= 1.0 + 1e-9


def test_inference_benchmark_tiles_identically(tiny_folder):
    result = run("inference.py", "--data", str(tiny_folder / "test"), "--device", "cpu", "--repeats", "1",
                 "--large", "120", "--tile", "48")
    assert result["images"] == 2 and result["shapes"] == 1 and result["megapixels_per_s"] > 0
    assert result["large"]["crop_identical_to_untiled"] is True
    assert result["large"]["margin"] == 96 and result["large"]["output_shape"] == [1, 1, 120, 120]
    assert result["precision"] == "fp32" and result["output_share_differing_from_fp32"] is None


def test_inference_benchmark_in_bf16_reports_its_difference(tiny_folder):
    result = run("inference.py", "--data", str(tiny_folder / "test"), "--device", "cpu", "--repeats", "1",
                 "--precision", "bf16")
    # An untrained network has many near-tied logits, so bf16 flips a visible share of its greedy actions.
    assert result["precision"] == "bf16" and 0 < result["output_share_differing_from_fp32"] < 0.5


def test_training_run_summary(tiny_folder):
    from conftest import tiny_config
    from r3l.config import from_dict
    from r3l.training.trainer import Trainer

    run_dir = tiny_folder / "run"
    Trainer(from_dict(tiny_config(str(tiny_folder / "train"), str(tiny_folder / "test"), episodes=6,
                                  train__val_every=2, train__log_every=4)), run_dir).train()
    result = run("training_run.py", str(run_dir), "--episodes", "100", "--val-every", "10")
    assert result["episodes_timed"] == 6 and result["validations"] == 3
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    vals = [line["time/val_s"] for line in lines if "time/val_s" in line]
    elapsed = [line["time/elapsed_s"] for line in lines if "time/elapsed_s" in line][-1]
    # Logs at episodes 4 and 6 (the end); validations at 2 and 4 happen before the last log line, the one at 6
    # after it.
    assert result["episode_s"] == pytest.approx((elapsed - vals[0] - vals[1]) / 6)
    assert result["training_estimate_min"] == pytest.approx((100 * result["episode_s"] + 10 * sum(vals) / 3) / 60)


def test_data_loader_benchmark(tiny_folder):
    result = run("data_loader.py", "--data", str(tiny_folder / "train"), "--batch", "4", "--crop", "24",
                 "--workers", "0", "1", "--batches", "10", "--device", "cpu")
    assert [row["workers"] for row in result["settings"]] == [0, 1]
    assert all(row["batches_per_s"] > 0 for row in result["settings"])
    assert result["needed_batches_per_s"] == pytest.approx(1 / 0.19)


def test_busy_time_is_the_union_of_intervals():
    sys.path.insert(0, str(BENCH))
    from profile_episode import busy_microseconds

    assert busy_microseconds([(0, 10), (5, 15), (20, 30), (21, 22)]) == 25
    assert busy_microseconds([]) == 0


def test_learning_benchmark_reports_curves_and_stops_on_time(tmp_path):
    config = ROOT / "configs" / "demo.yaml"
    small = ["--set", "model.features=8", "--set", "data.crop=24", "--set", "data.batch_size=4",
             "--set", "train.log_every=2", "--set", "data.workers=0", "--set", "train.device=cpu"]
    full = run("learning.py", "--config", str(config), "--episodes", "4", "--val-every", "2", *small,
               "--run-dir", str(tmp_path / "a"), "--out", str(tmp_path / "a.json"))
    assert json.loads((tmp_path / "a.json").read_text()) == full
    assert full["episodes"] == 4 and full["precision"] == CPU_AUTO and full["compile"][0] == "off"
    assert [e for e, _ in full["val_psnr"]] == [2, 4] and all(15 < p < 40 for _, p in full["val_psnr"])
    assert [e for e, _ in full["entropy"]] == [2, 4] and 0 < full["final"]["entropy"] <= 3.3
    assert full["episodes_per_s"] > 0 and full["peak_gpu_mib"] is None
    timed = run("learning.py", "--config", str(config), "--episodes", "1000", "--seconds", "0.01",
                "--val-every", "1000", *small, "--run-dir", str(tmp_path / "b"))
    # Stopped at the first log interval past the limit, validated once at the end.
    assert timed["episodes"] == 2 and [e for e, _ in timed["val_psnr"]] == [2]


def test_export_speed_benchmark_compares_onnxruntime_with_pytorch(tiny_folder, tmp_path):
    result = run("export_speed.py", "--data", str(tiny_folder / "test"), "--images", "1", "--threads", "1",
                 "--out", str(tmp_path / "export.json"))
    assert json.loads((tmp_path / "export.json").read_text()) == result
    assert result["images"] == 1 and result["opset"] == 18 and result["model"]["options"]["features"] == 64
    speed = result["seconds_per_image"]
    assert speed["pytorch"] > 0 and speed["onnxruntime"] > 0
    assert result["onnxruntime_speedup"] == pytest.approx(speed["pytorch"] / speed["onnxruntime"])
    assert result["pixels"] == 2 * 32 * 32 and result["pixels_off"] <= result["pixels"] * 1e-2


def test_cpu_speed_benchmark_compares_engines_and_training_settings(tiny_folder, tmp_path):
    import yaml

    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({
        "name": "tiny", "model": {"init": "scratch", "features": 8, "head_init": "small"},
        "data": {"train": "skimage", "val": "", "batch_size": 4, "crop": 16, "workers": 0},
        "ppo": {"epochs": 1, "minibatches": 1}, "train": {"episodes": 10}}))
    result = run("cpu_speed.py", "--data", str(tiny_folder / "test"), "--images", "1", "--size", "24", "28",
                 "--bm3d-images", "1", "--train-config", str(config), "--episodes", "1", "--threads", "2",
                 "--run-root", str(tmp_path / "runs"), "--validate-data", str(tiny_folder / "test"))
    assert result["threads"] == 2 and result["auto"]["train.precision"] in ("fp32", "bf16")
    r3l = result["inference"]["models"]["r3l"]
    assert set(r3l) == {"torch_fp32", "torch_fp32_channels_last", "torch_bf16", "torch_bf16_channels_last",
                        "onnxruntime"}
    assert r3l["torch_fp32"]["pixels_differing_from_torch_fp32"] == 0
    assert r3l["onnxruntime"]["pixels_differing_from_torch_fp32"] <= 0.01
    assert all(row["seconds_per_image"] > 0 and row["psnr"] > 0 for row in r3l.values())
    floor = result["inference"]["floor"]
    # six steps of the paper's policy network: 200,859 weights of multiply-adds per pixel and step
    assert floor["multiply_adds"] == pytest.approx(24 * 28 * 6 * 200_859, rel=0.01)
    assert result["inference"]["r3l_over_floor"]["fp32"]["onnxruntime"] == pytest.approx(
        r3l["onnxruntime"]["seconds_per_image"] / floor["fp32_s"])
    assert result["inference"]["models"]["bm3d"]["bm3d_package"]["images"] == 1
    settings = result["training"]["tiny"]["settings"]
    assert set(settings) == {"fp32_contiguous", "fp32_channels_last", "bf16_contiguous", "bf16_channels_last"}
    assert settings["fp32_contiguous"]["speedup_over_fp32_contiguous"] == 1.0
    validation = result["validation"]
    assert validation["images"] == 2 and validation["auto"]["psnr"] == pytest.approx(validation["torch"]["psnr"],
                                                                                        abs=0.05)

"""The custom-task tutorial (docs/custom-tasks.md): its example trains, raises its reward, and evaluates through
the unchanged command line."""

import json
import sys

import pytest

from conftest import ROOT
from r3l.cli import main
from r3l.inference.denoiser import Denoiser
from r3l.models.checkpoint import load_checkpoint

EXAMPLES = ROOT / "examples"


@pytest.fixture
def examples_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLES))
    yield
    sys.modules.pop("exposure", None)


def test_exposure_example_trains_raises_its_reward_and_evaluates(tmp_path, examples_on_path, capsys):
    run = tmp_path / "run"
    small = ["model.features=16", "data.batch_size=8", "data.crop=32", "train.episodes=40", "train.log_every=10",
             "train.val_every=40", "train.device=cpu", "train.progress=false", "train.tensorboard=false",
             "data.val_max_images=1", "env.low=0.5"]
    args = ["train", "--config", str(EXAMPLES / "exposure.yaml"), "--run-dir", str(run)]
    assert main(args + [a for s in small for a in ("--set", s)]) == 0
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    reward = [r["charts/episode_reward"] for r in rows if "charts/episode_reward" in r]
    assert len(reward) == 4 and reward[-1] > reward[0] + 0.5, reward
    assert any("val/psnr" in r for r in rows)
    # The task's own option reaches the checkpoint, and inference rebuilds the task with it.
    assert load_checkpoint(run / "best.safetensors").arch.task_options["low"] == 0.5
    assert Denoiser.from_checkpoint(run / "best.safetensors", "cpu").env.low == 0.5
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(run / "best.safetensors"), "--data", "skimage-test",
                 "--max-images", "1", "--device", "cpu", "--quiet", "--json", str(tmp_path / "e.json")]) == 0
    result = json.loads((tmp_path / "e.json").read_text())
    assert result["noise"] == "exposure:ExposureEnv"
    assert "input" in capsys.readouterr().out
    row = result["images"][0]
    assert row["psnr_noisy"] < 30  # the test input is the task's own degradation, not Gaussian noise

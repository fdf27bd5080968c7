import numpy as np
import pytest
import torch

from conftest import tiny_config
from r3l.config import from_dict
from r3l.evaluation.protocol import evaluate, summarize
from r3l.inference.denoiser import Denoiser
from r3l.io.data import load_images
from r3l.models.checkpoint import load_checkpoint
from r3l.training.trainer import Trainer


def test_short_training_on_bundled_images_beats_the_noisy_input(tmp_path):
    cfg = from_dict({
        "model": {"init": "scratch", "features": 16, "head_init": "small"},
        "data": {"train": "skimage", "val": "", "batch_size": 8, "crop": 40, "workers": 0},
        "ppo": {"epochs": 4, "minibatches": 2, "lr": 1e-3},
        "train": {"episodes": 60, "log_every": 10, "save_every": 60, "device": "cpu", "progress": False,
                  "tensorboard": False},
    })
    last = Trainer(cfg, tmp_path / "run").train()
    assert last["charts/psnr_gain"] > 2.0
    den = Denoiser.from_checkpoint(tmp_path / "run" / "best.safetensors", "cpu")
    images = [im for im in load_images("skimage-test", 1)]
    for im in images:  # a 128×128 centre crop of each held-out image keeps the test fast
        h, w = im.native.shape[:2]
        im.native = im.native[h // 2 - 64 : h // 2 + 64, w // 2 - 64 : w // 2 + 64]
    s = summarize(evaluate(den, images, [25.0], progress=False))["25"]
    assert s["psnr"] > s["psnr_noisy"] + 2.0
    assert s["ssim"] > s["ssim_noisy"]


@pytest.mark.parametrize("layout", ["off", "on"])
def test_resume_is_bit_identical_to_an_uninterrupted_run(tiny_folder, layout):
    # channels-last: the restored Adam moments must take the parameters' layout (the fused kernel pairs
    # elements in memory order)
    values = tiny_config(str(tiny_folder / "train"), str(tiny_folder / "test"), episodes=6,
                         train__channels_last=layout)
    whole = Trainer(from_dict(values), tiny_folder / "whole")
    whole.train()
    first = Trainer(from_dict(values), tiny_folder / "split")
    first.train(stop_at=3)
    assert load_checkpoint(tiny_folder / "split" / "last.safetensors").episode == 3
    second = Trainer(from_dict(values), tiny_folder / "split", resume=True)
    assert second.start_episode == 3
    second.train()
    a = load_checkpoint(tiny_folder / "whole" / "last.safetensors", with_training_state=True)
    b = load_checkpoint(tiny_folder / "split" / "last.safetensors", with_training_state=True)
    assert a.episode == b.episode == 6
    for key in a.model:
        assert torch.equal(a.model[key], b.model[key]), key
    for index in a.optim_state:
        for name in a.optim_state[index]:
            assert torch.equal(a.optim_state[index][name], b.optim_state[index][name])


def test_training_writes_run_directory(tiny_folder):
    values = tiny_config(str(tiny_folder / "train"), str(tiny_folder / "test"), episodes=2,
                         train__tensorboard=True)
    run = tiny_folder / "run"
    Trainer(from_dict(values), run).train()
    names = {p.name for p in run.iterdir()}
    assert {"last.safetensors", "best.safetensors", "config.yaml", "metrics.jsonl", "tensorboard"} <= names
    import json

    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    logged = set().union(*lines)
    for key in ("charts/episode_reward", "charts/psnr_gain", "losses/policy_loss", "losses/value_loss",
                "losses/entropy", "losses/approx_kl", "losses/clipfrac", "losses/explained_variance",
                "charts/learning_rate", "charts/pixel_steps_per_s", "val/psnr", "time/elapsed_s", "time/val_s"):
        assert key in logged, key
    elapsed = [line["time/elapsed_s"] for line in lines if "time/elapsed_s" in line]
    assert elapsed == sorted(elapsed) and elapsed[0] > 0
    assert all(np.isfinite(v) for line in lines for v in line.values())


@pytest.mark.parametrize("model,extra", [("r3n", {"head_init": "small"}), ("dncnn", {"depth": 5})])
def test_supervised_baselines_lower_the_mse(tmp_path, model, extra):
    cfg = from_dict({
        "model": {"name": model, "init": "scratch", "features": 16, **extra},
        "supervised": {"lr": 1e-3, "lr_schedule": "constant"},
        "data": {"train": "skimage", "val": "", "batch_size": 8, "crop": 40, "workers": 0},
        "train": {"episodes": 60, "log_every": 10, "save_every": 60, "device": "cpu", "progress": False,
                  "tensorboard": False},
    })
    Trainer(cfg, tmp_path / "run").train()
    import json

    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["losses/mse"] < 0.7 * lines[0]["losses/mse"]
    den = Denoiser.from_checkpoint(tmp_path / "run" / "best.safetensors", "cpu")
    assert den.arch.name == model
    images = load_images("skimage-test", 1)
    for im in images:
        im.native = im.native[200:328, 200:328]
    s = summarize(evaluate(den, images, [25.0], progress=False))["25"]
    assert s["psnr"] > s["psnr_noisy"] + 1.0


def test_holdout_validation_keeps_images_out_of_training(tiny_folder):
    values = tiny_config(str(tiny_folder / "train"), "holdout", episodes=2, data__holdout=2)
    trainer = Trainer(from_dict(values), tiny_folder / "run")
    assert [im.name for im in trainer.train_images] == ["im0", "im1", "im2", "im3"]
    assert [im.name for im in trainer.val_images] == ["im4", "im5"]
    assert "val/psnr" in trainer.train()
    from r3l.errors import R3LError

    with pytest.raises(R3LError, match="data.val: holdout needs data.holdout"):
        Trainer(from_dict(tiny_config(str(tiny_folder / "train"), "holdout")), tiny_folder / "bad")
    with pytest.raises(R3LError, match="data.holdout: 6 of 6"):
        Trainer(from_dict(tiny_config(str(tiny_folder / "train"), "holdout", data__holdout=6)), tiny_folder / "bad")


def test_learning_rate_groups_and_warmup():
    from r3l.algos import LRSchedule
    from r3l.algos.optim import learning_rate, make_adam, set_lr
    from r3l.models.networks import ActorCritic

    net = ActorCritic(1, 5, 4)
    opt = make_adam(net, 1e-3, lr_scales={"encoder": 0.1, "value": 10.0})
    set_lr(opt, 2e-3)
    by_name = {id(p): n.split(".")[0] for n, p in net.named_parameters()}
    for group in opt.param_groups:
        scale = {"encoder": 0.1, "value": 10.0}.get(by_name[id(group["params"][0])], 1.0)
        assert all({"encoder": 0.1, "value": 10.0}.get(by_name[id(p)], 1.0) == scale for p in group["params"])
        assert group["lr"] == pytest.approx(2e-3 * scale)
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(net.parameters()))
    cfg = LRSchedule(lr=1.0, lr_schedule="constant", lr_warmup=4)
    assert [learning_rate(cfg, e, 100) for e in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]


def test_value_warmup_moves_only_the_value_head(tiny_folder):
    values = tiny_config(str(tiny_folder / "train"), "", episodes=2, ppo__value_warmup=2)
    trainer = Trainer(from_dict(values), tiny_folder / "run")
    before = {k: v.clone() for k, v in trainer.net.state_dict().items()}
    trainer.train()
    after = trainer.net.state_dict()
    changed = {k.split(".")[0] for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"value"}


def test_log_mse_weighs_each_image_by_its_own_error():
    from r3l.algos.supervised import LOG_MSE_FLOOR, Supervised
    from r3l.models.spec import build_network
    from r3l.tasks import ResidualDenoiseEnv

    cfg = from_dict({"model": {"name": "r3n", "init": "scratch", "features": 8},
                     "supervised": {"loss": "log_mse"}, "data": {"train": "skimage", "val": ""}})
    net = build_network({"name": "r3n", "channels": 1, "features": 8, "steps": 2})
    algo = Supervised(net, cfg.algo, ResidualDenoiseEnv())
    clean = torch.rand(2, 1, 6, 6)
    errors = torch.stack([torch.full((1, 6, 6), 0.01), torch.full((1, 6, 6), 0.1)])  # 40 dB and 20 dB
    estimate = (clean + errors).requires_grad_()
    loss = algo.loss(estimate, clean)
    assert loss.item() == pytest.approx(float(np.mean(np.log([1e-4 + LOG_MSE_FLOOR, 1e-2 + LOG_MSE_FLOOR]))), rel=1e-5)
    loss.backward()
    light, heavy = (estimate.grad[i].abs().sum().item() for i in range(2))
    assert light > 5 * heavy  # mse would give the heavy image 10× the light one's gradient; log_mse ~9× the other way
    with pytest.raises(Exception, match="algo.loss"):
        from_dict({"model": {"name": "r3n"}, "algo": {"loss": "l1"}})

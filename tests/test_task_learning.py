"""Short CPU trainings of the colour and filter-action tasks raise PSNR over their input.

A 16-feature actor-critic from scratch, 8 crops of 32² per episode, validated on two held-out images at σ 25.
Measured on 2 CPU cores (docs/experiments.md, "Tasks"): colour R3L 20.77 dB (the noisy input) → 24.79 dB after
80 episodes, pixelRL 22.47 dB (untrained policy) → 25.40 dB after 60; the thresholds leave room for other
CPUs' arithmetic.
"""


from conftest import DATASETS, needs_shared
from r3l.config import from_dict
from r3l.training.trainer import Trainer


def small_config(channels: int, train: str, val: str, episodes: int, env: dict | None = None) -> dict:
    return {
        "seed": 0,
        "env": env or {},
        "ppo": {"lr": 1e-3},
        "model": {"init": "scratch", "features": 16, "head_init": "small", "channels": channels},
        "data": {"train": str(DATASETS / train), "val": str(DATASETS / val), "val_max_images": 2,
                 "batch_size": 8, "crop": 32, "workers": 0},
        "train": {"episodes": episodes, "log_every": 10, "val_every": episodes, "save_every": 1000,
                  "device": "cpu", "progress": False, "tensorboard": False},
    }


@needs_shared
def test_colour_r3l_learns_on_the_cpu(tmp_path):
    trainer = Trainer(from_dict(small_config(3, "Kodak24", "CBSD68", 80)), tmp_path / "run")
    before = trainer.validate()  # the "no change" start: the noisy input's PSNR
    trainer.train()
    after = trainer.validate()
    assert after > before + 3.0, (before, after)


@needs_shared
def test_pixelrl_filter_actions_learn_on_the_cpu(tmp_path):
    env = {"name": "pixelrl_denoise", "n_actions": 9, "steps": 5}
    cfg = small_config(1, "Train400", "BSD68", 60, env)
    cfg["model"]["head_init"] = "kaiming"
    trainer = Trainer(from_dict(cfg), tmp_path / "run")
    before = trainer.validate()  # an untrained policy: random filters already smooth some noise
    trainer.train()
    after = trainer.validate()
    assert after > before + 1.0 and after > 20.2 + 4.0, (before, after)  # BSD68 noisy input at σ 25: 20.2 dB

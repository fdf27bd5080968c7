import pytest

from conftest import ROOT
from r3l.config import SEED_PRESET, from_dict, load_config
from r3l.errors import R3LError


def test_presets_and_overrides():
    seed = from_dict({"preset": "seed"})
    assert (seed.algo.gamma, seed.algo.gae_lambda, seed.algo.clip_eps, seed.algo.epochs) == (0.95, 1.0, 0.5, 15)
    assert seed.algo.minibatches == 1 and seed.algo.ent_coef == 0 and seed.algo.lr_schedule == "poly"
    assert seed.data.batch_size == 32 and seed.data.crop == 70 and seed.train.episodes == 30001
    over = from_dict({"preset": "seed", "algo": {"lr": 5e-4}}, ["data.crop=64", "env.sigma=[10, 50]"])
    assert over.algo.lr == 5e-4 and over.algo.epochs == SEED_PRESET["ppo"]["epochs"]
    assert over.data.crop == 64 and over.env.sigma == [10.0, 50.0]
    # YAML reads 1e-3 without a dot as a string; it is still a number here.
    assert from_dict({"algo": {"lr": "1e-3"}}, ["algo.adam_eps=1e-6"]).algo.adam_eps == 1e-6
    assert from_dict({}, ["algo.lr=1e-3"]).algo.lr == 1e-3


@pytest.mark.parametrize("name", ["r3l_gray_sigma25", "r3l_gray_sigma35", "seed_preset_sigma25", "demo",
                                  "r3n_gray_sigma25", "r3n_gray_sigma35", "dncnn_gray_sigma25", "dncnn_gray_sigma35",
                                  "r3l_color_sigma25", "r3l_gray_blind", "r3l_color_blind", "r3l_gray_poisson",
                                  "r3l_gray_spatial", "r3l_gray_mixed", "pixelrl_gray_sigma25",
                                  "pixelrl_gray_salt_pepper", "r3l_gray_sigma25_group", "r3l_gray_sigma35_group",
                                  "r3l_gray_blind_group", "r3l_gray_sigma25_tempered",
                                  "r3l_gray_sigma35_tempered"])
def test_shipped_configs_load(name):
    cfg = load_config(ROOT / "configs" / f"{name}.yaml")
    assert cfg.name == name


@pytest.mark.parametrize("limit", [None, 10.0])
def test_a_run_directory_s_config_reads_back_with_its_nulls(tmp_path, limit):
    """What ``r3l train`` writes to a run's config.yaml (an unset optional key as ``null``) is what ``--resume``
    reads."""
    from r3l.training.trainer import save_config

    cfg = from_dict({"data": {"train": "skimage"}}, [f"algo.learn_max_error={'null' if limit is None else limit}"])
    save_config(cfg, tmp_path / "config.yaml")
    assert "learn_max_error: " + ("null" if limit is None else "10.0") in (tmp_path / "config.yaml").read_text()
    again = load_config(tmp_path / "config.yaml")
    assert again.algo.learn_max_error == limit and again.to_dict() == cfg.to_dict()


@pytest.mark.parametrize("values,overrides,message", [
    ({"algo": {"learning_rate": 1}}, [], "unknown config key algo.learning_rate"),
    ({"bogus": 1}, [], "unknown config key bogus"),
    ({"env": {"sigma": -5}}, [], "env.sigma: must not be negative"),
    ({}, ["env.sigma=[30, 10]"], "env.sigma"),
    ({"data": {"crop": 0}}, [], "data.crop: must be positive"),
    ({"algo": {"epochs": "many"}}, [], "algo.epochs: expected a whole number"),
    ({"algo": {"gamma": 1.5}}, [], "algo.gamma: must lie in"),
    ({"algo": {"lr": float("nan")}}, [], "algo.lr: expected a finite number"),
    ({"train": {"progress": "yes"}}, [], "train.progress: expected true or false"),
    ({"preset": "fast"}, [], "preset"),
    ({"algo": {"minibatches": 3}}, [], "algo.minibatches"),
    ({"env": {"n_actions": 26}}, [], "env.n_actions"),
    ({"model": {"channels": 2}}, [], "model.channels"),
    ({"env": 3}, [], "env: expected a mapping"),
    ({}, ["noequals"], "expected key=value"),
    ({"train": {"deterministic": True, "cudnn_benchmark": "on"}}, [], "train.cudnn_benchmark: 'on' picks"),
    ({"train": {"precision": "fp8"}}, [], "train.precision"),
    ({"train": {"compile": "yes"}}, [], "train.compile"),
    ({"algo": {"explore_temperature": "hot"}}, [], "algo.explore_temperature: 'hot' is neither a number nor a list"),
    ({"algo": {"learn_max_error": "far"}}, [], "algo.learn_max_error: 'far' is neither a number nor null"),
])
def test_bad_values_name_the_key(values, overrides, message):
    with pytest.raises(R3LError, match=message.replace("[", r"\[")):
        from_dict(values, overrides)


def test_bad_files(tmp_path):
    with pytest.raises(R3LError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("env: [unclosed\n")
    with pytest.raises(R3LError, match="bad.yaml: not valid YAML"):
        load_config(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(R3LError, match="expected a mapping"):
        load_config(listy)
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("algo:\n  clip: 0.1\n")
    with pytest.raises(R3LError, match="unknown.yaml: unknown config key algo.clip"):
        load_config(unknown)


SWITCHES = ["train.channels_last", "train.tf32", "train.cudnn_benchmark", "train.compile"]


@pytest.mark.parametrize("word,meaning", [("off", False), ("no", False), ("false", False),
                                          ("on", True), ("yes", True), ("true", True)])
def test_yaml_booleans_mean_on_and_off_for_every_switch(tmp_path, word, meaning):
    """YAML 1.1 reads on/off/yes/no as booleans: in a file and in --set they still mean on and off."""
    section = "\n".join(f"  {key.split('.')[1]}: {word}" for key in SWITCHES)
    path = tmp_path / "c.yaml"
    path.write_text(f"train:\n{section}\n")
    from_file = load_config(path)
    from_set = load_config(None, [f"{key}={word}" for key in SWITCHES])
    for cfg in (from_file, from_set):
        assert cfg.train.channels_last == cfg.train.tf32 == cfg.train.cudnn_benchmark == ("on" if meaning else "off")
        assert cfg.train.compile == ("all" if meaning else "off")


def test_a_boolean_for_a_string_key_without_on_off_is_an_error():
    with pytest.raises(R3LError, match="train.precision: expected a string, got False"):
        from_dict({}, ["train.precision=off"])


def test_validation_levels_are_checked_by_the_task():
    base = {"data": {"train": "skimage", "val_sigma": [0.2, 1.5]}}
    with pytest.raises(R3LError, match="config key data.val_sigma: the salt_pepper noise density must lie in"):
        from_dict({**base, "env": {"name": "pixelrl_denoise", "noise": "salt_pepper", "sigma": 0.1}})
    assert from_dict({**base, "env": {"sigma": 25}}).data.val_sigma == [0.2, 1.5]  # Gaussian σ: any ≥ 0


def test_a_shipped_config_is_found_by_name(tmp_path, capsys):
    from r3l.cli import main
    from r3l.config import SHIPPED_CONFIGS, config_path

    assert config_path("r3l_gray_sigma25_group") == SHIPPED_CONFIGS / "r3l_gray_sigma25_group.yaml"
    assert config_path("r3l_gray_sigma25.yaml") == SHIPPED_CONFIGS / "r3l_gray_sigma25.yaml"
    local = tmp_path / "mine.yaml"
    assert config_path(str(local)) == local  # a path stays a path
    assert main(["train", "--list-configs"]) == 0
    assert "r3l_gray_sigma25_group" in capsys.readouterr().out
    assert main(["train", "--config", "no_such_config"]) == 2
    assert "no_such_config: config file not found" in capsys.readouterr().err


def test_the_algorithm_is_chosen_in_its_own_section():
    assert from_dict({}).algo.name == "ppo"  # the model's registry entry's algorithm
    r3n = from_dict({"model": {"name": "r3n"}, "algo": {"loss": "log_mse"}})
    assert r3n.algo.name == "supervised" and r3n.algo.loss == "log_mse" and not hasattr(r3n, "ppo")
    with pytest.raises(R3LError, match="algo.name: unknown algorithm 'sac'; registered: ppo, supervised"):
        from_dict({"algo": {"name": "sac"}})
    with pytest.raises(R3LError, match="algo.name: supervised trains deterministic networks and the model r3l is "
                                       "a policy; its algorithm is ppo"):
        from_dict({"algo": {"name": "supervised"}})
    with pytest.raises(R3LError, match="unknown config key algo.loss"):  # r3l's algorithm is PPO's options
        from_dict({"algo": {"loss": "mse"}})


def test_configs_with_a_section_per_algorithm_still_read():
    old = {"model": {"name": "r3n"}, "supervised": {"lr": 2e-4}, "ppo": {"lr": 7.0, "epochs": 99}}
    cfg = from_dict(old, ["supervised.loss=log_mse"])
    assert (cfg.algo.name, cfg.algo.lr, cfg.algo.loss) == ("supervised", 2e-4, "log_mse")
    assert from_dict({"ppo": {"lr": 2e-4, "epochs": 3}}, ["algo.epochs=5"]).algo.epochs == 5  # algo wins
    assert from_dict({"ppo": {"lr": 2e-4}}, ["ppo.epochs=5"]).algo.epochs == 5
    stored = load_config(ROOT / "tests" / "data" / "v2_run_r3l" / "config.yaml")
    assert stored.algo.name == "ppo" and stored.algo.lr == 1e-3


def test_a_registered_algorithm_is_chosen_by_name():
    from dataclasses import dataclass

    from r3l.algos import ALGORITHMS, Supervised, SupervisedConfig, register_algorithm

    @dataclass
    class SmoothOptions(SupervisedConfig):
        smoothness: float = 0.5

    class Smooth(Supervised):
        Options = SmoothOptions

    register_algorithm("smooth", Smooth)
    try:
        cfg = from_dict({"model": {"name": "r3n"}, "algo": {"name": "smooth", "smoothness": 0.1}})
        assert cfg.algo.smoothness == 0.1 and isinstance(cfg.algo, SmoothOptions)
        with pytest.raises(R3LError, match="algo.name: smooth trains deterministic networks"):
            from_dict({"algo": {"name": "smooth"}})
    finally:
        del ALGORITHMS["smooth"]


def test_a_resume_may_change_the_fields_marked_resumable_only(tmp_path):
    from r3l.config import config_class
    from r3l.schema import resumable_keys
    from r3l.training.trainer import check_resume_config

    keys = resumable_keys(config_class())
    assert {"name", "train.val_every", "train.device", "data.val_sigma", "data.workers"} <= keys
    assert not keys & {"seed", "algo.lr", "env.sigma", "model.features", "data.batch_size", "train.episodes"}
    # A run directory written before the algo section, with a section per algorithm:
    saved = load_config(ROOT / "tests" / "data" / "v2_run_r3l" / "config.yaml").to_dict()
    saved["ppo"] = {k: v for k, v in saved.pop("algo").items() if k != "name"}
    saved["supervised"] = {"lr": 1e-3}
    current = load_config(ROOT / "tests" / "data" / "v2_run_r3l" / "config.yaml", ["train.val_every=7"])
    check_resume_config(saved, current.to_dict(), tmp_path, force=False)
    changed = load_config(ROOT / "tests" / "data" / "v2_run_r3l" / "config.yaml", ["ppo.lr=0.5"])
    with pytest.raises(R3LError, match=r"differs from the run's \(algo.lr: 0.001 -> 0.5\)"):
        check_resume_config(saved, changed.to_dict(), tmp_path, force=False)
    # An R3N run: PPO's options are not its algorithm's, so setting one changes nothing.
    r3n = from_dict({"model": {"name": "r3n"}}).to_dict()
    check_resume_config(r3n, from_dict({"model": {"name": "r3n"}}, ["ppo.lr=0.5"]).to_dict(), tmp_path, False)

"""The model registry, ``r3l models``, ``Denoiser.pretrained``, the default model of ``r3l denoise``, and the
inference options (expected-action decoding, the ×8 self-ensemble)."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import DATASETS, needs_shared, train_tiny
from r3l.cli import main
from r3l.errors import R3LError
from r3l.evaluation.cards import pack_model, subset_psnr
from r3l.inference.denoiser import Denoiser
from r3l.models.spec import ArchSpec, build_network
from r3l.models.zoo import DEFAULT_MODEL, PACKAGE_FOLDER, find_model, list_models

SHIPPED = sorted(p.stem for p in PACKAGE_FOLDER.glob("*.json"))


@needs_shared
@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_model_reproduces_its_subset_psnr(name, monkeypatch):
    monkeypatch.delenv("R3L_MODELS", raising=False)
    card = find_model(name)
    assert card.path.stat().st_size <= 2 * 1024 * 1024
    assert (card.bsd68_psnr or card.results) and card.training.get("config")  # measured on whole sets
    low, high = (card.sigma, card.sigma) if not isinstance(card.sigma, list) else card.sigma
    assert low <= card.check.sigma <= high  # the check measures the model where it was trained
    assert subset_psnr(card, DATASETS) == pytest.approx(card.check.psnr, abs=0.01)


def test_no_model_gives_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("R3L_MODELS", str(tmp_path))
    monkeypatch.setattr("r3l.models.zoo.PACKAGE_FOLDER", tmp_path / "none")
    with pytest.raises(R3LError, match="no trained models are installed"):
        Denoiser.pretrained()
    Image.new("L", (8, 8), 9).save(tmp_path / "x.png")
    assert main(["denoise", str(tmp_path / "x.png"), "-o", str(tmp_path / "y.png")]) == 2
    assert "no trained models are installed" in capsys.readouterr().err
    assert not (tmp_path / "y.png").exists()


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    """A registry folder holding a tiny R3L packed as the default model, its subset check on two BSD68 images."""
    if not (DATASETS / "BSD68").is_dir():
        pytest.skip("research data not found")
    root = train_tiny(tmp_path_factory.mktemp("zoo"))
    card = pack_model(root / "run" / "last.safetensors", DEFAULT_MODEL, "tiny test model", DATASETS,
                      root / "models", ["test001", "test002"], training={"device": "cpu", "minutes": 0.01},
                      bsd68_psnr={"25": 20.0})
    return root, card


def test_pack_list_and_pretrained(registry, monkeypatch):
    root, card = registry
    monkeypatch.setenv("R3L_MODELS", str(root / "models"))
    assert [c.name for c in list_models()][:1] == [DEFAULT_MODEL]
    stored = json.loads((root / "models" / f"{DEFAULT_MODEL}.json").read_text())
    assert stored["check"]["images"] == ["test001", "test002"] and stored["training"]["config"]["seed"] == 0
    assert subset_psnr(find_model(), DATASETS) == pytest.approx(card.check.psnr, abs=0.01)
    denoiser = Denoiser.pretrained(device="cpu")
    reference = Denoiser.from_checkpoint(root / "run" / "last.safetensors", "cpu")
    x = torch.rand(1, 1, 20, 20)
    assert torch.equal(denoiser(x), reference(x))
    with pytest.raises(R3LError, match=f"model 'nope' not found; available: {DEFAULT_MODEL}"):
        find_model("nope")


def test_models_command_lists_and_checks(registry, monkeypatch, capsys, tmp_path):
    root, card = registry
    monkeypatch.setenv("R3L_MODELS", str(root / "models"))
    monkeypatch.setenv("R3L_DATA", str(DATASETS))
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert DEFAULT_MODEL in out and "(default gray)" in out and "BSD68@25 20.00 dB" in out
    # `check NAME` measures that model alone (the shipped ones have their own test below)
    assert main(["models", "check", DEFAULT_MODEL]) == 0
    out = capsys.readouterr().out
    assert "ok" in out and len(out.strip().splitlines()) == 1 and out.startswith(DEFAULT_MODEL)
    assert main(["models", "check", "nope"]) == 2
    assert "model 'nope' not found" in capsys.readouterr().err
    # A card whose stored PSNR is off by more than 0.01 dB fails the check.
    bad = tmp_path / "bad"
    bad.mkdir()
    data = json.loads((root / "models" / f"{DEFAULT_MODEL}.json").read_text())
    data["check"]["psnr"] += 0.05
    (bad / f"{DEFAULT_MODEL}.json").write_text(json.dumps(data))
    (bad / f"{DEFAULT_MODEL}.safetensors").write_bytes((root / "models" / f"{DEFAULT_MODEL}.safetensors").read_bytes())
    monkeypatch.setenv("R3L_MODELS", str(bad))
    assert main(["models", "check", DEFAULT_MODEL]) == 1
    assert "MISMATCH" in capsys.readouterr().out


def test_denoise_without_checkpoint_uses_the_default_model(registry, monkeypatch, tmp_path, capsys):
    root, _ = registry
    monkeypatch.setenv("R3L_MODELS", str(root / "models"))
    rng = np.random.default_rng(5)
    Image.fromarray(rng.integers(0, 256, (18, 22), dtype=np.uint8), "L").save(tmp_path / "g.png")
    Image.fromarray(rng.integers(0, 256, (18, 22, 3), dtype=np.uint8), "RGB").save(tmp_path / "c.png")
    for name, mode in (("g", "L"), ("c", "RGB")):
        assert main(["denoise", str(tmp_path / f"{name}.png"), "-o", str(tmp_path / f"{name}_out.png")]) == 0
        with Image.open(tmp_path / f"{name}_out.png") as im:
            assert im.mode == mode and im.size == (22, 18)
    capsys.readouterr()
    assert main(["denoise", "--model", DEFAULT_MODEL, str(tmp_path / "g.png"), "-o", str(tmp_path / "m.png")]) == 0
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "m.png")),
                                  np.asarray(Image.open(tmp_path / "g_out.png")))


def _r3l(seed: int = 0, certain: bool = False):
    torch.manual_seed(seed)
    arch = {"name": "r3l", "channels": 1, "features": 8, "n_actions": 9, "action_step": 2.0, "steps": 3}
    net = build_network(arch)
    if certain:  # every pixel's policy puts all its mass on action 6
        with torch.no_grad():
            net.policy[-1].weight.zero_()
            net.policy[-1].bias.fill_(-50.0)
            net.policy[-1].bias[6] = 50.0
    return net, arch


def test_expected_decoding_is_greedy_for_a_certain_policy_and_differs_otherwise():
    x = torch.rand(2, 1, 16, 16)
    net, arch = _r3l(certain=True)
    greedy, expected = Denoiser(net, arch, "cpu"), Denoiser(net, arch, "cpu", decoding="expected")
    torch.testing.assert_close(expected(x), greedy(x), atol=1e-6, rtol=0)
    net, arch = _r3l()
    greedy, expected = Denoiser(net, arch, "cpu"), Denoiser(net, arch, "cpu", decoding="expected")
    steps = expected.trajectory(x)
    largest = (arch["n_actions"] // 2) * arch["action_step"] / 255
    assert all((b - a).abs().max() <= largest + 1e-6 for a, b in zip(steps, steps[1:]))
    assert not torch.allclose(expected(x), greedy(x))
    with pytest.raises(R3LError, match="decoding 'sample'"):
        Denoiser(net, arch, "cpu", decoding="sample")


def test_self_ensemble_is_equivariant_to_flips_and_rotations():
    net, arch = _r3l(seed=1)
    x = torch.rand(1, 1, 12, 12)
    plain, ensemble = Denoiser(net, arch, "cpu"), Denoiser(net, arch, "cpu", self_ensemble=True)
    for transform in (lambda t: t.flip(3), lambda t: torch.rot90(t, 1, dims=(2, 3))):
        torch.testing.assert_close(ensemble(transform(x)), transform(ensemble(x)), atol=1e-5, rtol=0)
    assert not torch.allclose(plain(x.flip(3)), plain(x).flip(3), atol=1e-5)


def test_the_web_page_offers_installed_models(registry, monkeypatch):
    from r3l.web.server import AUTO_MODEL, model_loaders

    root, _ = registry
    monkeypatch.setenv("R3L_MODELS", str(root / "models"))
    loaders = model_loaders([], [], "cpu")
    assert list(loaders)[:2] == [AUTO_MODEL, DEFAULT_MODEL] and set(loaders) == {AUTO_MODEL, DEFAULT_MODEL, *SHIPPED}
    assert loaders[DEFAULT_MODEL]().arch.name == "r3l"
    assert loaders[AUTO_MODEL]().name == DEFAULT_MODEL  # the page's first choice: the default for each image
    assert list(model_loaders([], [DEFAULT_MODEL], "cpu")) == [DEFAULT_MODEL]
    monkeypatch.setenv("R3L_MODELS", str(root / "nothing"))
    (root / "nothing").mkdir(exist_ok=True)
    monkeypatch.setattr("r3l.models.zoo.PACKAGE_FOLDER", root / "none")
    with pytest.raises(R3LError, match="no model to serve"):
        model_loaders([], [], "cpu")


def _constant_policy(channels: int, action: int, path):
    """An R3L checkpoint whose policy picks ``action`` at every pixel (no training needed)."""
    from r3l.models.checkpoint import Checkpoint, save_checkpoint
    from r3l.models.spec import ArchSpec

    spec = ArchSpec.of("r3l", channels=channels, features=8, n_actions=27, action_step=1.0, steps=6)
    net = build_network(spec)
    with torch.no_grad():
        net.policy[-1].weight.zero_()
        net.policy[-1].bias.copy_(torch.where(torch.arange(27) == action, 10.0, 0.0).repeat(channels))
    save_checkpoint(path, Checkpoint(spec, net.state_dict(), {}, 0, {}))


def constant_defaults(tmp_path, monkeypatch):
    """The only registry: a gray default whose policy adds 13 levels at every step (6 × 13 in all) and a colour
    default that keeps the image; returns its folder."""
    from r3l.io.files import write_json
    from r3l.models.zoo import DEFAULT_COLOUR_MODEL, ModelCard, SubsetCheck

    models = tmp_path / "models"
    for name, channels, action in ((DEFAULT_MODEL, 1, 26), (DEFAULT_COLOUR_MODEL, 3, 13)):
        _constant_policy(channels, action, models / f"{name}.safetensors")
        card = ModelCard(name, "test", ArchSpec.of("r3l", channels=channels), 25.0,
                         SubsetCheck("BSD68", [], 25.0, 0, 0.0))
        write_json(card.to_dict(), models / f"{name}.json")
    monkeypatch.setenv("R3L_MODELS", str(models))
    monkeypatch.setattr("r3l.models.zoo.PACKAGE_FOLDER", tmp_path / "none")
    return models


def test_denoise_picks_the_model_that_fits_the_input(tmp_path, monkeypatch, capsys):
    """Without --model, gray images go to the gray default and colour images to the colour default when it is
    installed (told apart here by what they do: the 'gray' model brightens by 6 × 13 levels, the colour one keeps
    the image); each stands in for the other when it is the only one installed."""
    from r3l.models.zoo import DEFAULT_COLOUR_MODEL

    models = constant_defaults(tmp_path, monkeypatch)
    gray = np.full((8, 9), 100, np.uint8)
    colour = np.dstack([np.full((8, 9), v, np.uint8) for v in (30, 120, 200)])
    Image.fromarray(gray).save(tmp_path / "g.png")
    Image.fromarray(colour).save(tmp_path / "c.png")
    out = tmp_path / "out"
    assert main(["denoise", str(tmp_path / "g.png"), str(tmp_path / "c.png"), "--out-dir", str(out),
                 "--device", "cpu", "--strength", "1"]) == 0
    said = capsys.readouterr().out
    assert f"{DEFAULT_MODEL} (1)" in said and f"{DEFAULT_COLOUR_MODEL} (1)" in said
    assert np.array_equal(np.asarray(Image.open(out / "g.png")), gray + 78)
    assert np.array_equal(np.asarray(Image.open(out / "c.png")), colour)
    assert Denoiser.pretrained(channels=3, device="cpu").channels == 3
    assert Denoiser.pretrained(device="cpu").channels == 1

    # only the colour model: it serves gray images too (a gray image as three equal channels)
    (models / f"{DEFAULT_MODEL}.json").rename(tmp_path / "gray.json")
    assert main(["denoise", str(tmp_path / "g.png"), "-o", str(out / "g2.png"), "--device", "cpu",
                 "--strength", "1"]) == 0
    assert f"{DEFAULT_COLOUR_MODEL} (1)" in capsys.readouterr().out
    assert np.array_equal(np.asarray(Image.open(out / "g2.png")), gray)
    (tmp_path / "gray.json").rename(models / f"{DEFAULT_MODEL}.json")

    (models / f"{DEFAULT_COLOUR_MODEL}.json").unlink()
    assert main(["denoise", str(tmp_path / "c.png"), "-o", str(out / "c2.png"), "--device", "cpu",
                 "--strength", "1"]) == 0
    assert f"{DEFAULT_MODEL} (1)" in capsys.readouterr().out
    assert np.array_equal(np.asarray(Image.open(out / "c2.png")), np.minimum(colour.astype(int) + 78, 255))


def test_cli_pack_takes_benchmark_row_and_eval_reports(registry, tmp_path, capsys):
    root, _ = registry
    bench = tmp_path / "summary.json"
    bench.write_text(json.dumps({"methods": {"R3L": {"sigmas": {"15": {"psnr": 21.123456}, "25": {"psnr": 19.5}}}}}))
    report = tmp_path / "set12.json"
    report.write_text(json.dumps({"data": "/somewhere/Set12", "summary": {"25": {"psnr": 18.25}}}))
    args = ["models", "pack", "--checkpoint", str(root / "run" / "last.safetensors"), "--name", "tiny-x",
            "--out", str(tmp_path / "models"), "--data-root", str(DATASETS), "--images", "test001",
            "--benchmark", str(bench)]
    assert main(args) == 2
    assert "no method named 'tiny-x'" in capsys.readouterr().err
    assert main(args + ["--row", "R3L", "--eval", str(report)]) == 0
    card = json.loads((tmp_path / "models" / "tiny-x.json").read_text())
    assert card["bsd68_psnr"] == {"15": 21.1235, "25": 19.5} and card["results"] == {"Set12": {"25": 18.25}}
    report.write_text(json.dumps({"rows": []}))
    assert main(args + ["--row", "R3L", "--eval", str(report)]) == 2
    assert "not the JSON of r3l eval --json" in capsys.readouterr().err
    assert main(args[:-2] + ["--name", "tiny-y", "--check-sigma", "15"]) == 0
    assert json.loads((tmp_path / "models" / "tiny-y.json").read_text())["check"]["sigma"] == 15.0
    assert main(args[:-2] + ["--check-sigma", "-1"]) == 2
    assert "--check-sigma -1" in capsys.readouterr().err


def test_gray_default_falls_back_to_a_gray_r3n_before_a_colour_model(tmp_path, monkeypatch, capsys):
    from r3l.io.files import write_json
    from r3l.models.checkpoint import Checkpoint, save_checkpoint
    from r3l.models.networks import R3N
    from r3l.models.spec import ArchSpec
    from r3l.models.zoo import DEFAULT_COLOUR_MODEL, GRAY_DEFAULTS, ModelCard, SubsetCheck, default_model

    FALLBACK_GRAY_MODEL = GRAY_DEFAULTS[-1]  # the last gray model in line (the σ-25 R3N)

    models = tmp_path / "models"
    net = R3N(1, 4, steps=1)
    with torch.no_grad():
        net.head[-1].weight.zero_()
        net.head[-1].bias.fill_(float(np.arctanh(10 / 255)))  # one step adds 10 gray levels
    arch = ArchSpec.of("r3n", channels=1, features=4, steps=1)
    save_checkpoint(models / f"{FALLBACK_GRAY_MODEL}.safetensors", Checkpoint(arch, net.state_dict(), {}, 0, {}))
    _constant_policy(3, 13, models / f"{DEFAULT_COLOUR_MODEL}.safetensors")
    for name, spec in ((FALLBACK_GRAY_MODEL, arch), (DEFAULT_COLOUR_MODEL, ArchSpec.of("r3l", channels=3))):
        write_json(ModelCard(name, "test", spec, 25.0, SubsetCheck("BSD68", [], 25.0, 0, 0.0)).to_dict(),
                   models / f"{name}.json")
    monkeypatch.setenv("R3L_MODELS", str(models))
    monkeypatch.setattr("r3l.models.zoo.PACKAGE_FOLDER", tmp_path / "none")
    assert default_model(1).name == FALLBACK_GRAY_MODEL and default_model(3).name == DEFAULT_COLOUR_MODEL
    gray = np.full((8, 9), 100, np.uint8)
    Image.fromarray(gray).save(tmp_path / "g.png")
    assert main(["denoise", str(tmp_path / "g.png"), "-o", str(tmp_path / "o.png"), "--device", "cpu",
                 "--strength", "1"]) == 0
    assert f"{FALLBACK_GRAY_MODEL} (1)" in capsys.readouterr().out
    assert np.array_equal(np.asarray(Image.open(tmp_path / "o.png")), gray + 10)
    assert main(["models"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert "(default gray)" in lines[FALLBACK_GRAY_MODEL] and "(default colour)" in lines[DEFAULT_COLOUR_MODEL]


def test_the_docs_model_table_is_the_cards(monkeypatch):
    """docs/models.md shows the shipped models as `r3l models table` prints them (regenerate it after packing)."""
    from conftest import ROOT
    from r3l.models.zoo import zoo_table

    monkeypatch.delenv("R3L_MODELS", raising=False)
    text = (ROOT / "docs" / "models.md").read_text()
    start, end = "<!-- r3l models table -->\n", "\n<!-- end of r3l models table -->"
    assert start in text and end in text
    assert text.split(start, 1)[1].split(end, 1)[0].strip() == zoo_table(list_models())

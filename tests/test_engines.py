"""Inference engines: onnxruntime runs a denoiser's whole inference as PyTorch's fp32 does, from one graph per
architecture (cached), and ``auto`` falls back to PyTorch, in one warning, where it cannot."""

import hashlib

import numpy as np
import pytest
import torch

import r3l.inference.engines as engines
import r3l.inference.export
from conftest import one_error, train_tiny
from r3l.cli import main
from r3l.errors import R3LError, R3LWarning
from r3l.inference.denoiser import Denoiser
from r3l.io.images import write_image
from r3l.models.spec import ArchSpec, build_network

#: As tests/test_export.py: greedy actions whose two best logits are within float rounding may differ.
TIES = 1e-3


@pytest.fixture(scope="module")
def r3l_checkpoint(tmp_path_factory):
    return train_tiny(tmp_path_factory.mktemp("engines"), episodes=4, validate=False) / "run" / "last.safetensors"


@pytest.fixture(autouse=True)
def _auto(monkeypatch):
    monkeypatch.delenv("R3L_ENGINE", raising=False)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A cache folder of this test's own, and no graph remembered from earlier tests (other tests share the
    test run's cache: each export takes seconds)."""
    monkeypatch.setenv("R3L_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(engines, "_GRAPHS", {})
    return tmp_path / "cache" / "onnx"


def _exports(monkeypatch) -> list:
    """Count the ONNX exports that follow."""
    calls = []
    real = r3l.inference.engines.export_onnx

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(r3l.inference.engines, "export_onnx", counting)
    return calls


def _agree(fast: Denoiser, reference: Denoiser, x: torch.Tensor, ties: float = TIES) -> None:
    ours, theirs = fast(x), reference(x)
    assert ours.shape == theirs.shape == x.shape
    off = float((torch.round(ours * 255) != torch.round(theirs * 255)).float().mean())
    assert off <= ties, off
    if fast.env is None:  # one continuous pass: equal to float rounding
        assert float((ours - theirs).abs().max()) < 1e-5


def _random(spec: ArchSpec, **options) -> tuple[Denoiser, Denoiser]:
    """A randomly initialised network of ``spec`` on the auto engine, and the fp32 PyTorch reference."""
    torch.manual_seed(0)
    net = build_network(spec)
    return (Denoiser(net, spec, "cpu", **options).prepare(),
            Denoiser(net, spec, "cpu", engine="torch", channels_last=False, **options))


SPECS = {
    "r3n_clipped": ArchSpec.of("r3n", features=8, steps=3, max_step=13.0),
    "r3l_gaussian": ArchSpec.of("r3l", features=8, n_actions=9, action_step=2.0, steps=2, policy_form="gaussian",
                             head_init="residual"),
    "dncnn_colour": ArchSpec.of("dncnn", channels=3, features=8, depth=4),
    "ircnn": ArchSpec.of("ircnn", features=8),
}


@pytest.mark.parametrize("name", list(SPECS))
def test_auto_runs_onnxruntime_with_torchs_output(name):
    options = {"decoding": "expected", "self_ensemble": True} if name == "r3l_gaussian" else {}
    fast, reference = _random(SPECS[name], **options)
    assert fast.engine == "onnxruntime" and reference.engine == "torch"
    channels = SPECS[name].channels
    for shape in [(1, channels, 33, 47), (3, channels, 16, 16)]:
        _agree(fast, reference, torch.rand(*shape))


def test_trained_r3l_with_every_inference_option(r3l_checkpoint):
    torch.manual_seed(1)
    x = torch.rand(2, 1, 30, 41)
    for options in [{}, {"self_ensemble": True}]:  # the ensemble's views run the same graph
        fast = Denoiser.from_checkpoint(r3l_checkpoint, "cpu", **options)
        reference = Denoiser.from_checkpoint(r3l_checkpoint, "cpu", engine="torch", channels_last=False, **options)
        _agree(fast, reference, x)
        assert fast.engine == "onnxruntime"  # it ran there, no fall-back


def test_tiles_are_stitched_as_in_torch(r3l_checkpoint):
    fast = Denoiser.from_checkpoint(r3l_checkpoint, "cpu")
    reference = Denoiser.from_checkpoint(r3l_checkpoint, "cpu", engine="torch", channels_last=False)
    fast.tile = reference.tile = 24
    _agree(fast, reference, torch.rand(1, 1, 50, 61))


def test_one_graph_per_architecture_new_weights_written_into_it(cache, monkeypatch):
    spec = SPECS["r3n_clipped"]
    calls = _exports(monkeypatch)
    x = torch.rand(1, 1, 20, 25)
    for seed in range(3):  # three networks, one architecture: one export, each network's own output
        torch.manual_seed(seed)
        net = build_network(spec)
        fast = Denoiser(net, spec, "cpu").prepare()
        _agree(fast, Denoiser(net, spec, "cpu", engine="torch", channels_last=False), x)
    assert len(calls) == 1
    graphs = list(cache.glob("*.onnx"))
    assert len([g for g in graphs if "-" not in g.stem]) == 1 and len(graphs) == 4  # + one per network's weights
    monkeypatch.setattr(engines, "_GRAPHS", {})  # a new process: the file is read, not exported
    Denoiser(build_network(spec), spec, "cpu").prepare()
    assert len(calls) == 1
    monkeypatch.setattr(engines, "_GRAPHS", {})
    with monkeypatch.context() as m:
        m.setattr(engines, "_with_weights", lambda graph, net: pytest.fail("onnx used for a cached model"))
        _agree(Denoiser(net, spec, "cpu").prepare(), Denoiser(net, spec, "cpu", engine="torch", channels_last=False), x)
    weighted = next(g for g in cache.glob("*-*.onnx") if engines._weights_digest(net) in g.stem)
    weighted.write_bytes(weighted.read_bytes()[:-8] + bytes(8))  # damaged after it was checked: not used
    _agree(Denoiser(net, spec, "cpu").prepare(), Denoiser(net, spec, "cpu", engine="torch", channels_last=False), x)
    assert hashlib.sha256(weighted.read_bytes()).hexdigest() == weighted.with_suffix(".sha256").read_text()


def test_damaged_cache_file_is_exported_again(cache, monkeypatch):
    spec = SPECS["r3n_clipped"]
    program = Denoiser(build_network(spec), spec, "cpu", engine="torch").program
    path = cache / f"{engines._graph_key(program, spec.to_dict())}.onnx"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a graph")
    calls = _exports(monkeypatch)
    fast, reference = _random(spec)
    assert fast.engine == "onnxruntime" and len(calls) == 1
    _agree(fast, reference, torch.rand(1, 1, 19, 23))
    assert path.read_bytes() != b"not a graph"


def test_unwritable_cache_still_runs(cache, tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.setenv("R3L_CACHE_DIR", str(blocker / "below"))
    fast, reference = _random(SPECS["ircnn"])
    assert fast.engine == "onnxruntime"
    _agree(fast, reference, torch.rand(1, 1, 21, 22))


def test_a_graph_that_ignores_the_weights_is_refused(cache, monkeypatch):
    # What a graph whose exporter had folded a parameter into a constant would do: keep the export's weights.
    monkeypatch.setattr(engines, "_with_weights", lambda graph, net: graph)
    with pytest.warns(R3LWarning, match="does not reproduce PyTorch.*running PyTorch"):
        fast, reference = _random(SPECS["r3n_clipped"])
    assert fast.engine == "torch"
    _agree(fast, reference, torch.rand(1, 1, 16, 16))
    with pytest.raises(R3LError, match="^engine onnxruntime: the exported graph does not reproduce"):
        Denoiser(reference.net, reference.arch, "cpu", engine="onnxruntime").prepare()


def test_where_onnxruntime_does_not_apply(monkeypatch):
    spec = SPECS["ircnn"]
    net = build_network(spec)
    for options, reason in [({"precision": "bf16"}, "precision bf16"), ({"compile": True}, "torch.compile")]:
        assert Denoiser(net, spec, "cpu", **options).engine == "torch"
        with pytest.raises(R3LError, match=f"^engine onnxruntime: {reason}"):
            Denoiser(net, spec, "cpu", engine="onnxruntime", **options)
    pixelrl = ArchSpec.of("r3l", features=8, n_actions=9, action_step=1.0, steps=2, task="pixelrl_denoise")
    assert Denoiser(build_network(pixelrl), pixelrl, "cpu").engine == "torch"
    with pytest.raises(R3LError, match="pixelrl_denoise"):
        Denoiser(build_network(pixelrl), pixelrl, "cpu", engine="onnxruntime")
    monkeypatch.setattr(engines.importlib.util, "find_spec", lambda name: None if name == "onnxruntime" else 1)
    assert Denoiser(net, spec, "cpu").engine == "torch"
    with pytest.raises(R3LError, match=r"onnxruntime is not installed \(pip install 'r3l\[fast\]'\)"):
        Denoiser(net, spec, "cpu", engine="onnxruntime")


def test_r3l_engine_variable_says_what_auto_means(monkeypatch):
    spec = SPECS["ircnn"]
    net = build_network(spec)
    monkeypatch.setenv("R3L_ENGINE", "torch")
    assert Denoiser(net, spec, "cpu").engine == "torch"
    assert Denoiser(net, spec, "cpu", engine="onnxruntime").engine == "onnxruntime"  # an explicit choice wins
    monkeypatch.setenv("R3L_ENGINE", "fast")
    with pytest.raises(R3LError, match="R3L_ENGINE='fast': expected one of auto, torch, onnxruntime"):
        Denoiser(net, spec, "cpu")
    with pytest.raises(R3LError, match="engine 'gpu'"):
        Denoiser(net, spec, "cpu", engine="gpu")


def test_command_line_engine_and_verbose(r3l_checkpoint, tmp_path, capsys):
    rng = np.random.default_rng(0)
    image = tmp_path / "in.png"
    write_image(image, rng.random((30, 40, 1)).astype(np.float32))
    outputs = {}
    for engine in ["auto", "torch", "onnxruntime"]:
        out = tmp_path / f"{engine}.png"
        assert main(["denoise", str(image), "-o", str(out), "--checkpoint", str(r3l_checkpoint),
                     "--engine", engine, "--verbose"]) == 0
        err = capsys.readouterr().err
        expected = "torch cpu, fp32, channels-last" if engine == "torch" else "onnxruntime, fp32"
        assert f"{r3l_checkpoint} (r3l) on {expected}" in err, err
        outputs[engine] = out.read_bytes()
    assert outputs["auto"] == outputs["onnxruntime"]
    code = main(["eval", "--checkpoint", str(r3l_checkpoint), "--data", str(tmp_path), "--engine", "onnxruntime",
                 "--precision", "bf16", "--quiet"])
    one_error(code, capsys.readouterr().err, "engine onnxruntime: precision bf16")


def test_training_validation_runs_on_onnxruntime_as_on_torch(tmp_path, monkeypatch):
    from r3l.config import from_dict
    from r3l.training.trainer import Trainer

    root = train_tiny(tmp_path, episodes=2, validate=False)
    import yaml

    cfg = from_dict(yaml.safe_load((root / "tiny.yaml").read_text()), [f"data.val={root / 'test'}"])
    trainer = Trainer(cfg, tmp_path / "again")
    runs = []
    real = engines.OnnxRuntimeEngine.__call__
    monkeypatch.setattr(engines.OnnxRuntimeEngine, "__call__", lambda self, x: runs.append(1) or real(self, x))
    fast = trainer.validate()
    assert runs
    monkeypatch.setenv("R3L_ENGINE", "torch")
    assert abs(trainer.validate() - fast) < 0.01



def test_shipped_models_run_their_own_graph_without_an_export(cache, monkeypatch):
    """Each registry model that ships ``<name>.onnx`` runs it on first use (no export, which costs seconds),
    and it computes what PyTorch computes with the model's weights."""
    from r3l.models.zoo import PACKAGE_FOLDER

    monkeypatch.delenv("R3L_MODELS", raising=False)
    monkeypatch.setattr(engines, "_export_graph", lambda denoiser: pytest.fail("exported a shipped model"))
    names = sorted(p.stem for p in PACKAGE_FOLDER.glob("*.onnx"))
    assert names == sorted(p.stem for p in PACKAGE_FOLDER.glob("*.json"))  # every shipped model has its graph
    for name in names:
        fast = Denoiser.pretrained(name, device="cpu").prepare()
        assert fast.engine == "onnxruntime"
        reference = Denoiser.pretrained(name, device="cpu", engine="torch", channels_last=False)
        # An R3L on eighth-level actions has many rounding boundaries: on another CPU a step's residual may fall
        # on the other side of one in a few of these 64 x 64 pixels (3 here for r3l-gray-s35; the same weights on
        # half-level actions change 26% of them).
        _agree(fast, reference, torch.rand(1, fast.channels, 64, 64), ties=0.01)

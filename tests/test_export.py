"""Exported denoisers (ONNX via onnxruntime, torch.export programs) give r3l's own inference."""

import numpy as np
import pytest
import torch

from conftest import DATASETS, DNCNN_WEIGHTS, needs_shared, train_tiny
from r3l.cli import main
from r3l.degradation import noisy_version
from r3l.errors import R3LError
from r3l.inference.denoiser import Denoiser
from r3l.inference.export import export_onnx, export_pt2, onnx_session
from r3l.io.data import load_images
from r3l.models.spec import ArchSpec, build_network

#: onnxruntime's convolutions sum in another order than PyTorch's, so a pixel whose two best actions are
#: within float rounding may take the other one (measured on a CPU-trained paper-size R3L over BSD68 at σ 25:
#: 527 of 10,499,268 pixels, 5.0e-5). The tests allow 1e-3; torch.export programs must match exactly.
ONNX_TIES = 1e-3


@pytest.fixture(scope="module")
def r3l_checkpoint(tmp_path_factory):
    return train_tiny(tmp_path_factory.mktemp("export"), episodes=4, validate=False) / "run" / "last.safetensors"


def _inputs(channels: int = 1) -> list[torch.Tensor]:
    torch.manual_seed(0)
    batches = [torch.rand(1, channels, 33, 47), torch.rand(3, channels, 16, 16), torch.rand(1, channels, 9, 70)]
    if (DATASETS / "BSD68").is_dir() and channels == 1:
        for im in load_images(DATASETS / "BSD68", 1, limit=2):
            noisy = noisy_version(im.float, im.name, 25, 0)[:121, :199]  # odd sizes
            batches.append(torch.from_numpy(np.ascontiguousarray(noisy)).permute(2, 0, 1)[None])
    return batches


def _check(denoiser: Denoiser, tmp_path, inputs: int | None = None) -> None:
    """``denoiser`` (PyTorch, fp32, contiguous: the reference) and its exports: 8-bit outputs equal (ONNX: up to
    :data:`ONNX_TIES` of the pixels); for a one-pass network, whose output is continuous in its input, also equal to
    float rounding (a value at a .5 boundary may round either way).
    ``inputs``: the first that many of :func:`_inputs` only."""
    onnx_path = export_onnx(denoiser.whole_program(), tmp_path / "m.onnx")
    pt2_path = export_pt2(denoiser.whole_program(), tmp_path / "m.pt2")
    session = onnx_session(onnx_path)
    program = torch.export.load(str(pt2_path)).module()
    off = total = 0
    for x in _inputs(denoiser.channels)[:inputs]:
        ours = denoiser(x)
        onnx_out = torch.from_numpy(session.run(None, {"x": x.numpy()})[0])
        assert onnx_out.shape == ours.shape
        off += int((torch.round(onnx_out * 255) != torch.round(ours * 255)).sum())
        total += ours.numel()
        assert torch.equal(torch.round(program(x) * 255), torch.round(ours * 255))
        if denoiser.env is None:
            assert (onnx_out - ours).abs().max() < 1e-5
    assert off / total <= ONNX_TIES, (off, total)


def test_r3l_greedy_exports_whole(r3l_checkpoint, tmp_path):
    _check(Denoiser.from_checkpoint(r3l_checkpoint, "cpu", engine="torch", channels_last=False), tmp_path)


def test_r3l_expected_decoding_and_self_ensemble_export(tmp_path):
    # The exported graph unrolls 8 orientations × the steps: a 2-step policy and the two synthetic sizes (one
    # odd, one batched) keep it short; the greedy test above covers 6 steps and the BSD68 crops.
    checkpoint = train_tiny(tmp_path / "two", episodes=4, validate=False, steps=2) / "run" / "last.safetensors"
    denoiser = Denoiser.from_checkpoint(checkpoint, "cpu", decoding="expected", self_ensemble=True, engine="torch",
                                        channels_last=False)
    assert denoiser.arch.steps == 2
    _check(denoiser, tmp_path, inputs=2)


@pytest.mark.parametrize("name", ["r3n", "dncnn"])
def test_other_architectures_export(name, tmp_path):
    torch.manual_seed(0)
    spec = ArchSpec.of(name, channels=1, features=8, steps=3, depth=5)
    _check(Denoiser(build_network(spec), spec, "cpu", engine="torch", channels_last=False), tmp_path)


@needs_shared
def test_kair_dncnn_exports_from_the_command_line(tmp_path, capsys):
    assert main(["export", "--model", "dncnn", "--weights", str(DNCNN_WEIGHTS), "--onnx",
                 str(tmp_path / "d.onnx")]) == 0
    assert "ONNX opset 18" in capsys.readouterr().out
    denoiser = Denoiser.from_dncnn_weights(DNCNN_WEIGHTS, "cpu", engine="torch", channels_last=False)
    x = _inputs()[-1]
    out = onnx_session(tmp_path / "d.onnx").run(None, {"x": x.numpy()})[0]
    assert np.abs(out - denoiser(x).numpy()).max() < 1e-5


def test_steps_override_and_fixed_size(r3l_checkpoint, tmp_path):
    denoiser = Denoiser.from_checkpoint(r3l_checkpoint, "cpu", engine="torch", channels_last=False)
    short = denoiser.whole_program(steps=2)
    x = torch.rand(1, 1, 20, 20)
    assert torch.equal(short(x), denoiser.trajectory(x)[2].clamp(0, 1))
    path = export_pt2(denoiser.whole_program(), tmp_path / "fixed.pt2", dynamic=False, size=(24, 24))
    program = torch.export.load(str(path)).module()
    assert program(torch.rand(2, 1, 24, 24)).shape == (2, 1, 24, 24)
    with pytest.raises(Exception):
        program(torch.rand(2, 1, 30, 24))


def test_export_errors_are_one_clear_line(r3l_checkpoint, tmp_path, capsys, monkeypatch):
    assert main(["export", "--checkpoint", str(tmp_path / "missing.safetensors"), "--onnx", "x.onnx"]) == 2
    assert capsys.readouterr().err.strip() == f"r3l: error: {tmp_path / 'missing.safetensors'}: checkpoint not found"
    assert main(["export", "--checkpoint", str(r3l_checkpoint)]) == 2
    assert "give one of --onnx" in capsys.readouterr().err
    (tmp_path / "folder.onnx").mkdir()
    assert main(["export", "--checkpoint", str(r3l_checkpoint), "--onnx", str(tmp_path / "folder.onnx")]) == 2
    assert "is a folder" in capsys.readouterr().err
    import builtins

    real_import = builtins.__import__

    def no_onnx(name, *args, **kwargs):
        if name in ("onnx", "onnxscript"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_onnx)
    with pytest.raises(R3LError, match=r"pip install 'r3l\[export\]'"):
        export_onnx(Denoiser.from_checkpoint(r3l_checkpoint, "cpu").whole_program(), tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()

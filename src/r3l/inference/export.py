"""Deployment: a trained denoiser as one self-contained graph, for ONNX runtimes and ``torch.export``.

:class:`InferenceProgram` is exactly :class:`r3l.inference.denoiser.Denoiser`'s computation on a whole image
batch, written as a plain module: for a policy (R3L), ``steps`` times "logits → argmax (or the expected
residual) → add the action's residual", then clip to [0, 1]; for R3N and DnCNN, one pass and the clip. With
``self_ensemble`` the 8 flips/rotations are in the graph too. Exported graphs take ``N × C × H × W`` float32 in
[0, 1] with dynamic batch, height and width, and return the denoised batch in [0, 1].

ONNX files are written by PyTorch's ``torch.export``-based exporter at opset :data:`ONNX_OPSET` (supported by
onnxruntime 1.14 and later, and by TensorRT, OpenVINO and ONNX.js's successors); the ``.pt2`` files are
``torch.export`` programs, loaded with ``torch.export.load``.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from r3l.errors import R3LError
from r3l.inference.denoiser import ensemble_mean
from r3l.io.files import ensure_folder
from r3l.tasks.denoise import ResidualDenoiseEnv

if TYPE_CHECKING:
    from r3l.inference.denoiser import Denoiser

ONNX_OPSET = 18
"""The opset of exported ONNX files (PyTorch's exporter writes 18 or later; onnxruntime runs it from 1.14)."""


class InferenceProgram(nn.Module):
    """A denoiser's whole inference as one module: ``(N, C, H, W)`` in [0, 1] → denoised, clipped to [0, 1].

    ``net`` replaces the denoiser's network (one of the same architecture; r3l's ONNX Runtime engine exports a
    copy with other weights); the denoiser's own network is used as it is, in float32 and eval mode."""

    def __init__(self, denoiser: Denoiser, steps: int | None = None, net: nn.Module | None = None):
        super().__init__()
        self.net = (denoiser.net if net is None else net).float().eval()
        self.policy = denoiser.env is not None
        self.decoding, self.self_ensemble = denoiser.decoding, denoiser.self_ensemble
        if self.policy:
            env = denoiser.env
            if not isinstance(env, ResidualDenoiseEnv):
                raise R3LError(f"export covers R3L's residual actions; this policy's task is {denoiser.arch.task} "
                               "(run it with r3l denoise instead)")
            self.env, self.steps = env, steps or env.steps
        elif steps is not None:
            raise R3LError(f"--steps applies to R3L policies; this model is {denoiser.arch.name}")

    def _once(self, x: torch.Tensor) -> torch.Tensor:
        if not self.policy:
            return self.net(x)
        for _ in range(self.steps):  # the task's own steps, as Denoiser applies them
            logits = self.net.policy_logits(x)
            if self.decoding == "greedy":
                x = self.env.transition(x, logits.argmax(dim=2))
            else:
                x = self.env.expected_transition(x, torch.softmax(logits, dim=2))
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ensemble_mean(self._once, x) if self.self_ensemble else self._once(x).clamp(0.0, 1.0)


def _dynamic_shapes(dynamic: bool) -> dict | None:
    if not dynamic:
        return None
    dim = torch.export.Dim
    return {"x": {0: dim("batch", min=1, max=1024), 2: dim("height", min=2, max=1 << 15),
                  3: dim("width", min=2, max=1 << 15)}}


def _example(denoiser: Denoiser, size: tuple[int, int]) -> torch.Tensor:
    torch.manual_seed(0)
    return torch.rand(2, denoiser.channels, *size)


def export_pt2(denoiser: Denoiser, path: str | Path, steps: int | None = None, dynamic: bool = True,
               size: tuple[int, int] = (64, 64)) -> Path:
    """Write ``path`` (``.pt2``): a ``torch.export`` program of the whole inference."""
    program = InferenceProgram(denoiser, steps).cpu()
    exported = torch.export.export(program, (_example(denoiser, size),), dynamic_shapes=_dynamic_shapes(dynamic))
    with _atomic(path) as tmp:
        torch.export.save(exported, str(tmp))
    return Path(path)


def export_onnx(denoiser: Denoiser, path: str | Path, steps: int | None = None, dynamic: bool = True,
                size: tuple[int, int] = (64, 64)) -> Path:
    """Write ``path`` (``.onnx``): the whole inference as one ONNX graph at opset :data:`ONNX_OPSET`."""
    return write_onnx(InferenceProgram(denoiser, steps), denoiser.channels, path, dynamic, size)


def write_onnx(program: InferenceProgram, channels: int, path: str | Path, dynamic: bool = True,
               size: tuple[int, int] = (64, 64), optimize: bool = True) -> Path:
    """Write ``program`` to ``path`` as one ONNX graph. ``optimize=False`` skips the exporter's graph
    optimisations, which fold constants: every parameter then stays an initializer named ``net.<state_dict
    key>`` (onnxruntime makes the same fusions itself when it loads the graph)."""
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError:
        raise R3LError("ONNX export needs onnx and onnxscript: pip install 'r3l[export]'") from None
    program = program.cpu()
    torch.manual_seed(0)
    example = torch.rand(2, channels, *size)
    # The exporter's progress notes and warnings are not the user's business; its errors are.
    quiet = logging.getLogger("torch.onnx")
    level = quiet.level
    with _atomic(path) as tmp, warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        quiet.setLevel(logging.ERROR)
        torch.onnx.export(program, (example,), str(tmp), input_names=["x"],
                          output_names=["denoised"], opset_version=ONNX_OPSET, dynamo=True,
                          dynamic_shapes=_dynamic_shapes(dynamic), external_data=False, optimize=optimize)
        quiet.setLevel(level)
    return Path(path)


@contextlib.contextmanager
def _atomic(path: str | Path):
    """A temporary name beside ``path`` to write to; renamed to ``path`` once complete, removed on failure."""
    path = Path(path)
    if path.is_dir():
        raise R3LError(f"{path}: is a folder, expected an output file name")
    ensure_folder(path.parent)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as exc:
        raise R3LError(f"{path}: could not write ({exc.strerror or exc})") from None
    finally:
        tmp.unlink(missing_ok=True)


def onnx_session(model: str | Path | bytes, threads: int = 0):
    """An onnxruntime CPU session for an exported file (or its bytes) with ``threads`` intra-op threads (0:
    onnxruntime's default) (``pip install 'r3l[export]'``)."""
    try:
        import onnxruntime
    except ImportError:
        raise R3LError("running ONNX models needs onnxruntime: pip install 'r3l[export]'") from None
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    source = model if isinstance(model, bytes) else str(model)
    return onnxruntime.InferenceSession(source, options, providers=["CPUExecutionProvider"])

"""Deployment: a trained denoiser's :class:`~r3l.inference.program.InferenceProgram` (``Denoiser.program()``) as one
self-contained graph, for ONNX runtimes and ``torch.export``: for a policy (R3L), ``steps`` times "logits → argmax
(or the expected residual) → add the action's residual", then clip to [0, 1]; for R3N and DnCNN, one pass and the
clip. With ``self_ensemble`` the 8 flips/rotations are in the graph too. Exported graphs take ``N × C × H × W``
float32 in [0, 1] with dynamic batch, height and width, and return the denoised batch in [0, 1].

ONNX files are written by PyTorch's ``torch.export``-based exporter at opset :data:`ONNX_OPSET` (supported by
onnxruntime 1.14 and later, and by TensorRT, OpenVINO and ONNX.js's successors); the ``.pt2`` files are
``torch.export`` programs, loaded with ``torch.export.load``.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path

import torch

from r3l.errors import R3LError
from r3l.inference.program import InferenceProgram
from r3l.io.files import atomic_path

ONNX_OPSET = 18
"""The opset of exported ONNX files (PyTorch's exporter writes 18 or later; onnxruntime runs it from 1.14)."""


def _dynamic_shapes(dynamic: bool) -> dict | None:
    if not dynamic:
        return None
    dim = torch.export.Dim
    return {"x": {0: dim("batch", min=1, max=1024), 2: dim("height", min=2, max=1 << 15),
                  3: dim("width", min=2, max=1 << 15)}}


def _example(program: InferenceProgram, size: tuple[int, int]) -> torch.Tensor:
    torch.manual_seed(0)
    return torch.rand(2, program.channels, *size)


def _exportable(program: InferenceProgram) -> InferenceProgram:
    """``program`` on the CPU in float32, refused if its task's actions are not residuals."""
    if program.policy and not program.env.residual_actions:
        raise R3LError(f"export covers R3L's residual actions; this policy's task is {type(program.env).__name__} "
                       "(run it with r3l denoise instead)")
    return program.to("cpu", torch.float32).eval()


def export_pt2(program: InferenceProgram, path: str | Path, dynamic: bool = True,
               size: tuple[int, int] = (64, 64)) -> Path:
    """Write ``path`` (``.pt2``): a ``torch.export`` program of the whole inference."""
    program = _exportable(program)
    exported = torch.export.export(program, (_example(program, size),), dynamic_shapes=_dynamic_shapes(dynamic))
    with atomic_path(path) as tmp:
        torch.export.save(exported, str(tmp))
    return Path(path)


def export_onnx(program: InferenceProgram, path: str | Path, dynamic: bool = True, size: tuple[int, int] = (64, 64),
                optimize: bool = True) -> Path:
    """Write ``path`` (``.onnx``): the whole inference as one ONNX graph at opset :data:`ONNX_OPSET`.
    ``optimize=False`` skips the exporter's graph optimisations, which fold constants: every parameter then stays
    an initializer named ``net.<state_dict key>`` (onnxruntime makes the same fusions itself when it loads the
    graph)."""
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError:
        raise R3LError("ONNX export needs onnx and onnxscript: pip install 'r3l[export]'") from None
    program = _exportable(program)
    example = _example(program, size)
    # The exporter's progress notes and warnings are not the user's business; its errors are.
    quiet = logging.getLogger("torch.onnx")
    level = quiet.level
    with atomic_path(path) as tmp, warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        quiet.setLevel(logging.ERROR)
        torch.onnx.export(program, (example,), str(tmp), input_names=["x"],
                          output_names=["denoised"], opset_version=ONNX_OPSET, dynamo=True,
                          dynamic_shapes=_dynamic_shapes(dynamic), external_data=False, optimize=optimize)
        quiet.setLevel(level)
    return Path(path)


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

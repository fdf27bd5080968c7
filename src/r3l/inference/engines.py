"""Inference engines: PyTorch, or onnxruntime running a denoiser's whole inference graph on the CPU.

A :class:`~r3l.inference.denoiser.Denoiser` runs its :class:`~r3l.inference.program.InferenceProgram` on one of
them:

- ``torch``: the program itself, in PyTorch (any model, device, precision, ``torch.compile``);
- ``onnxruntime``: the program's export for one view (every step and the clip; the self-ensemble's 8 views call
  it in turn) as one ONNX graph in onnxruntime's CPU engine: 1.5× (R3L)
  to 2× (R3N) faster than PyTorch's fp32 on a 2-core CPU (``benchmarks/cpu_speed.py``). Same outputs as fp32
  PyTorch up to the order of float sums: a greedy action whose two best logits are within rounding may differ
  (``tests/test_export.py``);
- ``auto``: onnxruntime where it applies (a CPU, fp32, no ``torch.compile``, a model the export covers, and
  ``pip install 'r3l[fast]'``), else torch. The environment variable ``R3L_ENGINE`` (``torch``,
  ``onnxruntime`` or ``auto``) decides what ``auto`` means for every command and program.

An architecture's graph is exported once (a few seconds, with the exporter's constant folding off so that every
parameter stays an initializer named ``net.<parameter>``) and kept in :func:`cache_dir`; each network's weights
are written into a copy of it, so a new checkpoint, or a network in training being validated, costs one
onnxruntime session (about 0.1 s), not an export. That copy is cached as well, named by the weights' digest, so
a later process with the same model (a shipped one) gives it to onnxruntime as it is and never imports onnx
(about 1 s of a command's start). A graph read or exported for the first time in a process is checked against
PyTorch on a small input first: it was exported with random weights, so a parameter the exporter had folded into
a constant would show.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import torch

from r3l.errors import R3LError
from r3l.inference.export import ONNX_OPSET, export_onnx, onnx_session
from r3l.inference.program import InferenceProgram
from r3l.io.files import atomic_write_bytes

ENGINES = ("auto", "torch", "onnxruntime")
ENGINE_VARIABLE = "R3L_ENGINE"
CACHE_VARIABLE = "R3L_CACHE_DIR"
FAST_EXTRA = "pip install 'r3l[fast]'"

_GRAPHS: dict[str, bytes] = {}
"""Exported graphs already read and checked in this process, by :func:`_graph_key`."""


def requested_engine(engine: str) -> str:
    """``engine`` checked; ``auto`` replaced by ``R3L_ENGINE`` when that is set."""
    if engine not in ENGINES:
        raise R3LError(f"engine {engine!r}: expected one of {', '.join(ENGINES)}")
    if engine == "auto":
        engine = os.environ.get(ENGINE_VARIABLE, "").strip() or "auto"
        if engine not in ENGINES:
            raise R3LError(f"{ENGINE_VARIABLE}={engine!r}: expected one of {', '.join(ENGINES)}")
    return engine


def onnxruntime_missing() -> str | None:
    """Why the onnxruntime engine cannot run in this installation (a package missing), or None."""
    for module in ("onnxruntime", "onnx", "onnxscript"):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed ({FAST_EXTRA})"
    return None


def onnxruntime_refusal(program: InferenceProgram, device: torch.device, precision: str, compiled: bool,
                        task: str = "") -> str | None:
    """Why ``program`` on ``device`` (in ``precision``, perhaps compiled; ``task`` its task's name) cannot run in
    onnxruntime, or None when it can."""
    if device.type != "cpu":
        return f"it runs on {device.type}, and r3l's onnxruntime engine is the CPU's"
    if precision != "fp32":
        return f"precision {precision} is PyTorch's autocast (onnxruntime runs fp32)"
    if compiled:
        return "torch.compile is PyTorch's"
    if program.policy and not program.env.residual_actions:
        return f"the export covers R3L's residual actions, not the {task or type(program.env).__name__} task's"
    return onnxruntime_missing()


def resolve_engine(engine: str, program: InferenceProgram, device: torch.device, precision: str, compiled: bool,
                   task: str = "") -> str:
    """``torch`` or ``onnxruntime`` for ``program`` (:func:`onnxruntime_refusal`'s arguments); an explicit
    ``onnxruntime`` that cannot run is an error."""
    engine = requested_engine(engine)
    if engine == "torch":
        return engine
    refusal = onnxruntime_refusal(program, device, precision, compiled, task)
    if refusal is None:
        return "onnxruntime"
    if engine == "onnxruntime":
        raise R3LError(f"engine onnxruntime: {refusal}")
    return "torch"


def cache_dir() -> Path:
    """Where exported graphs are kept: ``R3L_CACHE_DIR``, else ``$XDG_CACHE_HOME/r3l``, else ``~/.cache/r3l``."""
    given = os.environ.get(CACHE_VARIABLE, "").strip()
    if given:
        return Path(given).expanduser()
    base = os.environ.get("XDG_CACHE_HOME", "").strip() or Path.home() / ".cache"
    return Path(base) / "r3l"


class OnnxRuntimeEngine:
    """``program``'s inference of one view (every step, then the clip; no self-ensemble) in an onnxruntime CPU
    session with ``threads`` threads (0: PyTorch's thread count). Called with ``(B, C, H, W)`` float32 noisy
    images, returns the denoised batch in [0, 1].

    ``arch`` (the architecture's stored description) goes into the name of the cached graph; ``shipped`` is a
    registry model's own graph file (``<name>.onnx``), tried before any export."""

    def __init__(self, program: InferenceProgram, arch: dict, shipped: Path | None = None, threads: int = 0):
        self.threads = threads or torch.get_num_threads()
        program = program.with_net(program.net, self_ensemble=False)
        key = _graph_key(program, arch)
        # The graph with this network's weights written in is kept too: a later process with the same model (a
        # shipped one, say) hands it to onnxruntime as it is, without importing onnx to write the weights.
        # Its SHA-256 beside it says that it is the file that was checked against PyTorch when it was written.
        weighted = cache_dir() / "onnx" / f"{key}-{_weights_digest(program.net)}.onnx"
        digest = weighted.with_suffix(".sha256")
        try:
            model = weighted.read_bytes()
            if hashlib.sha256(model).hexdigest() == digest.read_text().strip():
                self.session = self._session(model)
                return
        except (OSError, R3LError):
            pass
        try:  # a registry model's own graph (<name>.onnx beside its weights): no export on a first run
            if shipped is None:
                raise FileNotFoundError("no shipped graph")
            model = shipped.read_bytes()
            self.session = self._session(model)
            _check_against_torch(self, program)
        except (OSError, R3LError):
            model = _with_weights(self._architecture_graph(key, program), program.net)
            self.session = self._session(model)
            _check_against_torch(self, program)
        try:
            atomic_write_bytes(weighted, model)
            atomic_write_bytes(digest, hashlib.sha256(model).hexdigest().encode())
        except R3LError:
            pass  # an unwritable cache costs an export per process, nothing else

    def _architecture_graph(self, key: str, program: InferenceProgram) -> bytes:
        """The graph of ``program``'s architecture (any weights): from this process, the cache, or exported."""
        if key in _GRAPHS:
            return _GRAPHS[key]
        path = cache_dir() / "onnx" / f"{key}.onnx"
        try:
            graph = path.read_bytes()
            self.session = self._session(_with_weights(graph, program.net))
            _check_against_torch(self, program)
        except (OSError, R3LError):  # not cached yet, or a cached file that is damaged or stale: export anew
            graph = _export_graph(program)
            try:
                atomic_write_bytes(path, graph)
            except R3LError:
                pass  # an unwritable cache costs an export per process, nothing else
        _GRAPHS[key] = graph
        return graph

    def _session(self, model: bytes):
        try:
            return onnx_session(model, self.threads)
        except R3LError:
            raise
        except Exception as exc:  # onnx's and onnxruntime's errors have many types
            raise R3LError(f"onnxruntime could not load the exported graph ({_first_line(exc)})") from None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        inputs = x.detach().to("cpu", torch.float32).contiguous().numpy()
        return torch.from_numpy(self.session.run(None, {"x": inputs})[0])


def _graph_key(program: InferenceProgram, arch: dict) -> str:
    """What an exported graph depends on: the architecture, the parameters' names and shapes, the inference
    options, and the versions of the exporter's stack."""
    from importlib.metadata import version

    from r3l.version import __version__

    net = program.net
    tensors = {**dict(net.named_parameters()), **dict(net.named_buffers())}
    fields = {
        "arch": arch, "network": type(net).__name__,
        "tensors": [[name, list(t.shape)] for name, t in sorted(tensors.items())],
        "decoding": program.decoding, "opset": ONNX_OPSET,
        "versions": [__version__, torch.__version__, version("onnx")],
    }
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:24]


def model_graph(program: InferenceProgram) -> bytes:
    """``program``'s inference of one view as an ONNX graph with its weights written in: what onnxruntime runs,
    and what ``r3l models pack`` ships beside a model's weights."""
    return _with_weights(_export_graph(program), program.net)


def _weights_digest(net: torch.nn.Module) -> str:
    """A digest of ``net``'s parameters and buffers (names, shapes and values)."""
    digest = hashlib.sha256()
    for name, tensor in sorted([*net.named_parameters(), *net.named_buffers()], key=lambda item: item[0]):
        digest.update(f"{name}{list(tensor.shape)}".encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def _export_graph(program: InferenceProgram) -> bytes:
    """The inference graph of one view of ``program``'s architecture, exported from a copy of its network holding
    random weights (which :func:`_with_weights` replaces)."""
    import tempfile

    net = copy.deepcopy(program.net).to("cpu", torch.float32, memory_format=torch.contiguous_format)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(0.05 * torch.randn(p.shape, generator=generator))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "graph.onnx"
        try:
            export_onnx(program.with_net(net, self_ensemble=False), path, optimize=False)
        except R3LError:
            raise
        except Exception as exc:  # the exporter's failures have many types
            raise R3LError(f"the ONNX export failed ({_first_line(exc)})") from None
        return path.read_bytes()


def _with_weights(graph: bytes, net: torch.nn.Module) -> bytes:
    """``graph`` with every initializer ``net.<name>`` set to ``net``'s parameter or buffer of that name."""
    import onnx
    from onnx import numpy_helper

    try:
        model = onnx.load_model_from_string(graph)
    except Exception as exc:  # protobuf's decode errors
        raise R3LError(f"not an ONNX graph ({_first_line(exc)})") from None
    tensors = {f"net.{name}": t for name, t in [*net.named_parameters(), *net.named_buffers()]}
    for init in model.graph.initializer:
        if not init.name.startswith("net."):
            continue
        if init.name not in tensors:
            raise R3LError(f"the exported graph's {init.name} is not a tensor of this network")
        value = tensors[init.name].detach().to("cpu", torch.float32).contiguous().numpy()
        init.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(value), init.name))
    return model.SerializeToString()


def _check_against_torch(engine: OnnxRuntimeEngine, program: InferenceProgram) -> None:
    """Refuse a graph that does not compute what PyTorch computes with the same weights (mean 8-bit difference
    on a 24 × 28 input below 1e-4 of the range: a near-tied action or two may flip, a stale weight may not)."""
    generator = torch.Generator().manual_seed(1)
    x = torch.rand(1, program.channels, 24, 28, generator=generator)
    reference = copy.deepcopy(program.net).to("cpu", torch.float32, memory_format=torch.contiguous_format)
    with torch.no_grad():
        expected = program.with_net(reference, self_ensemble=False)(x)
    difference = float((engine(x) - expected).abs().mean())
    if not difference < 1e-4:
        raise R3LError(f"the exported graph does not reproduce PyTorch (mean difference {difference:.2g})")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__

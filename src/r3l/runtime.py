"""Where r3l runs: the device, and the process-wide torch settings a training run asks for.

:func:`configure_torch` is the one place that changes torch's global state (threads, deterministic algorithms,
cuDNN autotuning, TF32, dynamo's error handling). The command line calls it before training; a program that
drives :class:`r3l.training.trainer.Trainer` itself calls it too, or keeps its own settings.
"""

from __future__ import annotations

import torch

from r3l.errors import R3LError


def pick_device(name: str = "auto") -> torch.device:
    """``auto`` (CUDA if available, else the CPU), ``cpu``, ``cuda`` or ``cuda:N``; a clear error otherwise."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise R3LError(f"device {name!r}: expected auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise R3LError(f"device {name!r}: CUDA is not available on this machine")
    return device


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 in hardware (AVX512-BF16 or AMX), where PyTorch's bf16 autocast is
    fast; elsewhere it is emulated and slower than fp32."""
    cpu = getattr(torch, "cpu", None)
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    try:
        return any(getattr(cpu, name)() for name in checks if hasattr(cpu, name))
    except RuntimeError:
        return False


def cpu_prefers_channels_last() -> bool:
    """Whether NHWC convolutions are the fast layout on this CPU: on AVX-512 machines, measured 1.05–1.37× more
    training episodes per minute (fp32 and bf16, R3N and R3L recipes) and 1.1–2.6× faster inference in PyTorch
    (docs/performance.md); elsewhere unmeasured, so the plain layout."""
    return torch.backends.cpu.get_cpu_capability() == "AVX512"


def resolve_compile(train, device: torch.device, whole_update: bool) -> tuple[str, str]:
    """``train.compile`` and ``train.compile_mode`` (``train``: the config's ``train`` section) with ``auto``
    decided: the whole update compiled with CUDA graphs on CUDA for an algorithm whose shapes are static
    (``whole_update``: PPO's episode, where it was measured to help); eager on the CPU and for the supervised
    baselines."""
    cuda = device.type == "cuda"
    what, mode = train.compile, train.compile_mode
    if what == "auto":
        what = "all" if cuda and whole_update else "off"
    if mode == "auto":
        mode = "reduce-overhead" if cuda else "default"
    return what, mode


def configure_torch(train, device: torch.device | None = None) -> torch.device:
    """Apply the process-wide torch settings of a training config's ``train`` section for ``device`` (picked from
    ``train.device`` when not given) and return the device.

    ``train.threads`` (intra-op threads), ``train.deterministic`` (deterministic algorithms), cuDNN autotuning
    (``train.cudnn_benchmark``), TF32 matmuls and convolutions on CUDA (``train.tf32``), and, on CUDA with
    ``train.compile: auto`` (which may compile), dynamo falling back to eager where compilation fails (no C
    compiler for Triton, an unsupported GPU) rather than stopping the training.
    """
    tc = train
    if tc.threads:
        torch.set_num_threads(tc.threads)
    if tc.deterministic:
        torch.use_deterministic_algorithms(True)
    device = pick_device(tc.device) if device is None else device
    cuda = device.type == "cuda"
    tune = tc.cudnn_benchmark
    torch.backends.cudnn.benchmark = tune == "on" or (tune == "auto" and cuda and not tc.deterministic)
    if cuda:
        tf32 = tc.tf32 != "off"
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
    if tc.compile == "auto" and cuda:  # where auto may compile (resolve_compile): fall back, don't stop
        torch._dynamo.config.suppress_errors = True
    return device

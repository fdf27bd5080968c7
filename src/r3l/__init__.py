"""r3l: pixel-wise deep reinforcement learning on image batches; R3L denoising by residual recovery."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("r3l")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = ["Denoiser", "__version__"]


def __getattr__(name: str):
    """``r3l.Denoiser`` is imported on first use, so that ``import r3l.errors`` (the CLI's first import) does not
    load PyTorch."""
    if name == "Denoiser":
        from r3l.denoiser import Denoiser

        return Denoiser
    raise AttributeError(f"module 'r3l' has no attribute {name!r}")

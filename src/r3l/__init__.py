"""r3l: pixel-wise deep reinforcement learning on image batches; R3L denoising by residual recovery."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("r3l")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

from r3l.denoiser import Denoiser

__all__ = ["Denoiser", "__version__"]

"""r3l: pixel-wise deep reinforcement learning on image batches; R3L denoising by residual recovery."""

from r3l.version import __version__

__all__ = ["Denoiser", "__version__"]


def __getattr__(name: str):
    """``r3l.Denoiser`` is imported on first use, so that ``import r3l.errors`` (the CLI's first import) does not
    load PyTorch."""
    if name == "Denoiser":
        from r3l.inference.denoiser import Denoiser

        return Denoiser
    raise AttributeError(f"module 'r3l' has no attribute {name!r}")

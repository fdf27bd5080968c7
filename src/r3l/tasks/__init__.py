"""Batch image environments: every pixel of every image is an agent."""

from r3l.tasks.base import BatchImageEnv
from r3l.tasks.denoise import ResidualDenoiseEnv, make_env

__all__ = ["BatchImageEnv", "ResidualDenoiseEnv", "make_env"]

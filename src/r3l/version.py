"""The installed package's version (``r3l.__version__``), read from its metadata without importing PyTorch."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("r3l")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

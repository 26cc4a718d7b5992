"""The installed version of bnncompress (written into every archive)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("bnncompress")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0+unknown"

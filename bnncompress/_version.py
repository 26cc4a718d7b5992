"""The version of bnncompress (written into every archive; pyproject.toml reads it from here)."""

__version__ = "0.1.0"

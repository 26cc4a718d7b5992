"""The errors bnncompress raises for bad input.

Every error caused by a user's file, option or archive derives from
:class:`BnnCompressError`, so callers (and the CLI) can catch one class. Messages are
one sentence: what was wrong, and what to do about it.
"""

from __future__ import annotations


class BnnCompressError(Exception):
    """Base class of every error bnncompress raises for bad input."""


class PosteriorError(BnnCompressError):
    """A posterior source (file, guide or dict) cannot be read or is invalid."""


class ArchiveError(BnnCompressError):
    """An archive is missing, corrupt, truncated or of an unknown format version."""


class RateControlError(BnnCompressError):
    """A requested rate (bits per weight) or lambda cannot be used."""


class OptionError(BnnCompressError):
    """An option has a value that cannot be used (unknown method, device, format...)."""


class ModelMismatchError(BnnCompressError):
    """An archive's tensors do not fit the parameters of the module they are loaded into."""


class QualityWarning(UserWarning):
    """A pack succeeded but some values are poorly kept: a tensor collapsed to one value, rows
    collapsed to zero, or weights more certain than the quantization grid resolves."""

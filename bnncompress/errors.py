"""The errors bnncompress raises for bad input, and its warning category.

Every error caused by a user's file, option or archive derives from
:class:`BnnCompressError`, so callers (and the CLI) can catch one class. Messages are one
sentence: what was wrong, and what to do about it. A message names the parameters a caller
can change as ``«name»``: ``str(error)`` shows the Python keyword (``bits``), the CLI shows its
flag (``--bits``) through :meth:`BnnCompressError.render`.

Example:
    >>> e = OptionError("give either «bits» or «lam», not both")
    >>> str(e), e.render({"lam": "--lam"}, prefix="--")
    ('give either bits or lam, not both', 'give either --bits or --lam, not both')
"""

from __future__ import annotations

import re
from collections.abc import Mapping

_PARAMETER = re.compile(r"«([^»]+)»")


class BnnCompressError(Exception):
    """Base class of every error bnncompress raises for bad input."""

    def __str__(self) -> str:
        return self.render({})

    def render(self, names: Mapping[str, str], prefix: str = "") -> str:
        """The message with each ``«parameter»`` shown as ``names[parameter]``, or as
        ``prefix + parameter`` (underscores as dashes when a prefix is given)."""

        def show(match: re.Match) -> str:
            key = match.group(1)
            if key in names:
                return names[key]
            return prefix + key.replace("_", "-") if prefix else key

        return _PARAMETER.sub(show, Exception.__str__(self))  # not KeyError's, which adds quotes


class PosteriorError(BnnCompressError):
    """A posterior source (file, guide or dict) cannot be read or is invalid."""


class NotAPosteriorError(PosteriorError):
    """A file that holds no posterior of a kind bnncompress reads (e.g. point estimates, pickled objects)."""


class ArchiveError(BnnCompressError):
    """An archive is missing, corrupt, truncated or of an unknown format version."""


class RateControlError(BnnCompressError):
    """A requested rate (bits per weight) or lambda cannot be used."""


class OptionError(BnnCompressError):
    """An option has a value that cannot be used (unknown method, device, format...)."""


class NotFoundError(OptionError, KeyError):
    """A tensor name or word that an archive does not have (a ``KeyError``, as in a dict)."""

    def __str__(self) -> str:  # KeyError would show the message in quotes
        return self.render({})


class ArgumentTypeError(OptionError, TypeError):
    """A Python-API argument of the wrong type (a ``TypeError``, as numpy would raise)."""


class OutOfRangeError(OptionError, IndexError):
    """A row index beyond a tensor of an archive (an ``IndexError``, as numpy raises)."""


class ModelMismatchError(BnnCompressError):
    """An archive's tensors do not fit the parameters of the module they are loaded into."""


class QualityWarning(UserWarning):
    """A pack succeeded but some values are poorly kept or not what they may seem: a tensor
    collapsed to one value, rows collapsed to a constant vector, weights more certain than the
    quantization grid resolves; or the posterior was read with a caveat (sites whose supports are
    unknown load unconstrained, a flat latent not split into sites, correlations dropped,
    parameters ignored). The same lines are in ``PackResult.warnings``."""

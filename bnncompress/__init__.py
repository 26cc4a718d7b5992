"""bnncompress: compress Bayesian neural networks by their posterior uncertainty.

Example:
    >>> import bnncompress                                             # doctest: +SKIP
    >>> bnncompress.pack("params.pt", "small.bnc", vocab="vocab.txt", bits=2.0)  # doctest: +SKIP
    >>> a = bnncompress.load("small.bnc")                              # doctest: +SKIP
    >>> a.to_keyed_vectors("word_vectors").most_similar("king")        # doctest: +SKIP
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("bnncompress")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0+unknown"

from .errors import (
    ArchiveError,
    BnnCompressError,
    ModelMismatchError,
    OptionError,
    PosteriorError,
    QualityWarning,
    RateControlError,
)
from .evaluation import evaluate
from .loader import Archive, load
from .packing import PackResult, pack
from .posterior import Posterior, TensorPosterior, ivon_posterior, read_posterior
from .sweep import sweep

__all__ = [
    "Archive",
    "ArchiveError",
    "BnnCompressError",
    "ModelMismatchError",
    "OptionError",
    "PackResult",
    "Posterior",
    "PosteriorError",
    "QualityWarning",
    "RateControlError",
    "TensorPosterior",
    "__version__",
    "evaluate",
    "ivon_posterior",
    "load",
    "pack",
    "read_posterior",
    "sweep",
]

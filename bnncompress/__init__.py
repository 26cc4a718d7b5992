"""bnncompress: compress Bayesian neural networks by their posterior uncertainty.

Example:
    >>> import bnncompress                                             # doctest: +SKIP
    >>> bnncompress.pack("params.pt", "small.bnc", vocab="vocab.txt", bits=2.0)  # doctest: +SKIP
    >>> a = bnncompress.load("small.bnc")                              # doctest: +SKIP
    >>> a.to_keyed_vectors("word_vectors").most_similar("king")        # doctest: +SKIP
"""

from __future__ import annotations

from ._version import __version__
from .errors import (
    ArchiveError,
    ArgumentTypeError,
    BnnCompressError,
    ModelMismatchError,
    NotFoundError,
    OptionError,
    OutOfRangeError,
    PosteriorError,
    QualityWarning,
    RateControlError,
)
from .evaluation import evaluate
from .loader import Archive, load
from .packing import PackResult, pack
from .posterior import Posterior, TensorPosterior
from .sources import ivon_posterior, read_posterior
from .sweep import sweep


def __getattr__(name: str):
    """``CompressedEmbedding`` (a torch module) is imported on first use: ``import bnncompress`` stays free of torch."""
    if name == "CompressedEmbedding":
        from .serving import CompressedEmbedding

        return CompressedEmbedding
    raise AttributeError(f"module 'bnncompress' has no attribute {name!r}")


__all__ = [
    "Archive",
    "ArchiveError",
    "ArgumentTypeError",
    "BnnCompressError",
    "CompressedEmbedding",
    "ModelMismatchError",
    "NotFoundError",
    "OptionError",
    "OutOfRangeError",
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

"""What the skip-gram trainer checks before and after training: its options, the pretrained
vectors, the memory it will need, and that the posterior it returns is one ``pack`` can read.

Every check runs before the tables are allocated or once at the end (never per weight and step),
and fails with one line naming the option (``«dim»``, ``«lr»``, ...) and what to do.

Example:
    >>> check_options(dim=8, vocab_size=100, min_count=1, window=2, negatives=5, epochs=1, batch_size=64,
    ...               seed=0, lr=0.02, init_scale=0.05, subsample=1e-3, lr_decay=True, refine_means=False)
"""

from __future__ import annotations

import math
import numbers
import os
import resource
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..errors import ArgumentTypeError, OptionError

#: Largest Adam learning rate: a step moves each value by about «lr», and the prior's scale is 1.
LR_MAX = 1.0
#: Smallest and largest starting scale of the posterior.
INIT_SCALE_RANGE = (1e-6, 1.0)
#: Largest magnitude of a pretrained vector's value (squares and dot products stay far inside float32).
INIT_MAX = 1e4
#: log(scale) a trained posterior must keep to: scales stay positive, finite float32 (normal) numbers.
LOG_SCALE_RANGE = (-87.0, 88.0)
DIVERGED = "training diverged to non-finite values; lower «lr»"


def check_options(**options: Any) -> None:
    """Refuse option values training cannot use (whole numbers, ranges, finite rates)."""
    for name, value in options.items():
        if name in ("lr_decay", "refine_means"):
            if not isinstance(value, (bool, np.bool_)):
                raise ArgumentTypeError(f"«{name}» must be True or False, got {value!r}")
        elif name in ("lr", "init_scale", "subsample"):
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
                raise ArgumentTypeError(f"«{name}» must be a number, got {value!r}")
            low, high = {"lr": (0.0, LR_MAX), "init_scale": INIT_SCALE_RANGE, "subsample": (0.0, 1.0)}[name]
            if not (math.isfinite(value) and low <= value <= high and (value > 0 or name == "subsample")):
                rule = (
                    f"from {low:g} to {high:g}"
                    if name != "lr"
                    else f"above 0 and at most {LR_MAX:g} (0.001 to 0.1 are usual)"
                )
                raise OptionError(f"«{name}» must be a number {rule}, got {value}")
        else:
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
                raise ArgumentTypeError(f"«{name}» must be a whole number, got {value!r}")
            low = 0 if name == "seed" else 1
            if value < low:
                why = " (with no noise word every pair matches: vectors turn one way)" if name == "negatives" else ""
                raise OptionError(f"«{name}» must be at least {low}{why}, got {value}")


def init_shape(init: Any) -> tuple[int, int]:
    """(words, dimensions) of pretrained vectors: a dict word -> vector or gensim ``KeyedVectors``."""
    if hasattr(init, "index_to_key") and hasattr(init, "vector_size"):
        words, size = len(init.index_to_key), int(init.vector_size)
    elif isinstance(init, Mapping):
        words = len(init)
        size = int(np.size(next(iter(init.values())))) if words else 0
    else:
        raise ArgumentTypeError(
            f"«init_vectors» must be a dict word -> vector or gensim KeyedVectors, got {init!r:.60}"
        )
    if words == 0:
        raise OptionError("«init_vectors» hold no words; pass pretrained vectors of at least one word")
    if size == 0:
        raise OptionError("«init_vectors» have no dimensions; pass vectors of at least one value each")
    return words, size


def start_vectors(init: Any, vocab: Sequence[str], dim: int) -> np.ndarray:
    """The pretrained vectors of ``vocab`` as a float32 (V x dim) array: each of ``dim`` finite
    values of at most ``INIT_MAX`` in magnitude (larger ones overflow float32 in training)."""
    if hasattr(init, "index_to_key"):
        vectors = np.asarray(init[list(vocab)], dtype=np.float64).reshape(len(vocab), -1)
    else:
        vectors = np.empty((len(vocab), dim), np.float64)
        for i, word in enumerate(vocab):
            try:
                row = np.asarray(init[word], dtype=np.float64)
            except (TypeError, ValueError):
                raise ArgumentTypeError(f"the vector of {word!r} in «init_vectors» is not numbers") from None
            if row.shape != (dim,):
                raise OptionError(f"the vector of {word!r} in «init_vectors» has shape {row.shape}, not ({dim},)")
            vectors[i] = row
    bad = ~(np.abs(vectors) <= INIT_MAX)  # also NaN
    if bad.any():
        word = vocab[int(np.argmax(bad.any(axis=1)))]
        n = int(bad.sum())
        raise OptionError(
            f"{n:,} {'value' if n == 1 else 'values'} of «init_vectors» {'is' if n == 1 else 'are'} NaN, infinite or "
            f"beyond ±{INIT_MAX:g} "
            f"(e.g. in the vector of {word!r}); pass finite vectors of moderate size"
        )
    return vectors.astype(np.float32)


def memory_limit() -> int:
    """Bytes this process may use: the machine's memory, or a lower ``ulimit -v``."""
    try:
        available = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not POSIX
        return 1 << 62
    limit = resource.getrlimit(resource.RLIMIT_AS)[0]
    return available if limit == resource.RLIM_INFINITY else min(available, limit)


def check_memory(vocab_size: int, num_pairs: int, cfg: Any) -> None:
    """Refuse (naming the options to lower) training whose tables and steps would need more memory
    than :func:`memory_limit`: per site 7 float32 tables (means, log scales, scales, Adam's 4
    moments) plus the float64 start and result, per step the touched rows' samples and gradient
    buffers and the noise words' indices."""
    v, d, k = vocab_size, cfg.dim, cfg.negatives
    b = min(cfg.batch_size, num_pairs)
    rows = min(b, v) + min(b * (1 + k), v)  # touched rows of both tables
    tables = 104 * v * d + 32768 * d
    steps = 40 * d * rows + 56 * b * (1 + k) + 16 * num_pairs
    limit = memory_limit()
    if tables + steps > limit:
        lower = "«dim» or «vocab_size»" if tables >= steps else "«negatives» or «batch_size»"
        raise OptionError(
            f"training {v:,} words x {d:,} dims with {k:,} noise words per pair in batches of {b:,} needs about "
            f"{(tables + steps) / 2**30:,.1f} GiB, more than the {limit / 2**30:,.1f} GiB this process may use; "
            f"lower {lower}"
        )


def check_pairs_memory(num_pairs: int, window: int) -> None:
    """Refuse building more (center, context) pairs than memory holds (about 40 bytes each while built)."""
    limit = memory_limit()
    if 40 * num_pairs > limit:
        raise OptionError(
            f"the corpus yields {num_pairs:,} word pairs with «window» {window}, about {40 * num_pairs / 2**30:,.1f} "
            f"GiB to build, more than the {limit / 2**30:,.1f} GiB this process may use; lower «window»"
        )


def check_trained(posterior: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> None:
    """Refuse a trained posterior ``site -> (loc, log scale)`` that ``pack`` would: any non-finite
    mean, or a scale that is not a positive, finite float32 (training diverged)."""
    low, high = LOG_SCALE_RANGE
    for loc, rho in posterior.values():
        if not (np.isfinite(loc).all() and ((rho >= low) & (rho <= high)).all()):
            raise OptionError(DIVERGED)

"""Entropy coding of quantized symbols with constriction's ANS coder.

Each tensor's symbols are coded with one categorical entropy model whose table is the
symbol counts (stored in the archive). Encoder and decoder build the model from the same
integer counts, so decoding is bit-exact. A one-symbol alphabet needs no coded words.
"""

from __future__ import annotations

import numpy as np

#: Identifies this coding scheme in archives (see docs/FORMAT.md).
CODER_ID = "constriction-ans-categorical"


def _model(counts: np.ndarray):
    import constriction

    probabilities = np.asarray(counts, dtype=np.float64)
    return constriction.stream.model.Categorical(probabilities / probabilities.sum(), perfect=False)


def encode(symbols: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """ANS-encode ``symbols`` (int32 indices into ``counts``) into uint32 words.

    Example:
        >>> s = np.array([0, 1, 1, 2], dtype=np.int32)
        >>> words = encode(s, np.array([1, 2, 1]))
        >>> decode(words, np.array([1, 2, 1]), 4).tolist()
        [0, 1, 1, 2]
    """
    import constriction

    if len(counts) <= 1:
        return np.zeros(0, dtype=np.uint32)
    coder = constriction.stream.stack.AnsCoder()
    coder.encode_reverse(np.ascontiguousarray(symbols, dtype=np.int32), _model(counts))
    return coder.get_compressed()


def decode(words: np.ndarray, counts: np.ndarray, num_symbols: int) -> np.ndarray:
    """Decode ``num_symbols`` int32 symbols from ``words`` with the model given by ``counts``."""
    import constriction

    if len(counts) <= 1:
        return np.zeros(num_symbols, dtype=np.int32)
    # The coded size can never be below the information content of the symbols the counts
    # describe; checking this first refuses absurd declared sizes before allocating.
    if information_bits(counts) > 32 * len(words) * 1.001 + 96:
        raise ValueError(f"the entropy model describes more information than {len(words)} coded words can hold")
    coder = constriction.stream.stack.AnsCoder(np.ascontiguousarray(words, dtype=np.uint32))
    try:
        symbols = coder.decode(_model(counts), num_symbols)
    except BaseException as exc:  # constriction reports malformed input as a Rust panic
        if isinstance(exc, (KeyboardInterrupt, SystemExit, MemoryError)):
            raise
        raise ValueError(f"the coded words do not decode ({type(exc).__name__})") from None
    if not coder.is_empty():
        raise ValueError("coded words left over after decoding")
    if not np.array_equal(np.bincount(symbols, minlength=len(counts)), counts):
        raise ValueError("the decoded symbols do not match the entropy model's counts")
    return symbols


def information_bits(counts: np.ndarray) -> float:
    """The empirical information content sum_k c_k log2(N / c_k): what the coder will need,
    to within a fraction of a percent plus one or two words."""
    c = np.asarray(counts, dtype=np.float64)
    c = c[c > 0]
    if len(c) <= 1:
        return 0.0
    return float(np.sum(c * np.log2(c.sum() / c)))

"""Entropy coding of quantized symbols with constriction's ANS coder.

Symbols are coded with categorical entropy models whose tables are the symbol counts (stored
in the archive): one model for a tensor, or (M, K) counts for M models, symbol i using model
i mod M (one per column). Encoder and decoder build the models from the same integer counts,
so decoding is bit-exact. A third form is *classed*: (C, M, K) float64 weights with ``classes``,
one class per block; symbol i of block b uses model (classes[b], i mod M). A one-symbol alphabet
needs no coded words. This module is the coder only: what symbols mean is the record kinds'
(:mod:`bnncompress.records`).

Symbols are coded in blocks of whole rows (:mod:`bnncompress.geometry`), each its own ANS
stream, with a jump table of word offsets: one row is decoded by decoding its block only.

Blocks are coded by :mod:`bnncompress._ans`, numba kernels that produce exactly
constriction's words and symbols but release the GIL and code blocks on all cores. Small
decodes (a few rows) use constriction itself when numba is not loaded yet, so that a first
lookup does not wait for numba's import. ``BNNCOMPRESS_CODER=constriction`` forces
constriction everywhere (the reference the kernels are tested against).
"""

from __future__ import annotations

import os
import sys

import constriction  # imported with bnncompress (~2 ms) rather than on an archive's first row lookup
import numpy as np

#: Identifies this coding scheme in archives (see docs/FORMAT.md).
CODER_ID = "constriction-ans-categorical"


def _model(counts: np.ndarray):
    """constriction's model for a 1-D table of counts."""
    probabilities = np.asarray(counts, dtype=np.float64)
    return constriction.stream.model.Categorical(probabilities / probabilities.sum(), perfect=False)


def probability_rows(counts: np.ndarray) -> np.ndarray:
    """Each model's probabilities, float64 (models, K): a row of counts or weights over its sum
    (the one normalization the kernels' CDFs and constriction's models are built from)."""
    p = np.asarray(counts, dtype=np.float64).reshape(-1, np.shape(counts)[-1])
    return p / p.sum(axis=1, keepdims=True)


def _constriction(counts: np.ndarray, num_symbols: int) -> tuple:
    """``(model, params)`` for constriction's coders: one model for 1-D counts; for (M, K) counts
    the ``Categorical(perfect=False)`` family with one probability row per symbol (symbol i: row i mod M)."""
    if np.ndim(counts) == 1:
        return (_model(counts),)
    p = probability_rows(counts)
    rows = np.resize(np.arange(len(p)), num_symbols)
    return constriction.stream.model.Categorical(perfect=False), np.ascontiguousarray(p[rows])


def check_classes(counts: np.ndarray, classes: np.ndarray | None, num_blocks: int) -> np.ndarray | None:
    """``classes`` as int64, one per block, for (C, M, K) weights (None for (K,) or (M, K) counts);
    ValueError where they are missing, misplaced, of the wrong length or out of range, or where a
    block's class has a model whose weights are not finite, nonnegative and of positive sum."""
    if np.ndim(counts) != 3:
        if classes is not None:
            raise ValueError("classes go with (classes, models, K) weights only")
        return None
    if classes is None:
        raise ValueError("(classes, models, K) weights need classes, one per block")
    c = np.asarray(classes)
    if c.ndim != 1 or len(c) != num_blocks:
        raise ValueError(f"{c.size} classes for {num_blocks} blocks")
    if c.size and c.dtype.kind not in "iu":
        raise ValueError(f"classes must be integers, not {c.dtype}")
    c = c.astype(np.int64)
    n_classes = np.shape(counts)[0]
    if c.size and (int(c.min()) < 0 or int(c.max()) >= n_classes):
        raise ValueError(f"classes outside 0..{n_classes - 1}")
    weights = np.asarray(counts, dtype=np.float64)
    if not np.all(np.isfinite(weights)) or np.any(weights < 0):
        raise ValueError("the entropy models' weights must be finite and nonnegative")
    empty = (np.bincount(c, minlength=n_classes) > 0)[:, None] & (weights.sum(axis=2) <= 0)
    if empty.any():
        k, m = (int(i) for i in np.argwhere(empty)[0])
        raise ValueError(f"model {m} of class {k} codes blocks but its weights sum to 0")
    return c


def _table(counts: np.ndarray, classes: np.ndarray | None, block: int) -> np.ndarray:
    """The (K,) or (M, K) table that codes ``block``."""
    return counts if classes is None else np.asarray(counts)[classes[block]]


def alphabet_size(counts: np.ndarray) -> int:
    """Symbols per model (the last dimension of the counts table)."""
    return int(np.shape(counts)[-1])


#: Decodes of at least this many symbols use the numba kernels even before numba is imported.
NUMBA_DECODE_SYMBOLS = 1 << 18


def _kernels(num_symbols: int | None = None):
    """The numba coder module, or None where constriction should code (see the module doc)."""
    if os.environ.get("BNNCOMPRESS_CODER", "") == "constriction":
        return None
    if num_symbols is not None and num_symbols < NUMBA_DECODE_SYMBOLS and "bnncompress._ans" not in sys.modules:
        return None
    from . import _ans

    return _ans


def encode_blocks(
    symbols: np.ndarray, counts: np.ndarray, block_size: int, classes: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Encode ``symbols`` in blocks of ``block_size``: all words, and the jump table
    (uint64 word offsets, one more than there are blocks). (C, M, K) weights need ``classes``.

    Example:
        >>> s = np.array([0, 1, 1, 2, 1, 0], dtype=np.int32)
        >>> words, offsets = encode_blocks(s, np.array([2, 3, 1]), 4)
        >>> decode_blocks(words, offsets, np.array([2, 3, 1]), 6, 4).tolist()
        [0, 1, 1, 2, 1, 0]
    """
    starts = range(0, len(symbols), block_size)
    classes = check_classes(counts, classes, len(starts))
    if alphabet_size(counts) <= 1:
        return np.zeros(0, dtype=np.uint32), np.zeros(len(starts) + 1, dtype=np.uint64)
    kernels = _kernels()
    if kernels is not None:
        return kernels.encode_blocks(symbols, counts, block_size, classes)
    parts = [encode(symbols[i : i + block_size], _table(counts, classes, b)) for b, i in enumerate(starts)]
    offsets = np.zeros(len(parts) + 1, dtype=np.uint64)
    np.cumsum([len(p) for p in parts], out=offsets[1:])
    return (np.concatenate(parts) if parts else np.zeros(0, np.uint32)), offsets


def decode_blocks(
    words: np.ndarray,
    offsets: np.ndarray,
    counts: np.ndarray,
    num_symbols: int,
    block_size: int,
    blocks: list[int] | None = None,
    classes: np.ndarray | None = None,
) -> np.ndarray:
    """Decode all blocks (checking that their histogram equals ``counts``; for (C, M, K) weights,
    that it is positive exactly where the weights are), or only ``blocks`` (their symbols
    concatenated, in the order given). ``classes``: one per block of the tensor, for (C, M, K) weights."""
    everything = blocks is None
    blocks = list(range(len(offsets) - 1)) if everything else blocks
    classes = check_classes(counts, classes, len(offsets) - 1)
    sizes = [min(block_size, num_symbols - b * block_size) for b in blocks]
    if alphabet_size(counts) <= 1:
        return np.zeros(sum(sizes), dtype=np.int32)
    check_information(counts, len(words), len(offsets) - 1, classes)
    kernels = _kernels(sum(sizes))
    if kernels is not None:
        symbols, histogram = kernels.decode_blocks(
            words, offsets, counts, num_symbols, block_size, np.array(blocks, dtype=np.int64), classes
        )
    else:
        parts = [
            decode(words[int(offsets[b]) : int(offsets[b + 1])], _table(counts, classes, b), n)
            for b, n in zip(blocks, sizes)
        ]
        symbols = np.concatenate(parts) if parts else np.zeros(0, np.int32)
        histogram = symbol_histogram(symbols, counts, classes, block_size) if everything else None
    if everything:
        check_histogram(histogram, counts)
    return symbols


def check_information(counts: np.ndarray, num_words: int, num_blocks: int, classes: np.ndarray | None = None) -> None:
    """Raise ValueError where exact symbol ``counts`` hold more information than ``num_words`` coded
    words (and a few bits of state per block) can: checked before decoding, else a forged archive
    has the decoder produce every declared symbol from a few words. (C, M, K) weights (``classes``
    given) are levels, not counts: they bound nothing.

    Example:
        >>> check_information(np.array([500, 500]), 40, 1)  # 1,000 bits in 1,280: fine
        >>> check_information(np.array([5000, 5000]), 40, 1)
        Traceback (most recent call last):
        ValueError: the entropy model describes more information than 40 coded words can hold
    """
    if classes is None and _costed_information(counts, num_blocks) > 32 * num_words * 1.001 + 96 * max(num_blocks, 1):
        raise ValueError(f"the entropy model describes more information than {num_words} coded words can hold")


def _costed_information(counts: np.ndarray, num_blocks: int) -> float:
    """:func:`information_bits` less what a block may code for (nearly) nothing. A block's symbols are coded
    last to first onto an empty state x, and a symbol of CDF start c and width f while x < f adds c to x:
    a block's final run of symbol 0 (c = 0) costs no bits at all (a block of nothing else has no words),
    and any other symbol is that cheap at most f / c + 1 times a block (x only grows until it is flushed).
    The CDF is the coder's (:func:`bnncompress._ans.quantized_cdf`), to within one unit (hence the margins)."""
    table = np.asarray(counts, dtype=np.float64).reshape(-1, np.shape(counts)[-1])
    total = table.sum(axis=1, keepdims=True)
    k = table.shape[1]
    with np.errstate(divide="ignore", invalid="ignore"):
        before = np.cumsum(table, axis=1) - table  # each symbol's CDF start, as the coder computes it
        start = np.floor(before / total * ((1 << _CDF_BITS) - k)) + np.arange(k)
        width = np.diff(start, axis=1, append=float(1 << _CDF_BITS))
        cheap = np.where(start > 1, max(num_blocks, 1) * ((width + 2) / (start - 1) + 1), np.inf)
        terms = np.maximum(table - cheap, 0.0) * np.log2(total / table)
    return float(np.sum(terms, where=table > 0))


#: Bits of the coder's probabilities (:data:`bnncompress._ans.PRECISION`: the CDFs run from 0 to 2**24).
_CDF_BITS = 24


def check_histogram(histogram: np.ndarray, counts: np.ndarray) -> None:
    """ValueError unless a whole tensor's decoded ``histogram`` fits its tables: equal to (K,) or
    (M, K) counts; positive exactly where (C, M, K) weights are."""
    table = np.asarray(counts)
    histogram = np.reshape(histogram, table.shape)
    if table.ndim < 3 and not np.array_equal(histogram, table):
        raise ValueError("the decoded symbols do not match the entropy model's counts")
    if table.ndim == 3 and not np.array_equal(histogram > 0, table > 0):
        raise ValueError("the decoded symbols do not match the entropy model's tables")


def decode_prefixes(
    words: np.ndarray,
    offsets: np.ndarray,
    counts: np.ndarray,
    num_symbols: int,
    block_size: int,
    blocks: list[int],
    lengths: list[int],
    classes: np.ndarray | None = None,
) -> np.ndarray:
    """The first ``lengths[i]`` symbols of each of ``blocks`` (whole rows), concatenated in that
    order: a block decoded only up to the rows asked for. constriction decodes them until numba
    is loaded (then the kernels of :mod:`bnncompress._rows_kernels`); no histogram check.
    ``classes`` as for :func:`decode_blocks`.

    Example:
        >>> s = np.array([0, 1, 1, 2, 1, 0], dtype=np.int32)
        >>> words, offsets = encode_blocks(s, np.array([2, 3, 1]), 4)
        >>> decode_prefixes(words, offsets, np.array([2, 3, 1]), 6, 4, [1, 0], [1, 3]).tolist()
        [1, 0, 1, 1]
    """
    total = int(sum(lengths))
    classes = check_classes(counts, classes, len(offsets) - 1)
    if alphabet_size(counts) <= 1:
        return np.zeros(total, dtype=np.int32)
    if "bnncompress._rows_kernels" in sys.modules and os.environ.get("BNNCOMPRESS_CODER", "") != "constriction":
        from . import _ans, _rows_kernels

        cdfs, tables = _rows_kernels.coder_tables(counts)
        bases, period = _ans.model_bases(counts, classes)
        starts = np.zeros(len(blocks) + 1, dtype=np.int64)
        np.cumsum(lengths, out=starts[1:])
        out, status = np.empty(total, dtype=np.int32), np.zeros(len(blocks), dtype=np.int8)
        _rows_kernels.decode_prefixes(
            np.ascontiguousarray(words, np.uint32),
            np.ascontiguousarray(offsets, np.int64),
            np.asarray(blocks, np.int64),
            starts,
            block_size,
            num_symbols,
            cdfs,
            tables,
            bases,
            period,
            out,
            status,
        )
        if np.any(status == _rows_kernels.BAD_FIRST_WORD):
            raise ValueError("the coded words do not decode (a block ends in a zero word)")
        if np.any(status == _rows_kernels.WORDS_LEFT):
            raise ValueError("coded words left over after decoding")
        return out
    sizes = [min(block_size, num_symbols - b * block_size) for b in blocks]
    parts = [
        _decode_prefix(words[int(offsets[b]) : int(offsets[b + 1])], _table(counts, classes, b), n, n == size)
        for b, n, size in zip(blocks, lengths, sizes)
    ]
    return np.concatenate(parts) if parts else np.zeros(0, np.int32)


def _decode_prefix(words: np.ndarray, counts: np.ndarray, n: int, whole: bool) -> np.ndarray:
    """The first ``n`` symbols of one stream, by constriction (all of it if ``whole``: no words
    may be left over); per-column models in chunks of whole rows that reuse one table of probabilities."""
    coder = constriction.stream.stack.AnsCoder(np.ascontiguousarray(words, dtype=np.uint32))
    try:
        if np.ndim(counts) == 1:
            symbols = coder.decode(_model(counts), n)
        else:
            p = probability_rows(counts)
            chunk = np.tile(p, (max(1, min(n, _PREFIX_CHUNK) // len(p)), 1))
            family = constriction.stream.model.Categorical(perfect=False)
            parts = [coder.decode(family, chunk[: min(len(chunk), n - i)]) for i in range(0, n, len(chunk))]
            symbols = np.concatenate(parts or [np.zeros(0, np.int32)]).astype(np.int32)
    except BaseException as exc:  # constriction reports malformed input as a Rust panic
        if isinstance(exc, (KeyboardInterrupt, SystemExit, MemoryError)):
            raise
        raise ValueError(f"the coded words do not decode ({type(exc).__name__})") from None
    if whole and not coder.is_empty():
        raise ValueError("coded words left over after decoding")
    return symbols


_PREFIX_CHUNK = 4096


def symbol_histogram(
    symbols: np.ndarray, counts: np.ndarray, classes: np.ndarray | None = None, block_size: int = 0
) -> np.ndarray:
    """Occurrences of each symbol of each model, in the shape of ``counts`` (whole rows of symbols;
    for (C, M, K) weights, all blocks of ``block_size`` in order, block b of class ``classes[b]``)."""
    k = alphabet_size(counts)
    if np.ndim(counts) == 1:
        return np.bincount(symbols, minlength=k)
    models = int(np.prod(np.shape(counts)[:-1]))
    if np.ndim(counts) == 3:
        period = np.shape(counts)[1]
        i = np.arange(len(symbols))
        model = np.asarray(classes, np.int64)[i // block_size] * period + (i % block_size) % period
        cells = model * k + symbols
    else:
        cells = np.resize(np.arange(models) * k, len(symbols)) + symbols
    return np.bincount(cells, minlength=models * k).reshape(np.shape(counts))


def encode(symbols: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """ANS-encode ``symbols`` (int32 indices into ``counts``, or into row ``i mod M`` of (M, K)
    counts or weights) into uint32 words, with constriction.

    Example:
        >>> s = np.array([0, 1, 1, 2], dtype=np.int32)
        >>> words = encode(s, np.array([1, 2, 1]))
        >>> decode(words, np.array([1, 2, 1]), 4).tolist()
        [0, 1, 1, 2]
    """
    if alphabet_size(counts) <= 1:
        return np.zeros(0, dtype=np.uint32)
    coder = constriction.stream.stack.AnsCoder()
    coder.encode_reverse(np.ascontiguousarray(symbols, dtype=np.int32), *_constriction(counts, len(symbols)))
    return coder.get_compressed()


def decode(words: np.ndarray, counts: np.ndarray, num_symbols: int) -> np.ndarray:
    """Decode ``num_symbols`` int32 symbols from ``words`` with the model(s) given by ``counts``
    (one ANS stream; :func:`decode_blocks` checks sizes and the histogram)."""
    if alphabet_size(counts) <= 1:
        return np.zeros(num_symbols, dtype=np.int32)
    coder = constriction.stream.stack.AnsCoder(np.ascontiguousarray(words, dtype=np.uint32))
    try:
        symbols = (
            coder.decode(*_constriction(counts, num_symbols))
            if np.ndim(counts) > 1
            else coder.decode(_model(counts), num_symbols)
        )
    except BaseException as exc:  # constriction reports malformed input as a Rust panic
        if isinstance(exc, (KeyboardInterrupt, SystemExit, MemoryError)):
            raise
        raise ValueError(f"the coded words do not decode ({type(exc).__name__})") from None
    if not coder.is_empty():
        raise ValueError("coded words left over after decoding")
    return symbols


def information_bits(counts: np.ndarray) -> float:
    """The empirical information content sum_k c_k log2(N / c_k), summed over models (rows of
    (M, K) counts): what the coder will need, to within a fraction of a percent plus a few words."""
    table = np.asarray(counts, dtype=np.float64).reshape(-1, np.shape(counts)[-1])
    used = table > 0  # a model with one used symbol costs nothing: its term is c log2(c / c) = 0
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = table * np.log2(table.sum(axis=1, keepdims=True) / table)
    return float(np.sum(terms, where=used))


def cheapest_class_merge(counts: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """(classes, models, K) counts with neighbouring classes merged (2i and 2i + 1, as often as the
    number of classes stays whole) where that codes smaller: of every halving, the one with the
    fewest bits of information plus a one-byte level per (class, symbol some class uses). Rows in
    an order that tells nothing (a shuffled vocabulary, a layer's units) code best as one class.
    ``scale``: each count stands for that many symbols (a subsample's counts, as rate control has them).

    Example:
        >>> alike = np.array([[[50, 30, 20]], [[52, 28, 20]]])  # two classes of one model
        >>> unlike = np.array([[[100, 0, 0]], [[0, 0, 100]]])
        >>> cheapest_class_merge(alike).tolist(), cheapest_class_merge(unlike).shape
        ([[[102, 58, 40]]], (2, 1, 3))
    """
    used = int((counts > 0).any(axis=0).sum())
    best, best_bits = counts, scale * information_bits(counts) + 8 * len(counts) * used
    while len(counts) > 1 and len(counts) % 2 == 0:
        counts = counts.reshape(len(counts) // 2, 2, *counts.shape[1:]).sum(axis=1)
        bits = scale * information_bits(counts) + 8 * len(counts) * used
        if bits < best_bits:
            best, best_bits = counts, bits
    return best

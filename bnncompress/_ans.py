"""constriction's ANS coder re-implemented as numba kernels, parallel over row blocks.

The archive's coded words are defined by constriction (docs/FORMAT.md): an ``AnsCoder``
(32-bit words, 64-bit state) with ``Categorical(p, perfect=False)`` models, i.e. a 24-bit
fixed-point CDF made by constriction's ``fast_quantized_cdf``. A tensor has one model, or
one per column (``counts`` of shape (M, K)): symbol i of a block then uses model ``i mod M``
(blocks hold whole rows of M symbols), as constriction's ``Categorical(perfect=False)`` model
family does with a row of probabilities per symbol. (C, M, K) weights are C such sets: block b
uses models ``classes[b] * M + i mod M`` of the C * M CDFs (its *base* and *period*, from
:func:`model_bases`). constriction holds the GIL,
so its coders cannot run on two cores of one process. These kernels compute exactly the
same CDF, the same words when encoding and the same symbols when decoding (checked against
constriction in tests/test_parallel_coding.py), release the GIL, and code the independent
blocks of a tensor in parallel (numba ``prange``).

Kept in its own module so that importing bnncompress does not import numba;
:mod:`bnncompress.coding` decides when to use it.
"""

from __future__ import annotations

import functools
import os
import threading

import numpy as np

from .forksafe import in_forked_child
from .numbaenv import imported_numba, numba_threads, user_cache, writable_cache

numba = imported_numba()  # (numba's environment checked first: NUMBA_NUM_THREADS=0 fails its import)
prange = numba.prange
writable_cache([os.path.join(os.path.dirname(__file__), "__pycache__"), user_cache()])

PRECISION = 24
_LOOKUP_BITS = 12  # the decoder finds a symbol by a 4096-entry table and a short forward scan

_U32_MASK = np.uint64(0xFFFFFFFF)
_Q_MASK = np.uint64((1 << PRECISION) - 1)
_WORD_BITS = np.uint64(32)
_PRECISION = np.uint64(PRECISION)
_FLUSH_SHIFT = np.uint64(64 - PRECISION)
_REFILL_BELOW = np.uint64(1 << 32)
_LOOKUP_SHIFT = np.uint64(PRECISION - _LOOKUP_BITS)

#: Status codes of the decode kernel.
OK, BAD_FIRST_WORD, WORDS_LEFT = 0, 1, 2


def serial_twin(kernel, name: str, **options):
    """A non-parallel njit compile of a ``parallel=True`` kernel (``prange`` runs as ``range``),
    under its own name so that numba's on-disk caches of the two never overwrite each other;
    ``options``: the kernel's other njit options (``fastmath``)."""
    import types

    f = getattr(kernel, "py_func", kernel)  # NUMBA_DISABLE_JIT=1: the plain Python function
    names = {"co_name": name, "co_qualname": name} if hasattr(f.__code__, "co_qualname") else {"co_name": name}
    twin = types.FunctionType(f.__code__.replace(**names), f.__globals__, name, f.__defaults__)  # (3.10: no qualname)
    twin.__qualname__ = name
    return numba.njit(cache=True, nogil=True, **options)(twin)


def quantized_cdf(counts: np.ndarray) -> np.ndarray:
    """constriction's 24-bit CDF for ``Categorical(counts / counts.sum(), perfect=False)``:
    ``K + 1`` uint64 values from 0 to 2**24 (symbol k has ``cdf[k + 1] - cdf[k] >= 1``)."""
    probabilities = np.asarray(counts, dtype=np.float64)
    return _fast_quantized_cdf(probabilities / probabilities.sum())


def quantized_cdfs(counts: np.ndarray) -> np.ndarray:
    """One CDF per model: ``counts`` of shape (K,), (M, K) or (C, M, K) -> uint64 (C * M, K + 1);
    a model whose weights sum to 0 (which no block may use) gets the uniform CDF."""
    table = np.asarray(counts).reshape(-1, np.shape(counts)[-1])
    empty = ~(table.sum(axis=1, dtype=np.float64) > 0)
    if empty.any():
        table = np.where(empty[:, None], 1.0, table)
    p = np.asarray(table, dtype=np.float64)
    return _fast_quantized_cdfs(p / p.sum(axis=1, keepdims=True))  # (as coding.probability_rows)


def model_bases(counts: np.ndarray, classes: np.ndarray | None) -> tuple[np.ndarray, int]:
    """The blocks' first models (int64: one per block, or one for all) and the models a block
    cycles through: ``(classes * M, M)`` for (C, M, K) weights (classes checked by
    :func:`bnncompress.coding.check_classes`), else ``([0], number of models)``."""
    if np.ndim(counts) == 3:
        period = int(np.shape(counts)[1])
        return np.asarray(classes, dtype=np.int64) * period, period
    return np.zeros(1, dtype=np.int64), int(np.prod(np.shape(counts)[:-1]))


@numba.njit(cache=True, nogil=True, inline="always")
def block_base(bases, b):  # pragma: no cover - compiled
    """Block b's first model: bases[b], or bases[0] for all blocks (:func:`model_bases`)."""
    return bases[b] if bases.shape[0] > 1 else bases[0]


@numba.njit(cache=True, nogil=True, inline="always")
def block_starts(blocks, size, total):  # pragma: no cover - compiled
    """Where each of ``blocks`` (units of ``size``, the last of ``total`` maybe shorter) starts when
    they are laid out one after another: ``len(blocks) + 1`` offsets from 0."""
    starts = np.empty(blocks.shape[0] + 1, dtype=np.int64)
    starts[0] = 0
    for i in range(blocks.shape[0]):
        starts[i + 1] = starts[i] + min(size, total - blocks[i] * size)
    return starts


@numba.njit(cache=True, nogil=True, inline="always")
def _fast_quantized_cdf_into(p, cdf):  # pragma: no cover - compiled
    # constriction::stream::model::categorical::fast_quantized_cdf, for f64 probabilities:
    # scale = (2^24 - K) / sum(p), then left[i] = floor(sum(p[:i]) * scale) + i; sums left to right in f64.
    k = p.shape[0]
    normalization = 0.0
    for i in range(k):
        normalization += p[i]
    scale = float((1 << PRECISION) - k) / normalization
    cumulative = 0.0
    for i in range(k):
        cdf[i] = np.uint64(np.int64(cumulative * scale) + i)
        cumulative += p[i]
    cdf[k] = np.uint64(1 << PRECISION)


@numba.njit(cache=True, nogil=True)
def _fast_quantized_cdf(p):  # pragma: no cover - compiled
    cdf = np.empty(p.shape[0] + 1, dtype=np.uint64)
    _fast_quantized_cdf_into(p, cdf)
    return cdf


@numba.njit(cache=True, nogil=True)
def _fast_quantized_cdfs(p):  # pragma: no cover - compiled
    # _fast_quantized_cdf of each row of p, written in place (an array assignment would compile
    # numba's shape-mismatch message: 2 s on a cold cache)
    cdfs = np.empty((p.shape[0], p.shape[1] + 1), dtype=np.uint64)
    for m in range(p.shape[0]):
        _fast_quantized_cdf_into(p[m], cdfs[m])
    return cdfs


@numba.njit(cache=True, nogil=True)
def lookup_tables_into(cdfs, bits, table):  # pragma: no cover - compiled
    """table[m, j] = the symbol of model m whose interval holds quantile j << (24 - bits): where
    the decoder's forward scan for a quantile starts (:func:`pop_symbol`)."""
    shift = np.uint64(PRECISION - bits)
    for m in range(cdfs.shape[0]):
        s = 0
        for j in range(1 << bits):
            q = np.uint64(j) << shift
            while cdfs[m, s + 1] <= q:
                s += 1
            table[m, j] = s


@numba.njit(cache=True, nogil=True, inline="always")
def read_initial_state(words, wstart, wstop):  # pragma: no cover - compiled
    """constriction's ``read_initial_state`` of the stream words[wstart:wstop]: ``(state, pos, ok)``,
    ``ok`` False where its last word is zero (constriction refuses that)."""
    pos = wstop
    state = np.uint64(0)
    if pos > wstart:
        pos -= 1
        state = np.uint64(words[pos])
        if state == 0:
            return state, pos, False
        if pos > wstart:
            pos -= 1
            state = (state << _WORD_BITS) | np.uint64(words[pos])
    return state, pos, True


@numba.njit(cache=True, nogil=True, inline="always")
def pop_symbol(words, wstart, pos, state, cdfs, tables, m, shift):  # pragma: no cover - compiled
    """One decoding step with model ``m``: ``(symbol, state, pos)``. ``tables`` (from
    :func:`lookup_tables_into` with ``24 - shift`` bits) gives where the scan for the symbol starts;
    the state is refilled from words[pos - 1], words are read down to ``wstart``."""
    q = state & _Q_MASK
    s = np.int64(tables[m, q >> shift])
    while cdfs[m, s + 1] <= q:
        s += 1
    left = cdfs[m, s]
    state = (state >> _PRECISION) * (cdfs[m, s + 1] - left) + (q - left)
    if state < _REFILL_BELOW and pos > wstart:
        pos -= 1
        state = (state << _WORD_BITS) | np.uint64(words[pos])
    return s, state, pos


@numba.njit(cache=True, nogil=True, inline="always")
def _encode_stream(symbols, start, stop, cdfs, base, period, out):  # pragma: no cover - compiled
    """Encode symbols[start:stop] in reverse (so they decode forwards) into ``out``; returns
    the number of words. Symbol i uses model base + (i - start) mod period. Matches constriction's
    AnsCoder.encode_reverse + get_compressed."""
    state = np.uint64(0)
    n = 0
    m = base + (stop - 1 - start) % period
    last = base + period - 1
    for i in range(stop - 1, start - 1, -1):
        s = symbols[i]
        left = cdfs[m, s]
        prob = cdfs[m, s + 1] - left
        if (state >> _FLUSH_SHIFT) >= prob:
            out[n] = np.uint32(state & _U32_MASK)
            n += 1
            state = state >> _WORD_BITS
        state = ((state // prob) << _PRECISION) | (left + state % prob)
        m = m - 1 if m > base else last
    low = np.uint32(state & _U32_MASK)
    high = np.uint32(state >> _WORD_BITS)
    if high != 0:
        out[n] = low
        out[n + 1] = high
        n += 2
    elif low != 0:
        out[n] = low
        n += 1
    return n


@numba.njit(parallel=True, cache=True, nogil=True)
def encode_blocks_into(symbols, block_size, cdfs, bases, period, scratch, lengths):  # pragma: no cover - compiled
    """Encode each block of ``block_size`` symbols into its own stretch of ``scratch``
    (``block_size + 2`` words per block; block b with models base + i mod period, :func:`block_base`);
    ``lengths[b]`` receives block b's word count."""
    n = symbols.shape[0]
    capacity = block_size + 2
    for b in prange(lengths.shape[0]):
        start = b * block_size
        stop = min(start + block_size, n)
        out = scratch[b * capacity : (b + 1) * capacity]
        lengths[b] = _encode_stream(symbols, start, stop, cdfs, block_base(bases, b), period, out)


@numba.njit(cache=True, nogil=True, inline="always")
def _decode_stream(
    words, wstart, wstop, cdfs, tables, base, period, out, ostart, n, hist
):  # pragma: no cover - compiled
    """Decode ``n`` symbols from words[wstart:wstop] into out[ostart:] (symbol i with model
    base + i mod period), counting them in ``hist[model]``. Returns OK, or an error code for
    words constriction would refuse or leave over."""
    state, pos, ok = read_initial_state(words, wstart, wstop)
    if not ok:
        return BAD_FIRST_WORD
    m = base
    end = base + period
    for i in range(n):
        s, state, pos = pop_symbol(words, wstart, pos, state, cdfs, tables, m, _LOOKUP_SHIFT)
        out[ostart + i] = s
        hist[m, s] += 1
        m = m + 1 if m + 1 < end else base
    if state != 0 or pos != wstart:
        return WORDS_LEFT
    return OK


@numba.njit(parallel=True, cache=True, nogil=True)
def decode_blocks_into(
    words, offsets, blocks, block_size, num_symbols, cdfs, tables, bases, period, out, hist, status
):  # pragma: no cover - compiled
    """Decode ``blocks`` (indices into the jump table ``offsets``; block b with models
    base + i mod period, :func:`block_base`) one after another into ``out``; block i's symbol
    histogram goes to hist[i] and its status to status[i]."""
    starts = block_starts(blocks, block_size, num_symbols)
    for i in prange(blocks.shape[0]):
        b = blocks[i]
        n = starts[i + 1] - starts[i]
        status[i] = _decode_stream(
            words, offsets[b], offsets[b + 1], cdfs, tables, block_base(bases, b), period, out, starts[i], n, hist[i]
        )


_encode_blocks_serial = serial_twin(encode_blocks_into, "_encode_blocks_serial")
_decode_blocks_serial = serial_twin(decode_blocks_into, "_decode_blocks_serial")


#: Work (weights, symbols or products) below which a prange kernel runs as its serial twin: starting numba's
#: threads costs more than they save, far more while another process holds the other core (each launch waits
#: for its second thread: a row lookup 0.1 -> 8 ms at the 99th percentile beside a busy torch process).
PARALLEL_WORK = 1 << 16


def _parallel(parallel_kernel, serial_kernel, work: int | None = None, tasks: int | None = None):
    """The prange kernel, or its serial twin for less than :data:`PARALLEL_WORK` of ``work``, for one of its
    prange loop's ``tasks`` (a block, a chunk of rows: one thread either way), or where numba may use one
    thread only (a Dask worker thread): no thread pool to start, and safe under any numba threading layer.
    Only one thread of the process is in a prange kernel at a time, and none in a forked child
    (:func:`one_region_at_a_time`). Both give the same results."""
    small = (work is not None and work < PARALLEL_WORK) or (tasks is not None and tasks < 2)
    if in_forked_child() or small or numba_threads() <= 1:
        return serial_kernel  # (a child starts no thread pool: its locks may be held by a thread the fork left behind)
    return functools.partial(one_region_at_a_time, parallel_kernel, serial_kernel)


#: Held while a thread runs a prange kernel. numba's ``workqueue`` threading layer (its fallback where
#: neither TBB nor OpenMP loads, as on a pip install on macOS) aborts the process when two threads run
#: parallel regions at once: a pack's worker threads, or two threads serving rows.
_PARALLEL_REGION = threading.Lock()
#: The process that loaded these kernels. numba's thread pool is not fork-safe (with GNU OpenMP, a
#: forked child of a process whose pool started is terminated when it starts a parallel region: a
#: torch DataLoader worker, a fork Pool), so a forked child runs the serial twins.
_LOADED_IN = os.getpid()


def one_region_at_a_time(parallel_kernel, serial_kernel, *args):
    """``parallel_kernel(*args)`` if no other thread is in a prange kernel and this is the process
    that loaded the kernels (not a forked child), else ``serial_kernel(*args)`` in this thread (the
    same results: the twin runs the prange loop as a range loop)."""
    if os.getpid() == _LOADED_IN and not in_forked_child() and _PARALLEL_REGION.acquire(blocking=False):
        try:
            return parallel_kernel(*args)
        finally:
            _PARALLEL_REGION.release()
    return serial_kernel(*args)


def encode_blocks(
    symbols: np.ndarray, counts: np.ndarray, block_size: int, classes: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """All words and the uint64 jump table, as :func:`bnncompress.coding.encode_blocks`."""
    symbols = np.ascontiguousarray(symbols, dtype=np.int32)
    n_blocks = -(-len(symbols) // block_size)
    cdfs = quantized_cdfs(counts)
    bases, period = model_bases(counts, classes)
    scratch = np.empty(n_blocks * (block_size + 2), dtype=np.uint32)
    lengths = np.zeros(n_blocks, dtype=np.int64)
    encode = _parallel(encode_blocks_into, _encode_blocks_serial, len(symbols), n_blocks)
    encode(symbols, block_size, cdfs, bases, period, scratch, lengths)
    offsets = np.zeros(n_blocks + 1, dtype=np.uint64)
    np.cumsum(lengths, out=offsets[1:])
    words = np.empty(int(offsets[-1]), dtype=np.uint32)
    for b in range(n_blocks):  # compact the blocks' stretches (a memcpy each)
        start = b * (block_size + 2)
        words[int(offsets[b]) : int(offsets[b + 1])] = scratch[start : start + lengths[b]]
    return words, offsets


def decode_blocks(
    words: np.ndarray,
    offsets: np.ndarray,
    counts: np.ndarray,
    num_symbols: int,
    block_size: int,
    blocks: np.ndarray,
    classes: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Symbols of ``blocks`` (concatenated in that order) and their histogram (the shape of
    ``counts``); raises ValueError where constriction would refuse the words or leave some over."""
    blocks = np.ascontiguousarray(blocks, dtype=np.int64)
    words = np.ascontiguousarray(words, dtype=np.uint32)
    offsets = np.ascontiguousarray(offsets, dtype=np.int64)
    cdfs = quantized_cdfs(counts)
    bases, period = model_bases(counts, classes)
    tables = np.empty((len(cdfs), 1 << _LOOKUP_BITS), dtype=np.int32)
    lookup_tables_into(cdfs, _LOOKUP_BITS, tables)
    sizes = np.minimum(block_size, num_symbols - blocks * block_size)
    out = np.empty(int(sizes.sum()), dtype=np.int32)
    models, alphabet = cdfs.shape[0], cdfs.shape[1] - 1
    histogram = np.zeros((models, alphabet), dtype=np.int64)
    group = max(1, _GROUP_ENTRIES // max(models * alphabet, 1))  # bounds the per-block histograms
    start = 0
    for g in range(0, len(blocks), group):
        part = blocks[g : g + group]
        stop = start + int(sizes[g : g + group].sum())
        hist = np.zeros((len(part), models, alphabet), dtype=np.int64)
        status = np.zeros(len(part), dtype=np.int8)
        decode = _parallel(decode_blocks_into, _decode_blocks_serial, stop - start, len(part))
        decode(
            words, offsets, part, block_size, num_symbols, cdfs, tables, bases, period, out[start:stop], hist, status
        )
        if np.any(status == BAD_FIRST_WORD):
            raise ValueError("the coded words do not decode (a block ends in a zero word)")
        if np.any(status == WORDS_LEFT):
            raise ValueError("coded words left over after decoding")
        histogram += hist.sum(axis=0)
        start = stop
    return out, histogram.reshape(np.shape(counts))


_GROUP_ENTRIES = 1 << 20

"""numba kernels that decode rows of a coded record straight to values: ANS + dequantize + transform, fused.

A row's symbols decode to values through a *value table* ``vt`` of shape (P, K, L): the row's
symbol t (model ``t mod M`` of the coder) gives ``vt[t mod P, symbol, :]``, L values written one
after another (a scalar grid: P = L = 1; product quantization: P = M codebooks of L-vectors; the
per-column kind: P = D, L = 1). The per-column kind then applies its transform with
:func:`_transform_row`: ``x_j = float32(sum_k y_k R_jk + mean_j)``, the float64 sum taken over k
ascending (no fastmath): the one summation order every decode path uses, so that a row decodes
to the same bits alone, in a batch or in a whole tensor (:func:`bnncompress.records.columns.inverse_transform`).

For (C, M, K) entropy-model weights, a block's symbols use the M models of its class (a *base*
into the C * M CDFs, :func:`bnncompress._ans.model_bases`); the value table is the same for all
classes (P rows), or has C * P rows (a class-valued record: each block's class's P rows,
:func:`value_bases`). The decoder is :mod:`bnncompress._ans`'s (constriction's ``AnsCoder``); a *checkpoint* is its
state (64-bit state, word position within the block) at the start of a row, so that decoding can
start there. Kept in its own module so that importing bnncompress does not import numba.

These kernels inline :mod:`bnncompress._ans`'s ``pop_symbol`` and ``read_initial_state``, and numba's
on-disk cache only notices a change to this file: a commit that changes those functions (or the constants
they read) edits this file too, so that every checkout recompiles these kernels (tests/test_architecture.py
checks this line, kernels taken from other modules: digest c290ac3255b0f387).
"""

from __future__ import annotations

import numpy as np

from ._ans import (  # (numba imported after its environment is checked)
    _PRECISION,
    BAD_FIRST_WORD,
    OK,
    WORDS_LEFT,
    block_base,
    block_starts,
    lookup_tables_into,
    numba,
    pop_symbol,
    prange,
    quantized_cdfs,
    read_initial_state,
)
from ._ans import _parallel as _ans_parallel
from ._ans import serial_twin as _ans_serial_twin

#: Status of a row decode that met a symbol its model does not count (a damaged archive).
UNCOUNTED = 3
#: Bits of the symbol lookup tables: 2**LOOKUP_BITS entries per model (uint8 for alphabets up to 256).
LOOKUP_BITS = 8
#: Transform modes: values as decoded, plus a mean, or rotated and plus a mean.
PLAIN, MEAN, ROTATED = 0, 1, 2
_CHUNK = 32  # rows a parallel task decodes one after another
TILE = 4  # rows transformed together (each value of Rᵀ loaded once for them)


def lookup_tables(cdfs: np.ndarray) -> np.ndarray:
    """(M, 2**LOOKUP_BITS) start symbols for the decoder's search, uint8 where the alphabet allows."""
    dtype = np.uint8 if cdfs.shape[1] - 1 <= 256 else np.int32
    table = np.empty((cdfs.shape[0], 1 << LOOKUP_BITS), dtype=dtype)
    lookup_tables_into(cdfs, LOOKUP_BITS, table)
    return table


def coder_tables(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The (M, K + 1) CDFs and lookup tables of the entropy models ``counts`` ((K,) or (M, K));
    (C * M, K + 1) for (C, M, K) weights."""
    cdfs = quantized_cdfs(counts)
    return cdfs, lookup_tables(cdfs)


def value_bases(rows: int, bases: np.ndarray, period: int, per_class: bool) -> tuple[np.ndarray, int]:
    """The value table's first row for each block (int64; one for all) and its rows per block: the
    coder's ``bases`` and ``period`` (its models per class) for a table per class, else ``([0], rows)``.

    Example:
        >>> value_bases(6, np.array([0, 3, 3]), 3, True)[0].tolist(), value_bases(4, np.array([0]), 1, False)
        ([0, 3, 3], (array([0]), 4))
    """
    if per_class:
        return np.asarray(bases, dtype=np.int64), int(period)
    return np.zeros(1, dtype=np.int64), int(rows)


@numba.njit(cache=True, nogil=True, inline="always")
def _decode_row(
    words, wstart, pos, state, cdfs, tables, base, period, syms, hist, count
):  # pragma: no cover - compiled
    """Decode ``len(syms)`` symbols (symbol t with model base + t mod period) from ``state`` /
    ``pos``; counts them in ``hist`` if ``count``. Returns the new (state, pos)."""
    shift = _PRECISION - np.uint64(LOOKUP_BITS)
    m = base
    end = base + period
    for t in range(syms.shape[0]):
        s, state, pos = pop_symbol(words, wstart, pos, state, cdfs, tables, m, shift)
        syms[t] = s
        if count:
            hist[m, s] += 1
        m = m + 1 if m + 1 < end else base
    return state, pos


@numba.njit(cache=True, nogil=True, inline="always")
def _fill_row(syms, vt, valid, y_row, vbase, vperiod):  # pragma: no cover - compiled
    """The values of one row's symbols (before the transform) into ``y_row``: symbol t from value row
    ``vbase + t mod vperiod`` (the block's first value row: :func:`value_bases`); False if a symbol is not counted."""
    width = vt.shape[2]
    ok = True
    for t in range(syms.shape[0]):
        s = syms[t]
        p = vbase + t % vperiod
        if not valid[p, s]:
            ok = False
        for j in range(width):
            y_row[t * width + j] = vt[p, s, j]
    return ok


@numba.njit(cache=True, nogil=True)
def _transform_rows(y, n, mode, rt, mean, acc, out, first):  # pragma: no cover - compiled
    """Rows y[:n] (n <= TILE) transformed into out[first:first + n]: for a rotation, each
    x_j = float32(sum over k ascending of y_k rt[k, j] in float64, + mean_j), TILE rows at a time.
    Called, not inlined into numba's IR: the three kernels that use it then compiled in 4-9 s
    less each on a cold cache, and decode as fast (the same operations, so the same bits)."""
    d = out.shape[1]
    if mode == ROTATED:
        # acc = (((acc + y_k r_k) + y_k+1 r_k+1) + ...): k ascending, 4 k per pass over acc
        if n == TILE:
            for j in range(d):
                r = rt[0, j]
                acc[0, j] = y[0, 0] * r
                acc[1, j] = y[1, 0] * r
                acc[2, j] = y[2, 0] * r
                acc[3, j] = y[3, 0] * r
            k = 1
            while k + 4 <= d:
                a00, a01, a02, a03 = y[0, k], y[0, k + 1], y[0, k + 2], y[0, k + 3]
                a10, a11, a12, a13 = y[1, k], y[1, k + 1], y[1, k + 2], y[1, k + 3]
                a20, a21, a22, a23 = y[2, k], y[2, k + 1], y[2, k + 2], y[2, k + 3]
                a30, a31, a32, a33 = y[3, k], y[3, k + 1], y[3, k + 2], y[3, k + 3]
                for j in range(d):
                    r0, r1, r2, r3 = rt[k, j], rt[k + 1, j], rt[k + 2, j], rt[k + 3, j]
                    acc[0, j] = (((acc[0, j] + a00 * r0) + a01 * r1) + a02 * r2) + a03 * r3
                    acc[1, j] = (((acc[1, j] + a10 * r0) + a11 * r1) + a12 * r2) + a13 * r3
                    acc[2, j] = (((acc[2, j] + a20 * r0) + a21 * r1) + a22 * r2) + a23 * r3
                    acc[3, j] = (((acc[3, j] + a30 * r0) + a31 * r1) + a32 * r2) + a33 * r3
                k += 4
            for kk in range(k, d):
                for q in range(TILE):
                    a = y[q, kk]
                    for j in range(d):
                        acc[q, j] += a * rt[kk, j]
        else:
            for q in range(n):
                for j in range(d):
                    acc[q, j] = y[q, 0] * rt[0, j]
                k = 1
                while k + 4 <= d:
                    a0, a1, a2, a3 = y[q, k], y[q, k + 1], y[q, k + 2], y[q, k + 3]
                    for j in range(d):
                        r0, r1, r2, r3 = rt[k, j], rt[k + 1, j], rt[k + 2, j], rt[k + 3, j]
                        acc[q, j] = (((acc[q, j] + a0 * r0) + a1 * r1) + a2 * r2) + a3 * r3
                    k += 4
                for kk in range(k, d):
                    a = y[q, kk]
                    for j in range(d):
                        acc[q, j] += a * rt[kk, j]
        for q in range(n):
            for j in range(d):
                out[first + q, j] = np.float32(acc[q, j] + mean[j])
    elif mode == MEAN:
        for q in range(n):
            for j in range(d):
                out[first + q, j] = np.float32(y[q, j] + mean[j])
    else:
        for q in range(n):
            for j in range(d):
                out[first + q, j] = np.float32(y[q, j])


@numba.njit(parallel=True, cache=True, nogil=True)
def inverse_transform_into(y, rt, mean, out):  # pragma: no cover - compiled
    """out[i] = float32(y[i] @ rt + mean), each sum over k ascending in float64 (rt = Rᵀ)."""
    n, d = out.shape
    rotated = np.int64(ROTATED)  # an int64, not the literal 2: the decode kernels' signature of _transform_rows
    for c in prange((n + _CHUNK - 1) // _CHUNK):
        acc = np.empty((TILE, d), dtype=np.float64)
        for i in range(c * _CHUNK, min((c + 1) * _CHUNK, n), TILE):
            _transform_rows(y[i : i + TILE], min(TILE, n - i), rotated, rt, mean, acc, out, i)


@numba.njit(parallel=True, cache=True, nogil=True)
def decode_blocks_values(
    words,
    offsets,
    blocks,
    block_rows,
    num_rows,
    spr,
    cdfs,
    tables,
    bases,
    period,
    vt,
    valid,
    vbases,
    vperiod,
    mode,
    rt,
    mean,
    out,
    every,
    ck_state,
    ck_pos,
    per_block,
    hist,
    status,
):  # pragma: no cover - compiled
    """Decode ``blocks`` whole, one task each (a row's symbol t with model base + t mod period, the
    block's base from ``bases``): block i's rows into out[i-th block's rows] (if ``out`` has rows),
    its histogram into hist[i] (rows: all models), its status into status[i]; with ``every`` > 0
    the decoder state at every ``every``-th row of block b goes to ck_*[b * per_block + ...]."""
    d = out.shape[1] if out.shape[0] > 0 else 1
    starts = block_starts(blocks, block_rows, num_rows)
    for i in prange(blocks.shape[0]):
        b = blocks[i]
        base = block_base(bases, b)
        wstart, pos = offsets[b], offsets[b + 1]
        status[i] = OK
        state, pos, ok = read_initial_state(words, wstart, pos)
        if not ok:
            status[i] = BAD_FIRST_WORD
            continue
        syms = np.empty(spr, dtype=np.int64)
        y = np.empty((TILE, vt.shape[2] * spr), dtype=np.float64)
        acc = np.empty((TILE, d), dtype=np.float64)
        rows = starts[i + 1] - starts[i]
        for j0 in range(0, rows, TILE):
            m = min(TILE, rows - j0)
            for q in range(m):
                j = j0 + q
                if every > 0 and j % every == 0:
                    ck_state[b * per_block + j // every] = state
                    ck_pos[b * per_block + j // every] = np.uint32(pos - wstart)
                state, pos = _decode_row(words, wstart, pos, state, cdfs, tables, base, period, syms, hist[i], True)
                if out.shape[0] > 0 and not _fill_row(syms, vt, valid, y[q], block_base(vbases, b), vperiod):
                    status[i] = UNCOUNTED  # (a symbol with no value: as the row kernel says)
            if out.shape[0] > 0:
                _transform_rows(y, m, mode, rt, mean, acc, out, starts[i] + j0)
        if state != 0 or pos != wstart:
            status[i] = WORDS_LEFT


@numba.njit(parallel=True, cache=True, nogil=True)
def decode_rows_values(
    positions,
    words,
    offsets,
    block_rows,
    spr,
    cdfs,
    tables,
    bases,
    period,
    vt,
    valid,
    vbases,
    vperiod,
    mode,
    rt,
    mean,
    every,
    ck_state,
    ck_pos,
    per_block,
    out,
    status,
):  # pragma: no cover - compiled
    """Row ``positions[i]`` into out[i], decoded from the checkpoint before it; status[i] is
    UNCOUNTED for a row with a symbol its model does not count."""
    n, d = positions.shape[0], out.shape[1]
    no_hist = np.zeros((1, 1), dtype=np.int64)
    for c in prange((n + _CHUNK - 1) // _CHUNK):
        syms = np.empty(spr, dtype=np.int64)
        y = np.empty((TILE, vt.shape[2] * spr), dtype=np.float64)
        acc = np.empty((TILE, d), dtype=np.float64)
        for i0 in range(c * _CHUNK, min((c + 1) * _CHUNK, n), TILE):
            m = min(TILE, n - i0)
            for q in range(m):
                p = positions[i0 + q]
                b = p // block_rows
                j = p - b * block_rows
                ck = b * per_block + j // every
                wstart = offsets[b]
                state, pos = ck_state[ck], wstart + np.int64(ck_pos[ck])
                for _ in range(j - (j // every) * every + 1):
                    state, pos = _decode_row(
                        words, wstart, pos, state, cdfs, tables, block_base(bases, b), period, syms, no_hist, False
                    )
                status[i0 + q] = OK if _fill_row(syms, vt, valid, y[q], block_base(vbases, b), vperiod) else UNCOUNTED
            _transform_rows(y, m, mode, rt, mean, acc, out, i0)


@numba.njit(parallel=True, cache=True, nogil=True)
def decode_prefixes_into(
    words, offsets, blocks, starts, block_size, num_symbols, cdfs, tables, bases, period, out, status
):  # pragma: no cover - compiled
    """The first starts[i + 1] - starts[i] symbols of block blocks[i] into out[starts[i]:starts[i + 1]]
    (status[i]: OK, BAD_FIRST_WORD, or WORDS_LEFT for a whole block that leaves words over)."""
    no_hist = np.zeros((1, 1), dtype=np.int64)
    for i in prange(blocks.shape[0]):
        b = blocks[i]
        wstart = offsets[b]
        state, pos, ok = read_initial_state(words, wstart, offsets[b + 1])
        if not ok:
            status[i] = BAD_FIRST_WORD
            continue
        status[i] = OK
        symbols = out[starts[i] : starts[i + 1]]
        base = block_base(bases, b)
        state, pos = _decode_row(words, wstart, pos, state, cdfs, tables, base, period, symbols, no_hist, False)
        whole = starts[i + 1] - starts[i] == min(block_size, num_symbols - b * block_size)
        if whole and (state != 0 or pos != wstart):
            status[i] = WORDS_LEFT


inverse_transform_into_serial = _ans_serial_twin(inverse_transform_into, "inverse_transform_into_serial")


def chunks(rows: int) -> int:
    """Tasks of the prange loops over rows (:func:`inverse_transform_into`, :func:`decode_rows_values`)."""
    return -(-rows // _CHUNK)


def inverse_transform(y, rt, mean, out) -> None:
    """:func:`inverse_transform_into`, or its serial twin while another thread is in a parallel kernel."""
    kernel = _ans_parallel(inverse_transform_into, inverse_transform_into_serial, y.size * len(mean), chunks(len(out)))
    kernel(y, rt, mean, out)


decode_blocks_values_serial = _ans_serial_twin(decode_blocks_values, "decode_blocks_values_serial")
decode_rows_values_serial = _ans_serial_twin(decode_rows_values, "decode_rows_values_serial")
decode_prefixes_into_serial = _ans_serial_twin(decode_prefixes_into, "decode_prefixes_into_serial")


def decode_prefixes(*args) -> None:
    """:func:`decode_prefixes_into`, or its serial twin while another thread is in a parallel kernel
    (or in a forked child: :func:`bnncompress._ans.one_region_at_a_time`), or for few symbols."""
    blocks, starts = args[2], args[3]
    _ans_parallel(decode_prefixes_into, decode_prefixes_into_serial, int(starts[-1]), len(blocks))(*args)


@numba.njit(cache=True, nogil=True)
def reflect_into(entries, scales, q):  # pragma: no cover - compiled
    """q (D x D, the identity on entry) becomes H_0 ... H_(D-2), the Householder reflections of
    :func:`bnncompress.records.classed.reflected_rotation`, with its float64 operations in its order."""
    d = q.shape[0]
    at = len(entries)
    u = np.empty(d, dtype=np.float64)
    dots = np.empty(d, dtype=np.float64)
    for k in range(d - 2, -1, -1):
        n = d - 1 - k
        at -= n
        u[0] = 1.0
        uu = 1.0
        for i in range(n):
            u[i + 1] = np.float64(entries[at + i]) * np.float64(scales[k])
            uu += u[i + 1] * u[i + 1]
        c = 2.0 / uu
        for j in range(k, d):  # row by row (each column's sum still over rows in order)
            dots[j] = u[0] * q[k, j]
        for i in range(1, n + 1):
            for j in range(k, d):
                dots[j] += u[i] * q[k + i, j]
        for i in range(n + 1):
            ci = c * u[i]
            for j in range(k, d):
                q[k + i, j] -= ci * dots[j]

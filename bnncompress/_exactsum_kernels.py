"""numba kernels of :mod:`bnncompress.exactsum` (kept apart so that importing it needs no numba)."""

import numpy as np

from ._ans import numba  # (numba imported after its environment is checked; its cache set before the kernels)


@numba.njit(cache=True, nogil=True)
def sum_float32(bits, acc):  # pragma: no cover - compiled
    """acc[sign, exponent] += integer mantissa, for float32 values given as uint32 ``bits``."""
    for i in range(bits.shape[0]):
        b = bits[i]
        e = (b >> 23) & 0xFF
        m = np.int64(b & 0x7FFFFF)
        if e == 0:
            e = 1
        else:
            m += 1 << 23
        acc[b >> 31, e] += m


@numba.njit(cache=True, nogil=True)
def sum_squares(values, hi, lo):  # pragma: no cover - compiled
    """hi[e], lo[e] += halves of the mantissa of float64(v) ** 2 (exact for float32 v), by exponent e."""
    out = np.empty(1, dtype=np.float64)
    bits = out.view(np.uint64)
    for i in range(values.shape[0]):
        d = np.float64(values[i])
        out[0] = d * d
        b = bits[0]
        e = np.int64((b >> np.uint64(52)) & np.uint64(0x7FF))
        m = np.int64(b & np.uint64(0xFFFFFFFFFFFFF))
        if e == 0:
            e = 1
        else:
            m += np.int64(1) << 52
        hi[e] += m >> 26
        lo[e] += m & ((1 << 26) - 1)

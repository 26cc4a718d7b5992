"""Exact sums of floating-point values, independent of order and of how they are split.

A quantization prior is fitted to the mean and spread of a tensor's means. To make a
streamed pack (block by block), a parallel pack and a Dask pack write the same archive as
an in-memory pack, these statistics must not depend on the order in which blocks are
summed, nor on the machine. So every value is added exactly: its integer mantissa goes
into a bucket for its binary exponent (int64 counters, Python's integers past 2**35 values: no
rounding or wrapping at all), partial sums
from blocks are added bucket by bucket, and only the final total is rounded once.

Example:
    >>> import numpy as np
    >>> x = np.array([1e8, 1.0, -1e8, 0.5], dtype=np.float32)
    >>> total = ExactSum.of_float32(x[:2]) + ExactSum.of_float32(x[2:])
    >>> total.value(), float(np.sum(x))  # the float32 sum rounds 1e8 + 1 away
    (1.5, 0.5)
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np

_F32_LOW = -149  # exponent of a float32 mantissa unit for biased exponent 0 and 1
_F64_LOW = -1074
_SPLIT = 26  # float64 mantissas (53 bits) are added as two halves so that int64 never overflows
#: Values whose sums int64 buckets hold for sure: a square adds under 2**27 to a bucket, a float32 under 2**24.
_INT64_SAFE_COUNT = 2**35


@dataclass
class ExactSum:
    """An exact sum: ``sum(hi[e] * 2**(e + shift + split) + lo[e] * 2**(e + shift))``."""

    hi: np.ndarray
    lo: np.ndarray
    shift: int
    split: int
    count: int

    @classmethod
    def of_float32(cls, values: np.ndarray) -> ExactSum:
        """The exact sum of float32 ``values`` (any shape)."""
        from ._exactsum_kernels import sum_float32

        flat = np.ascontiguousarray(values, dtype=np.float32).reshape(-1)
        acc = np.zeros((2, 256), dtype=np.int64)
        sum_float32(flat.view(np.uint32), acc)
        return cls(acc[0] - acc[1], np.zeros(256, np.int64), _F32_LOW - 1, 0, len(flat))

    @classmethod
    def of_squares(cls, values: np.ndarray) -> ExactSum:
        """The exact sum of the squares of float32 ``values`` (each square is exact in float64)."""
        from ._exactsum_kernels import sum_squares

        flat = np.ascontiguousarray(values, dtype=np.float32).reshape(-1)
        hi = np.zeros(2048, dtype=np.int64)
        lo = np.zeros(2048, dtype=np.int64)
        sum_squares(flat, hi, lo)
        return cls(hi, lo, _F64_LOW - 1, _SPLIT, len(flat))

    def __add__(self, other: ExactSum) -> ExactSum:
        if (self.shift, self.split, len(self.hi)) != (other.shift, other.split, len(other.hi)):
            raise ValueError("cannot add exact sums of different kinds")
        hi, lo, count = self.hi, self.lo, self.count + other.count
        if count > _INT64_SAFE_COUNT and hi.dtype != object:  # Python's integers from here: an int64 would wrap
            hi, lo = hi.astype(object), lo.astype(object)
        return ExactSum(hi + other.hi, lo + other.lo, self.shift, self.split, count)

    def exact(self) -> Fraction:
        total = 0
        for e in np.flatnonzero(self.hi | self.lo):
            total += ((int(self.hi[e]) << self.split) + int(self.lo[e])) << int(e)
        return Fraction(total) * Fraction(2) ** self.shift

    def value(self) -> float:
        """The sum, rounded once to the nearest float64."""
        return float(self.exact())

    def mean(self) -> float:
        """The sum divided by the number of values, rounded once."""
        return float(self.exact() / max(self.count, 1))

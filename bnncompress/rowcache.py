"""A bounded cache of decoded rows, kept by frequency, looked up for a whole batch at once.

:class:`RowCache` holds at most ``capacity`` rows of one tensor in one preallocated array.
Every lookup is vectorised over the batch (numpy gathers, one ``argpartition`` per batch
with misses, no Python loop per id). Rows stay by a decayed access count: a missed row
replaces the weakest cached one when it was asked for at least as often in this batch as
the weakest one's count (ties go to the new row), so under a Zipf workload the frequent
words settle in the cache and a uniform workload does not churn it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

#: Every lookup multiplies the access counts by this: a count halves in about 70 batches.
DECAY = 0.99
#: Counts are kept in units that grow by 1 / DECAY per lookup (so that a lookup touches only the rows it
#: hits, not every cached row's count); past this the units are reset (every ~4,600 lookups), far below
#: float32's 3.4e38 for any count a lookup can add.
_RESCALE = 1e20


class RowCache:
    """Up to ``capacity`` rows (of ``row_size`` values of ``dtype``) of a tensor of ``num_rows`` rows.

    Example:
        >>> cache = RowCache(num_rows=100, row_size=3, capacity=10, dtype=np.float32)
        >>> fetch = lambda ids: np.repeat(ids[:, None], 3, axis=1).astype(np.float32)
        >>> cache.lookup(np.array([5, 7, 5]), fetch)[:, 0]
        array([5., 7., 5.], dtype=float32)
        >>> len(cache), cache.hits, cache.misses
        (2, 0, 3)
    """

    def __init__(self, num_rows: int, row_size: int, capacity: int, dtype: np.dtype):
        self.capacity = int(min(max(capacity, 0), num_rows))
        self.row_size = row_size
        self.dtype = np.dtype(dtype)
        slot = np.int32 if self.capacity <= np.iinfo(np.int32).max else np.int64  # (more slots: an int32 wraps)
        self.slot_of = np.full(num_rows if self.capacity else 0, -1, slot)  # row -> slot, -1: not cached
        self.row_of = np.full(self.capacity, -1, np.int64)  # slot -> row, -1: free
        self.score = np.full(self.capacity, -1.0, np.float32)  # decayed access count x unit; free slots -1
        self.unit = 1.0  # what one access adds now: scores decay as the unit grows
        self.values = np.zeros((self.capacity, row_size), self.dtype)
        self.hits = self.misses = 0

    def __len__(self) -> int:
        return int(np.count_nonzero(self.row_of >= 0))

    @property
    def nbytes(self) -> int:
        """Bytes of the cache's arrays (rows, row -> slot map, slot -> row map, counts)."""
        return self.values.nbytes + self.slot_of.nbytes + self.row_of.nbytes + self.score.nbytes

    def lookup(self, rows: np.ndarray, fetch: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        """The values of ``rows`` (flat int64, in range) as a (len(rows), row size) array; rows not
        cached come from one ``fetch(sorted unique rows)`` call and may enter the cache."""
        if not self.capacity:
            unique, inverse, _ = _unique(rows)
            self.misses += rows.size
            return fetch(unique)[inverse] if rows.size else np.zeros((0, self.row_size), self.dtype)
        slots = self.slot_of[rows]
        hit = slots >= 0
        hit_slots = slots[hit]
        self.hits += hit_slots.size
        self._decay()
        if hit_slots.size * 8 > self.capacity:  # many hits: one pass over the counts
            self.score += np.bincount(hit_slots, minlength=self.capacity).astype(np.float32) * np.float32(self.unit)
        else:  # a few: only theirs (a single-word lookup cost 185 us with a 200,000-row cache)
            np.add.at(self.score, hit_slots, np.float32(self.unit))
        if hit_slots.size == rows.size:
            return self.values[slots]
        out = np.empty((rows.size, self.row_size), self.dtype)
        out[hit] = self.values[hit_slots]
        missed = ~hit
        unique, inverse, counts = _unique(rows[missed])
        fetched = fetch(unique)
        out[missed] = fetched[inverse]
        self.misses += int(inverse.size)
        self._admit(unique, counts, fetched)
        return out

    def _admit(self, rows: np.ndarray, counts: np.ndarray, values: np.ndarray) -> None:
        """Put the most asked-for of ``rows`` in place of the weakest cached rows they outnumber."""
        m = min(rows.size, self.capacity)
        candidates = np.argsort(-counts, kind="stable")[:m]  # most asked for first
        victims = np.argpartition(self.score, m - 1)[:m] if m < self.capacity else np.arange(self.capacity)
        victims = victims[np.argsort(self.score[victims], kind="stable")]  # weakest first
        asked = (counts[candidates] * self.unit).astype(np.float32)  # (in the scores' units)
        admitted = asked >= self.score[victims]  # a prefix: one side falls, the other rises
        candidates, victims = candidates[admitted], victims[admitted]
        evicted = self.row_of[victims]
        self.slot_of[evicted[evicted >= 0]] = -1
        self.row_of[victims] = rows[candidates]
        self.slot_of[rows[candidates]] = victims
        self.values[victims] = values[candidates]
        self.score[victims] = asked[admitted]

    def _decay(self) -> None:
        self.unit /= DECAY
        if self.unit > _RESCALE:
            live = self.score >= 0
            self.score[live] = (self.score[live] / self.unit).astype(np.float32)
            self.unit = 1.0

    def clear(self) -> None:
        """Forget every cached row (the arrays stay allocated)."""
        self.slot_of[:] = -1
        self.row_of[:] = -1
        self.score[:] = -1.0
        self.unit = 1.0
        self.hits = self.misses = 0


def _unique(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``np.unique(values, return_inverse=True, return_counts=True)`` for flat int64, without the
    ``numpy.ma`` import ``np.unique`` costs on a first call."""
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    first = np.empty(ordered.size, bool)
    first[:1] = True
    np.not_equal(ordered[1:], ordered[:-1], out=first[1:])
    unique = ordered[first]
    inverse = np.empty(values.size, np.int64)
    inverse[order] = np.cumsum(first) - 1
    starts = np.flatnonzero(first)
    counts = np.diff(np.append(starts, values.size))
    return unique, inverse, counts

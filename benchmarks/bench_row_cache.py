"""The row cache behind served embeddings: the cost of one cached single-word lookup by cache size.

    python benchmarks/bench_row_cache.py        # a table, a few seconds

A served embedding keeps 10% of its rows in a :class:`bnncompress.rowcache.RowCache` (2,000 rows
for a 20,000-word vocabulary, 200,000 for 2 million). Each case fills a cache of that many rows,
then times 20,000 lookups of one id already cached (numpy's per-call overhead included), best of
three passes. A lookup should cost the same whatever the cache's size.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from bnncompress.rowcache import RowCache

DIM = 100
LOOKUPS = 20_000


def single_id_us(capacity: int) -> float:
    """Microseconds per cached one-id lookup in a full cache of ``capacity`` rows."""
    cache = RowCache(num_rows=10 * capacity, row_size=DIM, capacity=capacity, dtype=np.float32)
    fetch = lambda rows: np.repeat(rows[:, None].astype(np.float32), DIM, axis=1)  # noqa: E731
    cache.lookup(np.arange(capacity, dtype=np.int64), fetch)  # every slot taken
    ids = [np.array([i], np.int64) for i in np.random.default_rng(0).integers(0, 100, LOOKUPS)]
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for one in ids:
            cache.lookup(one, fetch)
        best = min(best, time.perf_counter() - start)
    assert cache.misses == capacity, "the timed lookups must all be hits"
    return best / LOOKUPS * 1e6


def main() -> None:
    print(f"{os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.2f}; rows of {DIM} float32")
    print("| cache rows | us per cached one-id lookup |")
    print("|-----------:|----------------------------:|")
    for capacity in (2_000, 20_000, 200_000):
        print(f"| {capacity:>10,} | {single_id_us(capacity):>27.1f} |")


if __name__ == "__main__":
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    main()

"""Rows of HDF5 datasets whose chunks are taller than a read, read a whole band of chunks at a time
and kept in one bounded cache per process.

HDF5 decompresses whole chunks: reading 2,000 rows of a dataset chunked by columns (``chunks=(N, 1)``)
decompresses all N rows of every column. A streamed pack reads each tensor ~13 times in tasks of
~16 MiB of rows, so such a file cost (tasks x whole tensor) per pass: 66 s to pack 100,000 x 100
(gzip, ``chunks=(N, 1)``) against 5.5 s row-chunked. Here a read narrower than the chunks' height
takes the *bands* it overlaps (rows ``k * h`` to ``(k + 1) * h`` for chunk height ``h``, every column:
each chunk decompressed once) from the cache, read on a miss. Reads as tall as the chunks
(row-chunked, contiguous datasets, reading a tensor whole) go straight to h5py as before.

The cache holds at most :data:`BUDGET` bytes of decompressed bands, the least recently used dropped
first. A band larger than half of it (loc's and scale's bands must fit together) is not cached: that
tensor reads as before, decompressing its overlapping chunks whole at every read (right, just slow).
Bands are keyed by the file's path and :func:`~bnncompress.posterior.file_stamp` (a file written or
replaced since is a different key: never served stale), the dataset and the band; a band is kept only
if the file's stamp after reading it is the one it is keyed by. A pack drops its files' bands when it
ends (:func:`forget`); a Dask worker keeps its bands, within the budget, until later reads evict them.
No file handle is kept: the caller opens the file for each read.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from ..forksafe import renew_after_fork
from ..posterior import FileStamp, file_stamp

#: Bytes of decompressed bands one process keeps, over all files and threads (256 MiB): a tensor's
#: loc and scale bands are cached if together they fit (100,000 x 100 float32 chunked by columns: 80 MB).
BUDGET = 1 << 28

#: A band: (file path, its stamp, dataset name, band index).
Key = tuple[str, FileStamp | None, str, int]


class BandCache:
    """Decompressed bands up to ``budget`` bytes, least recently used dropped first; thread-safe. Two
    threads missing the same band read it once: the second waits for the first's."""

    def __init__(self, budget: int):
        self.budget = budget
        self._after_fork()
        renew_after_fork(self)

    def _after_fork(self) -> None:
        """Fresh locks and no bands (a lock held by another thread at a fork stays held in the child)."""
        self._bands: OrderedDict[Key, np.ndarray] = OrderedDict()
        self._loading: dict[Key, threading.Lock] = {}  # bands being read: waited for, not read twice
        self._lock = threading.Lock()
        self.nbytes = 0
        self.reads = 0  # bands read from files (each chunk of a band decompressed once)

    def get(self, key: Key, load: Callable[[], tuple[np.ndarray, bool]]) -> np.ndarray:
        """The band of ``key``; on a miss ``load()`` gives it and whether it may be kept."""
        with self._lock:
            if (band := self._hit(key)) is not None:
                return band
            loading = self._loading.setdefault(key, threading.Lock())
        with loading:
            with self._lock:
                if (band := self._hit(key)) is not None:  # read by the thread this one waited for
                    return band
            try:
                band, keep = load()
                with self._lock:
                    self.reads += 1
                    if keep and 2 * band.nbytes <= self.budget:
                        self._put(key, band)
            finally:
                with self._lock:
                    self._loading.pop(key, None)
        return band

    def _hit(self, key: Key) -> np.ndarray | None:
        band = self._bands.get(key)
        if band is not None:
            self._bands.move_to_end(key)
        return band

    def _put(self, key: Key, band: np.ndarray) -> None:
        self._drop(key)
        self._bands[key] = band
        self.nbytes += band.nbytes
        while self.nbytes > self.budget:
            self._drop(next(iter(self._bands)))

    def _drop(self, key: Key) -> None:
        band = self._bands.pop(key, None)
        if band is not None:
            self.nbytes -= band.nbytes

    def forget(self, files: Iterable[tuple[str, FileStamp | None]]) -> None:
        """Drop the bands of these (path, stamp) files."""
        gone = set(files)
        with self._lock:
            for key in [k for k in self._bands if (k[0], k[1]) in gone]:
                self._drop(key)

    def clear(self) -> None:
        """Drop every band and zero the count of reads."""
        with self._lock:
            self._bands.clear()
            self.nbytes = self.reads = 0


CACHE = BandCache(BUDGET)


def forget(files: Iterable[tuple[str, FileStamp | None]]) -> None:
    """Free the cached bands of these (path, stamp) files (a pack's, when it ends)."""
    CACHE.forget(files)


def band_rows(dataset: Any, start: int, stop: int) -> int | None:
    """The height of ``dataset``'s bands if rows ``start:stop`` are read by bands: chunked, with chunks
    taller than the read (else None: one h5py read decompresses little more than it returns)."""
    if not dataset.chunks:
        return None
    height = min(int(dataset.chunks[0]), int(dataset.shape[0]))  # (an extendable dataset's chunks may be taller)
    if height <= stop - start or stop <= start:
        return None
    band_bytes = height * int(np.prod(dataset.shape[1:], dtype=np.int64)) * dataset.dtype.itemsize
    return height if 2 * band_bytes <= CACHE.budget else None  # (too large to keep: read as before)


def read_rows(f: Any, path: str, stamp: FileStamp | None, key: str, start: int, stop: int) -> np.ndarray:
    """Rows ``start:stop`` of dataset ``key`` of the open file ``f`` (opened from ``path``, stamped
    ``stamp`` when its posterior was opened), as ``f[key][start:stop]`` gives them."""
    dataset = f[key]
    height = band_rows(dataset, start, stop)
    if height is None:
        return dataset[start:stop]
    parts = []
    for band in range(start // height, (stop - 1) // height + 1):
        first = band * height
        values = CACHE.get((path, stamp, key, band), lambda a=first: _load(dataset, path, stamp, a, a + height))
        parts.append(values[max(start - first, 0) : stop - first])
    return parts[0].copy() if len(parts) == 1 else np.concatenate(parts)  # (never a view of a cached band)


def _load(dataset: Any, path: str, stamp: FileStamp | None, start: int, stop: int) -> tuple[np.ndarray, bool]:
    """A band, and whether it may be cached: only if the file is still the one its key names."""
    band = dataset[start:stop]
    return band, stamp is not None and file_stamp(path) == stamp

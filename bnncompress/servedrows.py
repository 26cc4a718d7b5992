"""Rows of one archive tensor served while it stays compressed: a reader, a row cache, row norms.

:class:`ServedRows` is what :class:`~bnncompress.CompressedEmbedding`, ``Archive.vector`` /
``vectors`` and the similarity queries share for one tensor. It holds the tensor's record
(still entropy-coded), its :class:`~bnncompress.rowaccess.RowReader`, a bounded
:class:`~bnncompress.rowcache.RowCache` of rows as served and, once a similarity query asks,
the rows' norms (one float32 per row); never a decoded copy of the whole tensor.

Rows are served as ``archive[name]`` has them: a recorded support that acts elementwise
(``positive``, ``interval`` ...) is applied per row and the original dtype restored (float16;
float64; bfloat16 as float32, as numpy has no bfloat16). A support whose transform acts across
a row or changes its shape (``simplex``) is refused: use ``archive[name]``.

Pickled, it keeps the archive's path and the record's SHA-256 checksum, never decoded rows:
unpickling reopens the file and refuses one whose tensor changed (e.g. in DataLoader workers).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from numbers import Integral
from typing import Any

import numpy as np

from .archive import read_archive
from .decoded import NUMPY_DTYPES, record_bytes, served_values
from .errors import ArchiveError, ArgumentTypeError, NotFoundError, OptionError, OutOfRangeError
from .forksafe import renew_after_fork
from .records import TensorRecord
from .rowaccess import RowReader
from .rowcache import RowCache
from .supports import constraint_of, is_elementwise

#: Default cache: this fraction of a tensor's rows.
DEFAULT_CACHE_FRACTION = 0.1


class ServedRows:
    """Rows of the 2-D tensor ``record`` (read from the archive at ``path``), with a cache of
    ``cache_rows`` rows (None: 10% of the rows), decoded by ``reader`` (None: a new
    :class:`~bnncompress.rowaccess.RowReader`; an archive passes its own, so that its checkpoints are built once).

    Example:
        >>> served = ServedRows(archive.record("word_vectors"), archive.path)   # doctest: +SKIP
        >>> served.lookup(np.array([[0, 17], [17, 3]])).shape                   # doctest: +SKIP
        (2, 2, 50)
    """

    def __init__(
        self,
        record: TensorRecord,
        path: str | os.PathLike,
        cache_rows: int | None = None,
        reader: RowReader | None = None,
    ):
        name = record.name
        if len(record.shape) != 2:
            raise OptionError(f"tensor '{name}' has shape {tuple(record.shape)}; an embedding needs a 2-D tensor")
        self.record, self.path = record, os.path.abspath(os.fspath(path))
        self.support = record.params.get("support")
        self._constraint = None if self.support is None else constraint_of(self.support, f"tensor '{name}'")
        if self._constraint is not None:
            _check_elementwise(self._constraint, self.support, name)
        self.reader = RowReader(record) if reader is None else reader
        self.shape = (int(record.shape[0]), int(record.shape[1]))
        self.dtype = np.dtype(NUMPY_DTYPES[record.dtype])
        self.cache = self._new_cache(cache_rows)
        self._norms: np.ndarray | None = None
        self._lock = threading.Lock()  # one lookup at a time: the cache's arrays change as it serves
        renew_after_fork(self)

    def _after_fork(self) -> None:
        """A forked child's own lock, empty cache and reader (another thread may have been looking up)."""
        self._lock = threading.Lock()
        self.cache = RowCache(self.shape[0], self.shape[1], self.cache.capacity, self.dtype)
        self.reader = RowReader(self.record)

    def __deepcopy__(self, memo: dict) -> ServedRows:
        """A copy sharing the (read-only) record and reader, with an empty cache: not the archive read
        anew, as pickling does (a deep copy failed once the file was packed again or removed)."""
        copy = object.__new__(ServedRows)
        copy.__dict__.update(self.__dict__, _lock=threading.Lock())
        copy.cache = RowCache(self.shape[0], self.shape[1], self.cache.capacity, self.dtype)
        memo[id(self)] = copy
        renew_after_fork(copy)
        return copy

    def _new_cache(self, cache_rows: int | None) -> RowCache:
        if cache_rows is None:
            cache_rows = int(self.shape[0] * DEFAULT_CACHE_FRACTION)
        if isinstance(cache_rows, bool) or not isinstance(cache_rows, (int, np.integer)) or cache_rows < 0:
            raise OptionError(
                f"«cache_rows» must be a row count >= 0 (or None for 10% of the rows), not {cache_rows!r}"
            )
        return RowCache(self.shape[0], self.shape[1], int(cache_rows), self.dtype)

    def resize_cache(self, cache_rows: int | None) -> None:
        """A new, empty cache of ``cache_rows`` rows (None: 10% of the rows) unless it has that size."""
        wanted = self._new_cache(cache_rows) if cache_rows is not None else None
        if wanted is not None and wanted.capacity != self.cache.capacity:
            self.cache = wanted

    @property
    def name(self) -> str:
        return self.record.name

    def served(self, stored: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """Stored (float32) rows at ``positions`` as ``archive[name]`` has them: support applied (bounds
        per element taken at those rows), dtype restored."""
        return served_values(self.record, stored, positions, self._constraint)

    def _fetch(self, positions: np.ndarray) -> np.ndarray:
        return self.served(self.reader.rows(positions), positions)

    def refuse(self, message: str) -> None:
        """Raise :class:`~bnncompress.errors.ArgumentTypeError` for ids the module cannot look up (``message``)."""
        raise ArgumentTypeError(message)

    def lookup(self, ids: Any) -> np.ndarray:
        """Rows at integer ``ids`` (any shape), as an array of shape ``ids.shape + (row size,)``.

        Only rows not in the cache are decoded (in one RowReader call); an id outside
        ``[0, rows)`` raises :class:`~bnncompress.errors.OutOfRangeError` (an ``IndexError``).
        """
        if isinstance(ids, (list, tuple)) and any(is_bool_id(i) for i in _items(ids)):
            raise ArgumentTypeError("row ids must be integers, not bools (True would be row 1); pass an int list")
        try:
            ids = np.asarray(ids)
        except ValueError:  # (ragged lists)
            raise ArgumentTypeError(
                "row ids must be integers in a rectangular list or array, not a ragged one"
            ) from None
        if ids.size == 0:
            ids = ids.astype(np.int64)  # (an empty list is float64 to numpy)
        if ids.dtype == object and all(isinstance(i, Integral) and not isinstance(i, bool) for i in ids.flat):
            big = max((int(i) for i in ids.flat), key=abs)
            if not -(2**63) <= big < 2**63:
                raise OutOfRangeError(
                    f"row id {big} is out of range for tensor '{self.name}' (ids are 0 .. {self.shape[0] - 1})"
                )
            ids = ids.astype(np.int64)  # (Python ints in an object array)
        if ids.dtype.kind not in "iu":
            raise ArgumentTypeError(f"row ids must be integers, not {ids.dtype}; pass a LongTensor or an int array")
        if ids.dtype == np.uint64 and ids.size and int(ids.max()) > np.iinfo(np.int64).max:  # (would wrap)
            raise OutOfRangeError(
                f"row id {int(ids.max())} is out of range for tensor '{self.name}' of {self.shape[0]} rows"
            )
        flat = ids.reshape(-1).astype(np.int64, copy=False)
        if flat.size:
            low, high = int(flat.min()), int(flat.max())
            if low < 0 or high >= self.shape[0]:
                bad = low if low < 0 else high
                raise OutOfRangeError(
                    f"row id {bad} is out of range for tensor '{self.name}' of {self.shape[0]} rows (ids are 0 .. "
                    f"{self.shape[0] - 1})"
                )
        with self._lock:
            values = self.cache.lookup(flat, self._fetch)
        return values.reshape(ids.shape + (self.shape[1],))

    def blocks(self) -> Iterator[tuple[int, np.ndarray]]:
        """``(first row, rows as served, float32)`` for every coding block, in order."""
        for first, stored in self.reader.blocks():
            yield first, np.asarray(self.served(stored, np.arange(first, first + len(stored))), dtype=np.float32)

    @property
    def norms(self) -> np.ndarray:
        """Euclidean norm of every row as served (float32, computed once by streaming the blocks)."""
        if self._norms is None:
            norms = np.empty(self.shape[0], np.float32)
            for first, rows in self.blocks():
                norms[first : first + len(rows)] = np.linalg.norm(rows, axis=1)
            self._norms = norms
        return self._norms

    def memory_bytes(self) -> int:
        """numpy bytes held to serve the rows: the record's arrays, the reader's, the cache's and the norms."""
        norms = 0 if self._norms is None else self._norms.nbytes
        return record_bytes(self.record) + int(self.reader.nbytes) + self.cache.nbytes + norms

    @property
    def bits_per_weight(self) -> float:
        return 8.0 * self.record.payload_bytes / max(self.record.num_weights, 1)

    def describe(self) -> str:
        """``rows x dim, bits, cache`` in one line (the module's repr)."""
        rows, dim = self.shape
        return (
            f"{rows:,} x {dim}, {self.bits_per_weight:.2f} bits/weight, "
            f"cache {len(self.cache):,}/{self.cache.capacity:,} rows, tensor '{self.name}'"
        )

    def __reduce__(self):
        return _reopen, (self.path, self.name, self.record.checksum(), self.cache.capacity)


def _reopen(path: str, name: str, checksum: str, cache_rows: int) -> ServedRows:
    """A pickled :class:`ServedRows` again: the archive at ``path`` read (and validated) anew."""
    records = {r.name: r for r in read_archive(path).tensors}
    if name not in records:
        raise NotFoundError(f"archive '{path}' no longer has tensor '{name}'; it changed since it was pickled")
    if records[name].checksum() != checksum:
        raise ArchiveError(
            f"tensor '{name}' of archive '{path}' changed since the embedding was pickled; "
            "make the embedding again from the archive as it is now"
        )
    return ServedRows(records[name], path, cache_rows)


def _check_elementwise(constraint: Any, spec: Any, name: str) -> None:
    """Refuse a support (``constraint``, recorded as ``spec``) whose transform is not elementwise: its
    rows cannot be served one by one."""
    if not is_elementwise(constraint):
        raise OptionError(
            f"tensor '{name}' has support {spec.get('constraint')!r}, whose transform acts across a row "
            f"(or changes its shape), so its rows cannot be served one by one; use archive['{name}']"
        )


def is_bool_id(item: Any) -> bool:
    """Whether a list's item is a bool: Python's, numpy's, or a 0-d array or tensor of bools (all read as 0 or 1)."""
    return isinstance(item, (bool, np.bool_)) or str(getattr(item, "dtype", "")) in ("bool", "torch.bool")


def _items(ids: list | tuple) -> list:
    """The items of nested lists and tuples, flattened."""
    return [j for i in ids for j in (_items(i) if isinstance(i, (list, tuple)) else [i])]

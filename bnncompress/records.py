"""What an archive stores for each tensor (:class:`TensorRecord`), and size accounting.

A record is the pipeline's output and the archive's unit: the coded words, the block jump
table, the entropy model's counts, the grid, and how they were made. It knows its checksum
and how many payload bytes it costs; it does not know how it is stored in a file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import gc
import hashlib
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .coding import dequantize, inverse_transform, num_rows, row_size
from .errors import ArchiveError

#: The limits of the format, checked by the writer and the reader alike (whatever one writes, the other reads).
MAX_WEIGHTS = 1 << 40  # per tensor
MAX_BLOCK_ROWS = 1 << 31
MAX_TENSORS = 1 << 22
MAX_MANIFEST_BYTES = 1 << 30
MAX_VOCAB_BYTES = 1 << 34


class BitsPerWeight:
    """Size ratios for anything with ``num_weights``, ``payload_bytes`` and ``file_bytes``."""

    num_weights: int
    payload_bytes: int
    file_bytes: float

    @property
    def payload_bits_per_weight(self) -> float:
        return 8.0 * self.payload_bytes / self.num_weights

    @property
    def file_bits_per_weight(self) -> float:
        return 8.0 * self.file_bytes / self.num_weights

    @property
    def ratio_vs_float32(self) -> float:
        return 32.0 / self.file_bits_per_weight


@dataclass(frozen=True)
class TensorInfo(BitsPerWeight):
    """Size accounting for one tensor of an archive (what ``bnncompress info`` shows)."""

    name: str
    shape: tuple[int, ...]
    method: str
    num_weights: int
    payload_bytes: int
    file_bytes: float


@dataclass(frozen=True)
class TensorRecord:
    """Everything the archive stores for one tensor.

    ``grid[symbols]`` reshaped to ``shape`` is the point estimate, where ``symbols`` are the
    ``num_symbols`` values decoded from ``words`` with the categorical model ``counts``. The
    symbols are coded in blocks of ``block_rows`` rows; block ``b`` is
    ``words[offsets[b]:offsets[b + 1]]``.

    A product-quantized tensor (``subvectors = M > 0``, format version 2) has M symbols per
    row, one per sub-vector of ``row_size / M`` values, and ``grid`` holds M codebooks of
    ``len(counts)`` sub-vectors each; see :meth:`dequantize`.

    A raw tensor (``raw``, format version 3) holds its values in ``grid`` (float32, row-major),
    with no counts and no coded words: tensors too small to gain from coding.

    A transform-coded tensor (format version 3) has ``models = D`` entropy models, one per
    column (``counts`` is D tables of K counts, flattened; zeros pad a column's table), ``grid``
    holds the values of the counted symbols, column after column, and the point estimate is
    ``y_hat @ rotation.T + mean`` (``rotation``: D x D float16, absent = no rotation).
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    method: str
    params: dict[str, Any]
    coder: str
    grid: np.ndarray
    counts: np.ndarray
    words: np.ndarray
    block_rows: int
    offsets: np.ndarray
    subvectors: int = 0
    models: int = 0
    mean: np.ndarray | None = None
    rotation: np.ndarray | None = None
    #: Stored as plain float32 values in ``grid`` (format version 3): what a tiny tensor costs least as.
    raw: bool = False

    @property
    def num_weights(self) -> int:
        return int(math.prod(self.shape))  # plain ints: archives of many tiny tensors read this per tensor

    @property
    def symbols_per_row(self) -> int:
        return self.subvectors or row_size(self.shape)

    @property
    def num_symbols(self) -> int:
        return num_rows(self.shape) * self.symbols_per_row if self.subvectors else self.num_weights

    @property
    def block_size(self) -> int:
        """Symbols per block (the last block may be shorter)."""
        return self.block_rows * self.symbols_per_row

    def with_counts_dtype(self, dtype: np.dtype) -> TensorRecord:
        """The same record with its counts stored as ``dtype`` (one dataset holds every tensor's counts)."""
        return dataclasses.replace(self, counts=self.counts.astype(dtype))

    @property
    def model_counts(self) -> np.ndarray:
        """The entropy models' tables: (K,) counts, or (models, K) for per-column models."""
        return self.counts.reshape(self.models, -1) if self.models else self.counts

    def raw_values(self, blocks: list[int] | None = None) -> np.ndarray:
        """A raw tensor's values: all, or those of ``blocks`` (concatenated in that order)."""
        if blocks is None:
            return self.grid
        size = self.block_rows * row_size(self.shape)
        return np.concatenate([self.grid[b * size : (b + 1) * size] for b in blocks] or [np.zeros(0, np.float32)])

    def dequantize(self, symbols: np.ndarray) -> np.ndarray:
        """Values of decoded ``symbols`` (whole rows), flat float32 (:func:`bnncompress.coding.dequantize`,
        then the inverse transform)."""
        if not self.models:
            return dequantize(self.grid, symbols, len(self.counts), self.subvectors)
        table = self.model_counts
        position = (np.cumsum(table.reshape(-1) > 0) - 1).reshape(table.shape)  # symbol -> its grid value
        position[table == 0] = -1
        cells = position[np.resize(np.arange(self.models), len(symbols)), symbols]
        if cells.size and int(cells.min()) < 0:
            raise ValueError("a decoded symbol has no count in its column's model")
        y_hat = self.grid[cells].reshape(-1, self.models)
        if self.mean is None:
            return y_hat.reshape(-1)
        rotation = None if self.rotation is None else self.rotation.reshape(self.models, self.models)
        return inverse_transform(y_hat, self.mean, rotation).reshape(-1)

    @property
    def payload_bytes(self) -> int:
        """Coded words + jump table + entropy-model table + grid: everything needed to rebuild the values."""
        return int(self.words.nbytes + self.jump_table_bytes + self.table_bytes)

    @property
    def jump_table_bytes(self) -> int:
        """The stored block offsets: the first (0) and the last (all words) are implied."""
        return 8 * max(len(self.offsets) - 2, 0)

    @property
    def table_bytes(self) -> int:
        """The entropy-model tables, the grid and a transform's arrays: the payload that is not coded words."""
        side = sum(a.nbytes for a in (self.mean, self.rotation) if a is not None)
        return int(self.counts.nbytes + self.grid.nbytes + side)

    def checksum(self) -> str:
        """SHA-256 over the metadata and the three payload arrays."""
        h = hashlib.sha256()
        fields = [
            self.name,
            list(self.shape),
            self.dtype,
            self.method,
            self.params,
            self.coder,
            _dtype_name(self.counts.dtype),
            self.block_rows,
        ]
        if self.models:  # format version 3: the number of models; the transform's arrays follow the grid
            fields.append(self.models)
        if self.raw:  # format version 3: values stored as they are
            fields.append("raw")
        h.update(_CHECKSUM_JSON.encode(fields).encode())
        arrays = [(self.offsets, "<u8"), (self.words, "<u4"), (self.counts, _little_endian(self.counts.dtype))]
        arrays += [(self.grid, "<f4"), (self.mean, "<f4"), (self.rotation, "<f2")]
        for arr, dtype in arrays:  # no copy of arrays already stored as hashed (the reader's, on little-endian)
            if arr is not None:
                h.update(np.ascontiguousarray(arr if arr.dtype == dtype else arr.astype(dtype)))
        return h.hexdigest()


_CHECKSUM_JSON = json.JSONEncoder(sort_keys=True)  # json.dumps(..., sort_keys=True) without its per-call setup


@functools.cache
def _dtype_name(dtype: np.dtype) -> str:  # str(dtype) costs microseconds, per tensor of an archive
    return str(dtype)


@functools.cache
def _little_endian(dtype: np.dtype) -> np.dtype:
    return dtype.newbyteorder("<")


@dataclass
class ArchiveContents:
    """A validated archive as read from disk (still entropy-coded)."""

    path: Path
    tensors: list[TensorRecord]
    vocab: list[str] | None
    source: str
    tool_version: str
    format_version: int
    file_bytes: int
    vocab_bytes: int = 0

    @property
    def payload_bytes(self) -> int:
        return sum(t.payload_bytes for t in self.tensors)

    @property
    def num_weights(self) -> int:
        return sum(t.num_weights for t in self.tensors)


def common_counts_dtype(tensors: list[TensorRecord]) -> np.dtype:
    """The narrowest unsigned type that holds every tensor's counts (one dataset holds them all)."""
    width = max([t.counts.dtype.itemsize for t in tensors] + [1])
    return np.dtype(f"<u{width}")


def check_archive_limits(tensors: list[TensorRecord], manifest_bytes: int, vocab_bytes: int | None) -> None:
    """Refuse to write what the reader would refuse (the MAX_* limits above)."""
    if len(tensors) > MAX_TENSORS:
        raise ArchiveError(f"an archive holds at most 2^22 tensors, not {len(tensors):,}; pack them in several")
    if manifest_bytes > MAX_MANIFEST_BYTES:
        raise ArchiveError(f"the manifest of {len(tensors):,} tensors exceeds 1 GiB; pack them in several archives")
    if vocab_bytes is not None and vocab_bytes > MAX_VOCAB_BYTES:
        raise ArchiveError("the vocabulary exceeds 16 GiB; it cannot be stored")
    for t in tensors:
        if t.num_weights > MAX_WEIGHTS or not 1 <= t.block_rows <= MAX_BLOCK_ROWS:
            raise ArchiveError(f"tensor '{t.name}' is larger than an archive holds (2^40 weights)")


def printable(text: str) -> str:
    """``text`` (a tensor name from an archive) with control characters, such as terminal escapes,
    shown as escapes: names are printed in tables and messages."""
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")


@contextlib.contextmanager
def no_gc() -> Iterator[None]:
    """Without Python's cyclic garbage collector: it would scan the objects made per tensor (a
    record, a dict) again and again, which is most of the time an archive of 200k tiny tensors takes."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()


def tensor_infos(contents: ArchiveContents) -> list[TensorInfo]:
    """Per-tensor sizes; the file's bytes beyond the payloads are shared in proportion to size."""
    sizes = [(t.num_weights, t.payload_bytes) for t in contents.tensors]
    total = max(sum(w for w, _ in sizes), 1)
    shared = contents.file_bytes - sum(p for _, p in sizes)
    return [
        TensorInfo(t.name, t.shape, t.method, w, p, p + shared * w / total)
        for t, (w, p) in zip(contents.tensors, sizes)
    ]


def summary(contents: ArchiveContents) -> dict[str, Any]:
    """A JSON-ready summary of an archive, per tensor and in total (``bnncompress info --json``).

    One pass over plain numbers: an archive may hold millions of tensors. Bits per weight of a
    tensor without weights (a shape with a 0 after the first dimension) are None.
    """
    with no_gc():
        return _summary(contents)


def _summary(contents: ArchiveContents) -> dict[str, Any]:
    rows = [(t, t.num_weights, t.payload_bytes, t.table_bytes) for t in contents.tensors]
    weights, payload = sum(r[1] for r in rows), sum(r[2] for r in rows)
    n, shared = max(weights, 1), contents.file_bytes - payload

    def per(bits: float, w: int) -> float | None:
        return bits / w if w else None

    tensors = []
    for t, w, p, table in rows:
        file_bytes = p + shared * w / n
        tensors.append(
            {
                "name": t.name,
                "shape": list(t.shape),
                "method": t.method,
                "lam": t.params.get("lam"),  # as stored; may be absent
                "num_weights": w,
                "payload_bytes": p,
                "table_bytes": table,
                "payload_bits_per_weight": per(8.0 * p, w),
                "file_bits_per_weight": per(8.0 * file_bytes, w),
                "ratio_vs_float32": 32.0 * w / (8.0 * file_bytes) if file_bytes else None,
            }
        )
    return {
        "path": str(contents.path),
        "format_version": contents.format_version,
        "tool_version": contents.tool_version,
        "source": contents.source,
        "vocab_words": len(contents.vocab) if contents.vocab is not None else None,
        "vocab_bytes": contents.vocab_bytes,
        "tensors": tensors,
        "total": {
            "num_weights": weights,
            "payload_bytes": payload,
            "table_bytes": sum(r[3] for r in rows),
            "file_bytes": contents.file_bytes,
            "payload_bits_per_weight": 8.0 * payload / n,
            "file_bits_per_weight": 8.0 * contents.file_bytes / n,
            "ratio_vs_float32": 32.0 * n / (8.0 * contents.file_bytes),
        },
    }


def check_models(record: TensorRecord, where: str) -> None:
    """Check a record with per-column models read from an archive (at ``where``): D tables of K
    counts, each adding up to the rows; one grid value per counted symbol; a D-vector of means
    (and a D x D rotation, if any), all finite."""
    d, rows = record.models, num_rows(record.shape)
    if len(record.counts) == 0 or len(record.counts) % d:
        raise ArchiveError(f"{where}: the entropy models' tables do not split into {d} columns; the archive is damaged")
    table = record.model_counts.astype(np.uint64)
    if np.any(table.sum(axis=1) != rows):
        raise ArchiveError(f"{where}: a column's counts do not add up to the rows; the archive is damaged")
    if len(record.grid) != int(np.count_nonzero(table)):
        raise ArchiveError(f"{where}: grid and entropy models disagree in size; the archive is damaged")
    if record.mean is None or len(record.mean) != d or not np.all(np.isfinite(record.mean)):
        raise ArchiveError(f"{where}: the transform's means are missing or invalid; the archive is damaged")
    if record.rotation is not None and (len(record.rotation) != d * d or not np.all(np.isfinite(record.rotation))):
        raise ArchiveError(
            f"{where}: the transform's rotation is not a finite {d} x {d} matrix; the archive is damaged"
        )

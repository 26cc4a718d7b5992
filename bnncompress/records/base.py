"""The record-kind interface and :class:`TensorRecord`, the archive's unit for one tensor.

A record holds what every kind stores (coded ``words``, their block jump table ``offsets``,
entropy-model ``counts``, float32 ``grid`` values) plus its kind's *marks* (manifest fields
such as ``subvectors``) and *side arrays* (such as a transform's ``mean``). A kind (one
module each beside this one) owns its symbol layout, decoding, validation, checksum fields
and side arrays; the archive stores every kind the same way, from what the kind declares.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from ..errors import ArchiveError
from ..geometry import num_blocks, num_rows, row_size

#: Bytes of one stored block offset (uint64); a tensor's first (0) and last (all words) are implied.
JUMP_ENTRY_BYTES = 8
#: ``decode(words, offsets, counts, num_symbols, block_size, blocks)``: the entropy decoder a reader passes in.
SymbolDecoder = Callable[..., np.ndarray]


def common_counts_dtype(tensors: list[TensorRecord]) -> np.dtype:
    """The narrowest unsigned type that holds every tensor's counts (one dataset holds them all)."""
    width = max([t.counts.dtype.itemsize for t in tensors] + [1])
    return np.dtype(f"<u{width}")


def payload_bytes(words: int, blocks: int, counts: int, grid: int, side: int = 0) -> int:
    """The one payload formula (docs/FORMAT.md, Sizes): coded ``words`` + the stored jump table
    of ``blocks`` + entropy-model ``counts`` + ``grid`` + ``side`` arrays, all in bytes. Rate
    control, the raw-or-coded choice and ``info`` all use it.

    Example:
        >>> payload_bytes(words=400, blocks=3, counts=10, grid=40)
        466
    """
    return words + JUMP_ENTRY_BYTES * max(blocks - 1, 0) + counts + grid + side


@dataclass(frozen=True)
class SideArray:
    """An array a kind stores besides the grid: the manifest key of its ``[offset, length]``
    span, the dataset all tensors' arrays of that name share, its stored dtype, and the format
    version that introduced it (0: its kind's)."""

    name: str
    dataset: str
    dtype: str
    version: int = 0


class RecordKind:
    """How one kind of tensor record is laid out and decoded (subclass, then :func:`register_record_kind`).

    ``mark`` is the manifest field that marks the kind (None: the scalar grid, marked by no
    field) with its JSON type and absent value; ``version`` the format version that introduced
    it; ``side_arrays`` what it stores besides the grid, hashed in that order after the grid.
    """

    name: ClassVar[str]
    mark: ClassVar[str | None] = None
    mark_type: ClassVar[type] = int
    absent: ClassVar[Any] = 0
    version: ClassVar[int] = 1
    side_arrays: ClassVar[tuple[SideArray, ...]] = ()
    #: False for a kind that stores its values as they are (no words, no counts).
    coded: ClassVar[bool] = True
    #: True for a kind whose value table has a set of rows per block class (:meth:`value_table` of
    #: :mod:`.classvalued`): a block's symbols use its class's rows.
    values_per_class: ClassVar[bool] = False

    def check_mark(self, value: Any, shape: tuple[int, ...], where: str) -> None:
        """Refuse a mark that does not fit ``shape`` (read from an archive, at ``where``)."""

    def symbols_per_row(self, shape: tuple[int, ...], marks: dict[str, Any]) -> int:
        """The symbols the encoder emits per row (a row's symbols are consecutive)."""
        return row_size(shape)

    def model_counts(self, record: TensorRecord) -> np.ndarray:
        """The entropy models' tables as the coder takes them: (K,) counts, (models, K) counts, or
        (classes, models, K) float64 weights with :meth:`block_classes` (see :mod:`bnncompress.coding`)."""
        return record.counts

    def block_classes(self, record: TensorRecord) -> np.ndarray | None:
        """Each block's class (which of the (classes, models, K) tables codes it), or None: one set of models."""
        return None

    def checksum_fields(self, record: TensorRecord) -> list[Any]:
        """What the kind adds to the checksummed JSON fields (docs/FORMAT.md, Checksums)."""
        return []

    def dequantize(self, record: TensorRecord, symbols: np.ndarray, row_blocks: np.ndarray | None = None) -> np.ndarray:
        """Values of decoded ``symbols`` (whole rows), flat float32; ``row_blocks``: each row's coding
        block (None: the tensor's rows in order), given only to kinds with :attr:`values_per_class`."""
        raise NotImplementedError

    def values(self, record: TensorRecord, blocks: list[int] | None, decode: SymbolDecoder) -> np.ndarray:
        """Values of all blocks (symbols histogram-checked by ``decode``) or of ``blocks`` only,
        concatenated in that order, flat float32. Raises ValueError on symbols that do not decode."""
        table, classes = self.model_counts(record), self.block_classes(record)
        args = (record.words, record.offsets, table, record.num_symbols, record.block_size, blocks)
        symbols = decode(*args) if classes is None else decode(*args, classes=classes)
        if len(record.counts) and int(symbols.max(initial=0)) >= np.shape(table)[-1]:
            raise ValueError("symbols outside the grid")
        if blocks is None or not self.values_per_class:
            return self.dequantize(record, symbols)
        rows = np.minimum(record.block_rows, num_rows(record.shape) - np.asarray(blocks, np.int64) * record.block_rows)
        return self.dequantize(record, symbols, np.repeat(np.asarray(blocks, np.int64), rows))

    def validate(self, record: TensorRecord, where: str) -> None:
        """Refuse a record read from an archive (at ``where``) whose arrays do not fit its kind."""
        raise NotImplementedError


#: Registered kinds by name, and by the manifest field that marks them (in registration order).
KINDS: dict[str, RecordKind] = {}
_BY_MARK: dict[str, RecordKind] = {}
_SIDE_ARRAYS: dict[str, SideArray] = {}
_SIDE_KINDS: dict[str, RecordKind] = {}


def plugin_kind(kind: RecordKind) -> bool:
    """Whether ``kind``'s class is defined outside the package (the row kernels decode only the package's)."""
    return not type(kind).__module__.startswith("bnncompress.")


def register_record_kind(cls: type[RecordKind]) -> type[RecordKind]:
    """Class decorator: make a record kind known to archives (write and read), by its ``mark``.

    Example:
        >>> @register_record_kind                       # doctest: +SKIP
        ... class Halved(ScalarGrid):
        ...     name, mark, mark_type, absent = "halved", "halved", bool, False
    """
    kind = cls()
    if cls.name in KINDS or (cls.mark is not None and cls.mark in _BY_MARK):
        raise ValueError(f"a record kind named {cls.name!r} or marked {cls.mark!r} is registered already")
    for side in cls.side_arrays:
        if _SIDE_ARRAYS.get(side.name, side) != side:
            raise ValueError(f"side array {side.name!r} is declared already, differently")
        _SIDE_ARRAYS[side.name] = side
        _SIDE_KINDS.setdefault(side.name, kind)  # the oldest kind that stores it: from its version on
    KINDS[cls.name] = kind
    if cls.mark is not None:
        _BY_MARK[cls.mark] = kind
    return cls


def marks() -> dict[str, RecordKind]:
    """The manifest fields that mark a kind, and their kinds."""
    return _BY_MARK


def side_arrays() -> list[tuple[SideArray, int]]:
    """Every registered kind's side arrays with the format version that introduced each, in registration
    order (the order of their datasets)."""
    return [(side, side.version or _SIDE_KINDS[name].version) for name, side in _SIDE_ARRAYS.items()]


def kind_of(marks: dict[str, Any]) -> RecordKind:
    """The kind that ``marks`` name: the first registered kind whose mark is set (not at its absent
    value, such as 0); the scalar grid for none. A reader refuses a record with several.

    Example:
        >>> kind_of({"subvectors": 4, "models": 0}).name
        'product'
    """
    for mark, kind in _BY_MARK.items():
        if marks.get(mark, kind.absent) != kind.absent:
            return kind
    return KINDS["scalar"]


@dataclass(init=False, eq=False, repr=False, slots=True)
class TensorRecord:
    """Everything the archive stores for one tensor (see the module doc and docs/FORMAT.md).

    Keywords beyond the common fields are the kind's marks (``subvectors=4``, ``models=8``,
    ``raw=True``; an absent value such as 0 means unmarked) and side arrays (``mean=...``);
    as attributes they read as their absent value (or None) on records of other kinds.
    The symbols are coded in blocks of ``block_rows`` rows; block ``b`` is ``words[offsets[b]:offsets[b + 1]]``.
    ``dataclasses.replace`` takes the same keywords.

    Example:
        >>> r = TensorRecord("b", (3,), "float32", "uniform", {}, "constriction-ans-categorical",
        ...     grid=np.array([1, 2, 3], np.float32), counts=np.zeros(0, np.uint8),
        ...     words=np.zeros(0, np.uint32), block_rows=3, offsets=np.zeros(2, np.uint64), raw=True)
        >>> r.kind.name, r.subvectors, r.payload_bytes
        ('raw', 0, 12)
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
    marks: dict[str, Any]
    side: dict[str, np.ndarray]
    kind: RecordKind = field(init=False)

    def __init__(
        self,
        name: str,
        shape: tuple[int, ...],
        dtype: str,
        method: str,
        params: dict[str, Any],
        coder: str,
        grid: np.ndarray,
        counts: np.ndarray,
        words: np.ndarray,
        block_rows: int,
        offsets: np.ndarray,
        marks: dict[str, Any] | None = None,
        side: dict[str, np.ndarray] | None = None,
        **fields: Any,
    ):
        self.name, self.shape, self.dtype, self.method = name, shape, dtype, method
        self.params, self.coder = params, coder
        self.grid, self.counts, self.words, self.block_rows, self.offsets = grid, counts, words, block_rows, offsets
        self.marks, self.side = dict(marks or {}), dict(side or {})
        for key, value in fields.items():
            if key in _BY_MARK:
                if value != _BY_MARK[key].absent:
                    self.marks[key] = value
                else:
                    self.marks.pop(key, None)
            elif key in _SIDE_ARRAYS:
                if value is not None:
                    self.side[key] = value
                else:
                    self.side.pop(key, None)
            else:
                raise TypeError(f"TensorRecord got an unknown field {key!r}: neither a kind's mark nor a side array")
        self.kind = kind_of(self.marks)

    def __getattr__(self, key: str) -> Any:  # only for names that are not slots: marks and side arrays
        if key in _BY_MARK:
            return self.marks.get(key, _BY_MARK[key].absent)
        if key in _SIDE_ARRAYS:
            return self.side.get(key)
        raise AttributeError(f"'TensorRecord' object has no attribute {key!r}")

    def __repr__(self) -> str:
        return f"TensorRecord({self.name!r}, {self.shape}, kind={self.kind.name!r}, method={self.method!r})"

    def with_counts_dtype(self, dtype: np.dtype) -> TensorRecord:
        """The same record with its counts stored as ``dtype`` (one dataset holds every tensor's counts)."""
        return dataclasses.replace(self, counts=self.counts.astype(dtype))

    @property
    def num_weights(self) -> int:
        return int(math.prod(self.shape))  # plain ints: archives of many tiny tensors read this per tensor

    @property
    def symbols_per_row(self) -> int:
        return self.kind.symbols_per_row(self.shape, self.marks)

    @property
    def num_symbols(self) -> int:
        return num_rows(self.shape) * self.symbols_per_row

    @property
    def block_size(self) -> int:
        """Symbols per block (the last block may be shorter)."""
        return self.block_rows * self.symbols_per_row

    @property
    def num_blocks(self) -> int:
        return num_blocks(self.shape, self.block_rows)

    @property
    def model_counts(self) -> np.ndarray:
        """The entropy models' tables: (K,) counts, or (models, K) for per-column models."""
        return self.kind.model_counts(self)

    @property
    def block_classes(self) -> np.ndarray | None:
        """Each block's class for (classes, models, K) tables (:meth:`RecordKind.block_classes`), or None."""
        return self.kind.block_classes(self)

    def dequantize(self, symbols: np.ndarray, row_blocks: np.ndarray | None = None) -> np.ndarray:
        """Values of decoded ``symbols`` (whole rows; ``row_blocks``: each row's block, None: all rows
        in order), flat float32, as the record's kind decodes them."""
        if row_blocks is None or not self.kind.values_per_class:  # (kinds of two arguments stay valid)
            return self.kind.dequantize(self, symbols)
        return self.kind.dequantize(self, symbols, row_blocks)

    def values(self, decode: SymbolDecoder, blocks: list[int] | None = None) -> np.ndarray:
        """Values of all blocks or of ``blocks`` (see :meth:`RecordKind.values`), flat float32."""
        return self.kind.values(self, blocks, decode)

    @property
    def payload_bytes(self) -> int:
        """Coded words + jump table + entropy-model table + grid + side arrays (:func:`payload_bytes`)."""
        return payload_bytes(self.words.nbytes, len(self.offsets) - 1, *self._table_parts())

    @property
    def jump_table_bytes(self) -> int:
        """The stored block offsets: the first (0) and the last (all words) are implied."""
        return JUMP_ENTRY_BYTES * max(len(self.offsets) - 2, 0)

    @property
    def table_bytes(self) -> int:
        """The entropy-model tables, the grid and the side arrays: the payload that is not coded words."""
        return sum(self._table_parts())

    def _table_parts(self) -> tuple[int, int, int]:
        side = sum(a.nbytes for a in self.side.values()) if self.side else 0
        return int(self.counts.nbytes), int(self.grid.nbytes), int(side)

    def checksum(self) -> str:
        """SHA-256 over the metadata, the four common arrays and the kind's side arrays (docs/FORMAT.md)."""
        h = hashlib.sha256()
        fields = [self.name, list(self.shape), self.dtype, self.method, self.params, self.coder]
        fields += [_dtype_name(self.counts.dtype), self.block_rows, *self.kind.checksum_fields(self)]
        h.update(_CHECKSUM_JSON.encode(fields).encode())
        arrays = [(self.offsets, "<u8"), (self.words, "<u4"), (self.counts, _little_endian(self.counts.dtype))]
        arrays += [(self.grid, "<f4")] + [(self.side.get(s.name), s.dtype) for s in self.kind.side_arrays]
        for arr, dtype in arrays:  # no copy of arrays already stored as hashed (the reader's, on little-endian)
            if arr is not None:
                h.update(np.ascontiguousarray(arr if arr.dtype == dtype else arr.astype(dtype)))
        return h.hexdigest()


_CHECKSUM_JSON = json.JSONEncoder(sort_keys=True)  # json.dumps(..., sort_keys=True) without its per-call setup


@functools.cache
def _dtype_name(dtype: np.dtype) -> str:  # "uint32" in either byte order (the spec's); cached: per tensor
    return dtype.name


@functools.cache
def _little_endian(dtype: np.dtype) -> np.dtype:
    return dtype.newbyteorder("<")


def damaged(where: str, what: str) -> ArchiveError:
    """The error for a record that does not fit its kind: ``{where}: {what}; the archive is damaged``."""
    return ArchiveError(f"{where}: {what}; the archive is damaged")

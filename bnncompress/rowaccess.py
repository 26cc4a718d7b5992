"""Rows of one tensor record, decoded on demand: the one decode path for partial reads.

:class:`RowReader` serves ``Archive.rows``, the compressed embedding and the streaming
similarity queries. It returns the *stored* values (float32, before a recorded support or the
original dtype is applied), bit-identical to the rows of the record's full decode.

How rows are decoded (the archive format is not involved; all of this is in memory):

- The first few lookups decode each block they touch only up to the last row they need
  (:func:`bnncompress.coding.decode_prefixes`; constriction until numba is loaded).
- Once the symbols decoded so far (prefixes, and whole blocks decoded for lookups or for
  :meth:`RowReader.blocks`) reach as many as the whole record, or a batch would, lookups decode
  whole blocks with constriction until numba's import pays (:data:`_IMPORT_PAYS` symbols decoded,
  or numba loaded already); then one pass
  over the record (numba, histogram-checked) records *checkpoints*: the ANS decoder's state at
  every r-th row, with r the smallest spacing whose checkpoints (12 bytes each) take at most
  :data:`CHECKPOINT_SHARE` of the record's payload. A row then decodes from the checkpoint
  before it, straight to its values, in a parallel numba kernel over the batch
  (:mod:`bnncompress._rows_kernels`).
- :meth:`RowReader.all` decodes, dequantizes and transforms block by block in one fused
  parallel kernel (and records the checkpoints on the way).

Every path computes a row's values with the same arithmetic (one summation order for the
transform), so they agree bit for bit. Records with (C, M, K) entropy-model weights give each
block's class (``record.block_classes``) to every path.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator

import numpy as np

from . import coding
from .errors import ArchiveError
from .geometry import num_rows, row_size
from .records import TensorRecord

#: Checkpoints take at most this share of the record's payload bytes.
CHECKPOINT_SHARE = 0.3
_CHECKPOINT_BYTES = 12  # uint64 state + uint32 word position
_KERNELS = "bnncompress._rows_kernels"


#: Symbols a reader decodes without the row kernels before loading them pays (~0.2 s of constriction, numba's import).
_IMPORT_PAYS = 1 << 22
#: Blocks :meth:`RowReader.blocks` decodes at once (in parallel): a few MB of rows at a time.
BLOCKS_PER_STEP = 8


#: Symbols a row lookup decodes at once when it decodes blocks up to the rows it needs (2 MiB of int32).
PREFIX_SYMBOLS = 1 << 19


def _groups(sizes: np.ndarray, limit: int) -> list[tuple[int, int]]:
    """Consecutive ranges of ``sizes`` summing to at most ``limit`` each (or one entry, if it is larger)."""
    ranges, start, total = [], 0, 0
    for i, size in enumerate(sizes.tolist()):
        if i > start and total + size > limit:
            ranges.append((start, i))
            start, total = i, 0
        total += size
    return [*ranges, (start, len(sizes))]


class RowReader:
    """Decoded rows of ``record`` by position, and its coding blocks one after another.

    Example:
        >>> reader = RowReader(archive.record("word_vectors"))   # doctest: +SKIP
        >>> reader.rows(np.array([0, 17])).shape                  # doctest: +SKIP
        (2, 50)
    """

    def __init__(self, record: TensorRecord):
        self.record = record
        self.shape = (num_rows(record.shape), row_size(record.shape))
        self._value_table: tuple | None = None  # the record kind's, for the kernels; () if it has none
        self._tables: tuple | None = None  # the row kernels' coder and value tables
        self._checkpoints: tuple | None = None  # (every, per_block, states, positions)
        self._plain_symbols = 0  # symbols decoded so far without the row kernels (prefixes and whole blocks)

    @property
    def nbytes(self) -> int:
        """Bytes of arrays this reader holds beyond the record itself (checkpoints, coder and value tables)."""
        held = (*(self._value_table or ()), *(self._tables or ()), *(self._checkpoints or ()))
        arrays = {id(a): a for a in held if isinstance(a, np.ndarray)}.values()
        own = (self.record.words, self.record.offsets, self.record.grid)  # views of them, if not copies
        return int(sum(a.nbytes for a in arrays if not any(np.shares_memory(a, b) for b in own)))

    @property
    def checkpoint_every(self) -> int:
        """Rows between checkpoints: the smallest spacing within :data:`CHECKPOINT_SHARE` of the payload."""
        rec = self.record
        budget = CHECKPOINT_SHARE * rec.payload_bytes / _CHECKPOINT_BYTES / max(rec.num_blocks, 1)
        return max(1, -(-rec.block_rows // max(int(budget), 1)))

    # ------------------------------------------------------------------ reference path
    def _decode(self, blocks: list[int] | None) -> np.ndarray:
        rec = self.record
        try:
            values = rec.values(coding.decode_blocks, blocks)
        except (ValueError, RuntimeError) as exc:
            raise _corrupt(rec, exc) from None
        rows = self.shape[0] if blocks is None else self._rows_in(np.asarray(blocks, np.int64))
        self._plain_symbols += rows * rec.symbols_per_row  # (the row kernels pay once this reaches _IMPORT_PAYS)
        return values

    def _rows_in(self, blocks: np.ndarray) -> int:
        """Rows of these coding blocks (int64 ids; the last block may be shorter)."""
        return int(np.minimum(self.record.block_rows, self.shape[0] - blocks * self.record.block_rows).sum())

    def _fused(self) -> bool:
        """True where the row kernels can decode this record."""
        rec = self.record
        if self._value_table is None:
            table = getattr(rec.kind, "value_table", None)
            usable = rec.kind.coded and rec.num_weights > 0 and table is not None
            self._value_table = (table(rec) if usable else None) or ()
        return bool(self._value_table) and os.environ.get("BNNCOMPRESS_CODER", "") != "constriction"

    def _kernels_worth_it(self) -> bool:
        """The kernels are loaded already, or the record is large enough (or this reader has decoded
        enough already) to pay for numba's import."""
        return (
            _KERNELS in sys.modules
            or self.record.num_symbols >= coding.NUMBA_DECODE_SYMBOLS
            or self._plain_symbols >= _IMPORT_PAYS
        )

    # ------------------------------------------------------------------ public
    def work_bytes_per_weight(self) -> int:
        """Bytes per weight :meth:`all` holds besides its result: the float32 values, and the decoded symbols
        too where the row kernels do not decode this record (they decode blocks straight to values)."""
        return 4 if self._fused() and self._kernels_worth_it() else 12

    def rows(self, positions: np.ndarray) -> np.ndarray:
        """Rows at ``positions`` (non-negative int64, already bounds-checked), as a (k, row size) float32 array."""
        positions = np.asarray(positions, dtype=np.int64).reshape(-1)
        rec = self.record
        if positions.size == 0 or rec.num_weights == 0:
            return np.zeros((positions.size, self.shape[1]), np.float32)
        if not rec.kind.coded:
            return rec.grid.reshape(self.shape)[positions]
        if not self._fused():
            return self._rows_by_blocks(positions)
        if self._checkpoints is None:
            block_of = positions // rec.block_rows
            order = np.argsort(block_of, kind="stable")
            ends = np.flatnonzero(np.r_[block_of[order][1:] != block_of[order][:-1], True])
            blocks = block_of[order][ends]
            last = np.maximum.reduceat(positions[order], np.r_[0, ends[:-1] + 1]) - blocks * rec.block_rows
            work = int((last + 1).sum()) * rec.symbols_per_row
            if self._plain_symbols + work <= rec.num_symbols:
                self._plain_symbols += work
                return self._rows_by_prefixes(positions, blocks, last + 1)
            if not self._kernels_worth_it():  # (whole blocks: their symbols count towards _IMPORT_PAYS)
                return self._rows_by_blocks(positions)
            self._decode_fused(None, values=False)
        return self._rows_from_checkpoints(positions)

    def blocks(self) -> Iterator[tuple[int, np.ndarray]]:
        """``(first row, (n, row size) float32 rows)`` for every coding block, in order."""
        rec = self.record
        fused = self._fused() and self._kernels_worth_it()
        group = BLOCKS_PER_STEP if fused else 1  # the fused kernel decodes a group's blocks in parallel
        for first in range(0, rec.num_blocks, group):
            blocks = list(range(first, min(first + group, rec.num_blocks)))
            values = self._decode_fused(blocks, values=True) if fused else self._decode(blocks)
            values = values.reshape(-1, self.shape[1])
            for i, b in enumerate(blocks):
                yield b * rec.block_rows, values[i * rec.block_rows : (i + 1) * rec.block_rows]

    def all(self) -> np.ndarray:
        """Every row (the record's full decode, its symbol histogram checked), flat float32."""
        if self._fused() and self._kernels_worth_it():
            return self._decode_fused(None, values=True).reshape(-1)
        return self._decode(None)

    # ------------------------------------------------------------------ paths
    def _rows_by_blocks(self, positions: np.ndarray) -> np.ndarray:
        """Rows by decoding their whole blocks (the reference path)."""
        rec = self.record
        block_of = positions // rec.block_rows
        ordered = np.sort(block_of)  # (np.unique would import numpy.ma, 40 ms, on a first lookup)
        blocks = ordered[np.concatenate(([True], ordered[1:] != ordered[:-1]))]
        decoded = self._decode(blocks.tolist()).reshape(-1, self.shape[1])
        position = np.searchsorted(blocks, block_of) * rec.block_rows + positions - block_of * rec.block_rows
        return decoded[position]

    def _rows_by_prefixes(self, positions: np.ndarray, blocks: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """Rows by decoding each of ``blocks`` (sorted) up to its ``lengths`` rows only."""
        rec = self.record
        spr = rec.symbols_per_row
        block_of = positions // rec.block_rows
        wanted = np.empty((positions.size, spr), np.int32)
        try:  # a group of blocks at a time: a batch of rows across every block decoded all at once took twice
            for start, stop in _groups(lengths * spr, PREFIX_SYMBOLS):  # the float32 table (numpy peak)
                group, counts = blocks[start:stop], lengths[start:stop]
                symbols = coding.decode_prefixes(
                    rec.words,
                    rec.offsets,
                    rec.model_counts,
                    rec.num_symbols,
                    rec.block_size,
                    group.tolist(),
                    (counts * spr).tolist(),
                    classes=rec.block_classes,
                )
                mine = np.flatnonzero((block_of >= group[0]) & (block_of <= group[-1]))
                first = np.r_[0, np.cumsum(counts)[:-1]]  # each block's first row among the decoded ones
                at = first[np.searchsorted(group, block_of[mine])] + positions[mine] - block_of[mine] * rec.block_rows
                wanted[mine] = symbols.reshape(-1, spr)[at]
            wanted = wanted.reshape(-1)
            if len(rec.counts) and int(wanted.max(initial=0)) >= np.shape(rec.model_counts)[-1]:
                raise ValueError("symbols outside the grid")
            return rec.dequantize(wanted, block_of).reshape(-1, self.shape[1])
        except (ValueError, RuntimeError) as exc:
            raise _corrupt(rec, exc) from None

    def _kernel_tables(self) -> tuple:
        """``(words, offsets, *model)``: the row kernels' arguments, ``model`` in their order (the
        coder's CDFs, lookup tables, block bases and period, then the kind's value table and its bases)."""
        if self._tables is None:
            from . import _ans, _rows_kernels

            rec = self.record
            table = rec.model_counts
            try:
                classes = coding.check_classes(table, rec.block_classes, rec.num_blocks)
                coding.check_information(table, len(rec.words), rec.num_blocks, classes)  # before any allocation
            except ValueError as exc:
                raise _corrupt(rec, exc) from None
            cdfs, lookup = _rows_kernels.coder_tables(table)
            bases, period = _ans.model_bases(table, classes)
            self._fused()  # (computes the kind's value table)
            vt, valid, mode, mean, rt = self._value_table
            vbases, vperiod = _rows_kernels.value_bases(len(vt), bases, period, rec.kind.values_per_class)
            self._tables = (
                np.ascontiguousarray(rec.words, dtype=np.uint32),
                np.ascontiguousarray(rec.offsets, dtype=np.int64),
                cdfs,
                lookup,
                bases,
                period,
                np.ascontiguousarray(vt, dtype=np.float32),
                np.ascontiguousarray(valid),
                vbases,
                vperiod,
                mode,
                np.ascontiguousarray(rt, dtype=np.float64),
                np.ascontiguousarray(mean, dtype=np.float64),
            )
        return self._tables

    def _decode_fused(self, blocks: list[int] | None, values: bool) -> np.ndarray:
        """Decode ``blocks`` (None: all, histogram-checked, checkpoints recorded) to values, or only
        record the checkpoints (``values`` False)."""
        from . import _ans, _rows_kernels

        rec = self.record
        words, offsets, *model = self._kernel_tables()
        cdfs = model[0]
        everything = blocks is None
        block_ids = np.arange(rec.num_blocks, dtype=np.int64) if everything else np.asarray(blocks, np.int64)
        every, per_block, states, positions = 0, 1, np.zeros(1, np.uint64), np.zeros(1, np.uint32)
        if everything and self._checkpoints is None:
            every = self.checkpoint_every
            per_block = -(-rec.block_rows // every)
            states = np.empty(rec.num_blocks * per_block, np.uint64)
            positions = np.empty(rec.num_blocks * per_block, np.uint32)
        rows = self._rows_in(block_ids)
        out = np.empty((rows if values else 0, self.shape[1]), np.float32)
        models, alphabet = cdfs.shape[0], cdfs.shape[1] - 1
        histogram = np.zeros((models, alphabet), np.int64)
        group = max(1, _ans._GROUP_ENTRIES // max(models * alphabet, 1))  # bounds the per-block histograms
        start = 0
        for g in range(0, len(block_ids), group):
            part = block_ids[g : g + group]
            stop = start + self._rows_in(part)
            work = (stop - start) * rec.symbols_per_row
            kernel = _ans._parallel(
                _rows_kernels.decode_blocks_values, _rows_kernels.decode_blocks_values_serial, work, len(part)
            )
            hist = np.zeros((len(part), models, alphabet), np.int64)
            status = np.zeros(len(part), np.int8)
            kernel(
                words,
                offsets,
                part,
                rec.block_rows,
                self.shape[0],
                rec.symbols_per_row,
                *model,
                out[start:stop] if values else out,
                every,
                states,
                positions,
                per_block,
                hist,
                status,
            )
            if np.any(status == _ans.BAD_FIRST_WORD):
                raise _corrupt(rec, "a block ends in a zero word")
            if np.any(status == _ans.WORDS_LEFT):
                raise _corrupt(rec, "coded words left over after decoding")
            if np.any(status == _rows_kernels.UNCOUNTED):  # (a whole decode's histogram would say so too; a part's not)
                raise _corrupt(rec, "a decoded symbol has no value in its column")
            histogram += hist.sum(axis=0)
            start = stop
        if everything:
            try:
                coding.check_histogram(histogram, rec.model_counts)
            except ValueError as exc:
                raise _corrupt(rec, exc) from None
            if self._checkpoints is None:
                self._checkpoints = (every, per_block, states, positions)
        return out

    def _rows_from_checkpoints(self, positions: np.ndarray) -> np.ndarray:
        """Rows decoded from their checkpoints, each distinct row once, in parallel."""
        from . import _ans, _rows_kernels

        rec = self.record
        words, offsets, *model = self._kernel_tables()
        every, per_block, states, ck_positions = self._checkpoints
        order = np.argsort(positions)
        ordered = positions[order]
        first = np.r_[True, ordered[1:] != ordered[:-1]]
        distinct = ordered[first]
        out = np.empty((len(distinct), self.shape[1]), np.float32)
        status = np.zeros(len(distinct), np.int8)
        work = len(distinct) * every * rec.symbols_per_row  # (each row decoded from the checkpoint before it)
        kernel = _ans._parallel(
            _rows_kernels.decode_rows_values,
            _rows_kernels.decode_rows_values_serial,
            work,
            _rows_kernels.chunks(len(distinct)),
        )
        kernel(
            distinct,
            words,
            offsets,
            rec.block_rows,
            rec.symbols_per_row,
            *model,
            every,
            states,
            ck_positions,
            per_block,
            out,
            status,
        )
        if np.any(status != 0):
            raise _corrupt(rec, "a decoded symbol has no count in its column's model")
        if len(distinct) == len(positions):
            result = np.empty_like(out)
            result[order] = out
            return result
        slot = np.empty(len(positions), np.int64)
        slot[order] = np.cumsum(first) - 1
        return out[slot]


def _corrupt(rec: TensorRecord, exc: object) -> ArchiveError:
    return ArchiveError(f"tensor '{rec.name}' does not decode ({exc}); the archive is corrupt")

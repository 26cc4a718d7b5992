"""Rows of one tensor record, decoded on demand: the one decode path for partial reads.

:class:`RowReader` serves ``Archive.rows``, the compressed embedding and the streaming
similarity queries. It returns the *stored* values (float32, before a recorded support or the
original dtype is applied), bit-identical to the rows of the record's full decode.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from . import coding
from .errors import ArchiveError
from .geometry import num_rows, row_size
from .records import TensorRecord


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

    @property
    def nbytes(self) -> int:
        """Bytes of arrays this reader holds beyond the record itself."""
        return 0

    def _decode(self, blocks: list[int] | None) -> np.ndarray:
        rec = self.record
        try:
            return rec.values(coding.decode_blocks, blocks)
        except (ValueError, RuntimeError) as exc:
            raise ArchiveError(f"tensor '{rec.name}' does not decode ({exc}); the archive is corrupt") from None

    def rows(self, positions: np.ndarray) -> np.ndarray:
        """Rows at ``positions`` (non-negative int64, already bounds-checked), as a (k, row size) float32 array."""
        positions = np.asarray(positions, dtype=np.int64).reshape(-1)
        rec = self.record
        if positions.size == 0 or rec.num_weights == 0:
            return np.zeros((positions.size, self.shape[1]), np.float32)
        block_of = positions // rec.block_rows
        ordered = np.sort(block_of)  # (np.unique would import numpy.ma, 40 ms, on a first lookup)
        blocks = ordered[np.concatenate(([True], ordered[1:] != ordered[:-1]))]
        # sorted; only the tensor's last block can be short, and it sorts last
        decoded = self._decode(blocks.tolist()).reshape(-1, self.shape[1])
        position = np.searchsorted(blocks, block_of) * rec.block_rows + positions - block_of * rec.block_rows
        return decoded[position]

    def blocks(self) -> Iterator[tuple[int, np.ndarray]]:
        """``(first row, (n, row size) float32 rows)`` for every coding block, in order."""
        rec = self.record
        for b in range(rec.num_blocks):
            yield b * rec.block_rows, self._decode([b]).reshape(-1, self.shape[1])

    def all(self) -> np.ndarray:
        """Every row (the record's full decode, its symbol histogram checked), flat float32."""
        return self._decode(None)

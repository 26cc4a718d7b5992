"""The scalar-grid record kind: one symbol per weight, ``values = grid[symbols]`` (format version 1)."""

from __future__ import annotations

import numpy as np

from .base import RecordKind, TensorRecord, damaged, register_record_kind

#: How a value table's rows are finished (:mod:`bnncompress._rows_kernels` has the same numbers):
#: as they are, plus the means, or rotated and plus the means.
PLAIN, MEAN, ROTATED = 0, 1, 2


def dequantize(grid: np.ndarray, symbols: np.ndarray, alphabet: int, subvectors: int = 0) -> np.ndarray:
    """Values of decoded ``symbols`` (whole rows, flat): ``grid[symbols]``, or for product
    quantization (``subvectors`` = M symbols per row, ``grid`` = M codebooks of ``alphabet``
    sub-vectors) sub-vector ``m`` of a row = codebook ``m``'s entry ``symbol``. Quantizers
    reconstruct with it too, so what they chose is what decodes.

    Example:
        >>> dequantize(np.array([0.5, 1.5], np.float32), np.array([1, 0, 1]), 2).tolist()
        [1.5, 0.5, 1.5]
    """
    if not subvectors:
        return grid[symbols]
    books = grid.reshape(subvectors, alphabet, -1)
    return books[np.arange(subvectors), symbols.reshape(-1, subvectors)].reshape(-1)


@register_record_kind
class ScalarGrid(RecordKind):
    """One entropy model of K counts; ``grid`` holds the K values the symbols index (no mark)."""

    name = "scalar"

    def values_per_symbol(self, record: TensorRecord) -> int:
        """Grid values per symbol of the alphabet."""
        return 1

    def dequantize(self, record: TensorRecord, symbols: np.ndarray) -> np.ndarray:
        return record.grid[symbols]

    def value_table(self, record: TensorRecord) -> tuple | None:
        """What the row kernels (:mod:`bnncompress._rows_kernels`) decode with: the grid as (P, K, L)
        values (P = 1 and L = 1; product quantization: P = M codebooks of L-vectors), all symbols
        valid, no transform. None for a subclass that dequantizes otherwise (it decodes by its own
        :meth:`dequantize`)."""
        if self.name not in ("scalar", "product"):
            return None
        alphabet = len(record.counts)
        parts = record.marks.get("subvectors", 0) or 1
        vt = record.grid.reshape(parts, alphabet, -1)
        return vt, np.ones((parts, alphabet), dtype=np.bool_), PLAIN, np.zeros(1), np.eye(1)

    def validate(self, record: TensorRecord, where: str) -> None:
        """The grid holds ``values_per_symbol`` values per counted symbol; the counts add up to the symbols."""
        counts = record.counts
        if len(record.grid) != len(counts) * self.values_per_symbol(record) or (
            record.num_weights > 0 and len(counts) == 0
        ):
            raise damaged(where, "grid and entropy model disagree in size")
        if int(counts.sum(dtype=np.uint64)) != record.num_symbols:
            raise damaged(where, "entropy model counts do not add up to the tensor size")

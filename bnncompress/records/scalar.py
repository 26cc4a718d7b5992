"""The scalar-grid record kind: one symbol per weight, ``values = grid[symbols]`` (format version 1)."""

from __future__ import annotations

import numpy as np

from .base import RecordKind, TensorRecord, damaged, register_record_kind


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

    def validate(self, record: TensorRecord, where: str) -> None:
        """The grid holds ``values_per_symbol`` values per counted symbol; the counts add up to the symbols."""
        counts = record.counts
        if len(record.grid) != len(counts) * self.values_per_symbol(record) or (
            record.num_weights > 0 and len(counts) == 0
        ):
            raise damaged(where, "grid and entropy model disagree in size")
        if int(counts.sum(dtype=np.uint64)) != record.num_symbols:
            raise damaged(where, "entropy model counts do not add up to the tensor size")

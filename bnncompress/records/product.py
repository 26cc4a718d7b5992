"""The product-quantized record kind (format version 2): M symbols per row, one per sub-vector.

Marked ``subvectors = M``: each row of D values is M sub-vectors of D / M consecutive values,
and ``grid`` holds M codebooks of K sub-vectors each (``len(grid) == K * D``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..geometry import row_size
from .base import TensorRecord, damaged, register_record_kind
from .scalar import ScalarGrid, dequantize


@register_record_kind
class ProductQuantized(ScalarGrid):
    """Codebooks of sub-vectors: sub-vector ``m`` of a row is codebook ``m``'s entry ``symbol``."""

    name = "product"
    mark = "subvectors"
    version = 2

    def check_mark(self, value: Any, shape: tuple[int, ...], where: str) -> None:
        if value < 0 or len(shape) < 2 or row_size(shape) % value:
            raise damaged(where, f"'subvectors' {value} does not divide the rows")

    def symbols_per_row(self, shape: tuple[int, ...], marks: dict[str, Any]) -> int:
        return marks["subvectors"]

    def values_per_symbol(self, record: TensorRecord) -> int:
        return row_size(record.shape)

    def dequantize(self, record: TensorRecord, symbols: np.ndarray) -> np.ndarray:
        return dequantize(record.grid, symbols, len(record.counts), record.marks["subvectors"])

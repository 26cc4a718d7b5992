"""The per-column transform record kind (format version 3): one entropy model per column.

Marked ``models = D`` (the row size): ``counts`` holds D tables of K counts (zeros pad a
column's table), ``grid`` the values of the counted symbols column after column, and the side
arrays a D-vector ``mean`` and an optional D x D float16 ``rotation``; a row decodes to
``y_hat @ rotation.T + mean``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..geometry import num_rows, row_size
from .base import RecordKind, SideArray, TensorRecord, damaged, register_record_kind


def inverse_transform(y_hat: np.ndarray, mean: np.ndarray, rotation: np.ndarray | None) -> np.ndarray:
    """Rows of a transform-coded tensor: ``x_hat = y_hat Rᵀ + mean`` (float64 products, rounded
    once to float32); ``rotation`` (D x D) None for no rotation. The transform quantizer
    reconstructs with it too, so what it chose is what decodes.

    Example:
        >>> inverse_transform(np.array([[1.0, 0.0]]), np.array([0.5, 0.5], np.float32), np.eye(2)).tolist()
        [[1.5, 0.5]]
    """
    if rotation is None:
        return (y_hat.astype(np.float64) + mean).astype(np.float32)
    return (y_hat.astype(np.float64) @ rotation.astype(np.float64).T + mean).astype(np.float32)


@register_record_kind
class PerColumn(RecordKind):
    """D entropy models, one per column, and the transform that maps the decoded columns back."""

    name = "columns"
    mark = "models"
    version = 3
    side_arrays = (SideArray("mean", "means", "<f4"), SideArray("rotation", "rotations", "<f2"))

    def check_mark(self, value: Any, shape: tuple[int, ...], where: str) -> None:
        if value != row_size(shape):
            raise damaged(where, f"'models' {value} is not one per column")

    def model_counts(self, record: TensorRecord) -> np.ndarray:
        return record.counts.reshape(record.marks["models"], -1)

    def checksum_fields(self, record: TensorRecord) -> list[Any]:
        return [record.marks["models"]]

    def dequantize(self, record: TensorRecord, symbols: np.ndarray) -> np.ndarray:
        models, table = record.marks["models"], self.model_counts(record)
        position = (np.cumsum(table.reshape(-1) > 0) - 1).reshape(table.shape)  # symbol -> its grid value
        position[table == 0] = -1
        cells = position[np.resize(np.arange(models), len(symbols)), symbols]
        if cells.size and int(cells.min()) < 0:
            raise ValueError("a decoded symbol has no count in its column's model")
        y_hat = record.grid[cells].reshape(-1, models)
        mean, rotation = record.side.get("mean"), record.side.get("rotation")
        if mean is None:
            return y_hat.reshape(-1)
        rotation = None if rotation is None else rotation.reshape(models, models)
        return inverse_transform(y_hat, mean, rotation).reshape(-1)

    def validate(self, record: TensorRecord, where: str) -> None:
        """D tables of K counts, each adding up to the rows; one grid value per counted symbol;
        a finite D-vector of means (and a finite D x D rotation, if any)."""
        d, rows = record.marks["models"], num_rows(record.shape)
        if len(record.counts) == 0 or len(record.counts) % d:
            raise damaged(where, f"the entropy models' tables do not split into {d} columns")
        table = self.model_counts(record).astype(np.uint64)
        if np.any(table.sum(axis=1) != rows):
            raise damaged(where, "a column's counts do not add up to the rows")
        if len(record.grid) != int(np.count_nonzero(table)):
            raise damaged(where, "grid and entropy models disagree in size")
        mean, rotation = record.side.get("mean"), record.side.get("rotation")
        if mean is None or len(mean) != d or not np.all(np.isfinite(mean)):
            raise damaged(where, "the transform's means are missing or invalid")
        if rotation is not None and (len(rotation) != d * d or not np.all(np.isfinite(rotation))):
            raise damaged(where, f"the transform's rotation is not a finite {d} x {d} matrix")

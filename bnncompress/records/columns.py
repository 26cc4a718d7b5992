"""The per-column transform record kind (format version 3): one entropy model per column.

Marked ``models = D`` (the row size): ``counts`` holds D tables of K counts (zeros pad a
column's table), ``grid`` the values of the counted symbols column after column, and the side
arrays a D-vector ``mean`` and an optional D x D float16 ``rotation``; a row decodes to
``y_hat @ rotation.T + mean``.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

from ..geometry import num_rows, row_size
from .base import RecordKind, SideArray, TensorRecord, damaged, register_record_kind
from .scalar import MEAN, PLAIN, ROTATED


def inverse_transform(y_hat: np.ndarray, mean: np.ndarray, rotation: np.ndarray | None) -> np.ndarray:
    """Rows of a transform-coded tensor: ``x_hat = y_hat Rᵀ + mean`` (float64 products summed over
    k ascending, rounded once to float32); ``rotation`` (D x D) None for no rotation. Every decode
    path sums in this one order (numba's :func:`~bnncompress._rows_kernels.inverse_transform_into`
    or numpy's sequential ``cumsum``, the same bits), so a row decodes alike alone or in a tensor;
    the transform quantizer reconstructs with it too, so what it chose is what decodes.

    Example:
        >>> inverse_transform(np.array([[1.0, 0.0]]), np.array([0.5, 0.5], np.float32), np.eye(2)).tolist()
        [[1.5, 0.5]]
    """
    y = np.asarray(y_hat, dtype=np.float64)
    if rotation is None:
        with np.errstate(over="ignore"):  # (a forged archive's values beyond float32: inf, refused on restore)
            return (y + mean).astype(np.float32)
    y = y.reshape(-1, len(mean))
    rt = np.ascontiguousarray(np.asarray(rotation, dtype=np.float64).T)
    out = np.empty(y.shape, dtype=np.float32)
    d = len(mean)
    if len(y) * d * d >= _KERNEL_PRODUCTS or "bnncompress._rows_kernels" in sys.modules:
        from .._rows_kernels import inverse_transform  # numba: imported on first use

        inverse_transform(np.ascontiguousarray(y), rt, np.asarray(mean, np.float64), out)
        return out
    step = max(1, (1 << 19) // (d * d))
    for i in range(0, len(y), step):  # (rows, k, j) products, summed over k in order by cumsum
        acc = np.cumsum(y[i : i + step, :, None] * rt[None], axis=1)[:, -1]
        with np.errstate(over="ignore"):  # (a forged archive's values beyond float32: inf, refused on restore)
            out[i : i + step] = acc + np.asarray(mean, np.float64)
    return out


#: Products (rows x D²) from which :func:`inverse_transform` uses the numba kernel even before numba is imported.
_KERNEL_PRODUCTS = 1 << 20  # ~100 rows of 100: a pack's blocks; a first lookup's few rows stay in numpy


def value_table(record: TensorRecord) -> tuple:
    """What the row kernels (:mod:`bnncompress._rows_kernels`) decode with: the (D, K, 1) values
    of every column's symbols, which symbols are counted, the transform mode, the float64 means
    and Rᵀ (D x D; 1 x 1 when not rotated)."""
    models, table = record.marks["models"], record.kind.model_counts(record)
    valid = table > 0
    position = np.cumsum(valid.reshape(-1)).reshape(table.shape) - 1
    vt = np.where(valid, record.grid[np.maximum(position, 0)] if len(record.grid) else 0, 0).astype(np.float32)
    mean, rotation = record.side.get("mean"), record.side.get("rotation")
    mode = PLAIN if mean is None else (MEAN if rotation is None else ROTATED)
    mean = np.zeros(models) if mean is None else mean.astype(np.float64)
    rt = np.eye(1) if rotation is None else np.ascontiguousarray(rotation.reshape(models, models).T, dtype=np.float64)
    return vt[:, :, None], valid, mode, mean, rt


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

    def value_table(self, record: TensorRecord) -> tuple | None:
        return value_table(record) if self.name == "columns" else None  # (not a subclass's own decoding)

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

"""Tensor geometry shared by every stage: rows, coding blocks, and which rows an index selects.

A tensor's rows are its first dimension (a 0-d tensor is one row). The archive codes rows in
blocks of ``block_rows`` whole rows, each its own entropy-coded stream (docs/FORMAT.md), so
that one row (a word vector) is read by decoding its block only.
"""

from __future__ import annotations

import operator
from typing import Any

import numpy as np

from .errors import ArgumentTypeError, OutOfRangeError

#: Rows are grouped into blocks of about this many symbols (one block decodes in ~1-2 ms).
BLOCK_SYMBOLS = 1 << 16


_INDEX_KINDS = "an integer, a slice, an integer array or list, or a boolean mask of its rows"


def row_positions(indices: Any, n_rows: int, name: str) -> tuple[np.ndarray, tuple[int, ...]]:
    """The rows that ``array[indices]`` selects from ``n_rows`` by numpy's rules: flat
    non-negative positions, and the shape the index gives its result (``()`` for one integer).
    Anything but an integer, a slice, an integer array or list, or a 1-D boolean mask raises
    ``TypeError``; a row past the tensor (``name``) :class:`~bnncompress.errors.OutOfRangeError`.

    Example:
        >>> positions, shape = row_positions([[0, -1]], 5, "w")
        >>> positions.tolist(), shape
        ([0, 4], (1, 2))
    """
    if isinstance(indices, slice):
        try:
            positions = np.arange(*indices.indices(n_rows), dtype=np.int64)
        except TypeError:
            raise ArgumentTypeError(f"a slice of rows of '{name}' needs integer bounds, not {indices!r}") from None
        return positions, positions.shape
    if isinstance(indices, list) or hasattr(indices, "__array__"):
        try:
            index = np.asarray(indices)
        except (ValueError, TypeError, OverflowError):  # ragged lists, unconvertible objects
            raise ArgumentTypeError(f"row indices of '{name}' must be {_INDEX_KINDS}") from None
        if isinstance(indices, list) and index.size == 0:
            index = index.astype(np.int64)  # numpy reads [] as no rows
        if index.dtype == np.bool_:
            if index.ndim != 1:
                raise ArgumentTypeError(f"a boolean mask of the rows of '{name}' must be 1-D, not {index.ndim}-D")
            if len(index) != n_rows:
                raise OutOfRangeError(f"a boolean mask of {len(index)} entries for '{name}' with {n_rows} rows")
            positions = np.flatnonzero(index)
            return positions, positions.shape
        if index.dtype == object and all(type(v) is int for v in index.flat):  # Python ints (maybe beyond 64 bits)
            try:
                index = index.astype(np.int64)
            except OverflowError:
                raise OutOfRangeError(f"a row index is out of range for '{name}' with {n_rows} rows") from None
        if index.dtype.kind not in "iu":
            raise ArgumentTypeError(f"row indices of '{name}' must be {_INDEX_KINDS}, not {index.dtype} values")
    elif isinstance(indices, (bool, np.bool_)):
        raise ArgumentTypeError(f"row indices of '{name}' must be {_INDEX_KINDS}, not a bool")
    else:
        try:
            index = operator.index(indices)
        except TypeError:
            raise ArgumentTypeError(
                f"row indices of '{name}' must be {_INDEX_KINDS}, not {type(indices).__name__}"
            ) from None
        if not -n_rows <= index < n_rows:
            raise OutOfRangeError(f"row {index} is out of range for '{name}' with {n_rows} rows")
        index = np.asarray(index)
    if index.size and (index.min() < -n_rows or index.max() >= n_rows):
        bad = index.min() if index.min() < -n_rows else index.max()
        raise OutOfRangeError(f"row {bad} is out of range for '{name}' with {n_rows} rows")
    positions = index.astype(np.int64).reshape(-1)
    return np.where(positions < 0, positions + n_rows, positions), index.shape


def num_rows(shape: tuple[int, ...]) -> int:
    """Rows of a tensor: its first dimension (a 0-d tensor is one row)."""
    return shape[0] if shape else 1


def row_size(shape: tuple[int, ...]) -> int:
    """Symbols per row: the product of all dimensions after the first."""
    return int(np.prod(shape[1:], dtype=np.int64)) if len(shape) > 1 else 1


def block_rows_for(shape: tuple[int, ...]) -> int:
    """Rows per block for a tensor of ``shape``."""
    return max(1, BLOCK_SYMBOLS // max(row_size(shape), 1))


def num_blocks(shape: tuple[int, ...], block_rows: int) -> int:
    """Blocks of ``block_rows`` rows that hold a tensor of ``shape`` (the last may be shorter).

    Example:
        >>> num_blocks((2500, 50), block_rows_for((2500, 50)))
        2
    """
    return -(-num_rows(shape) // block_rows)

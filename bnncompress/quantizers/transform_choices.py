"""What the transform method (:mod:`.transform`) decides when it fits a tensor: whether rotating pays
(:func:`rotation_pays_off`), and whether its per-column grids can resolve the posterior at all
(:func:`grid_too_coarse`; if not, the tensor gets one entropy model)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..geometry import num_rows, row_size
from .base import Block

#: A column spanning more than this x the rows' mean RMS has far values (a Gaussian column: 10 sqrt(d) at most).
FAR_SPAN = 256


def rotation_pays_off(column_variance: np.ndarray, eigenvalues: np.ndarray, n: int, d: int, bits: int) -> bool:
    """Whether ``transform="auto"`` rotates n rows of d values: with at least 160 rows per column (the matrix,
    b = 8 bits an entry, 16 in version 3, 4 as reflectors (half the entries), costs at most b / 160 bits per
    weight) and a high-rate coding gain ``n/2 sum_j log2(var_j / eigenvalue_j)`` of at least half its b d²
    bits (at low rates the gain is larger).

    Example:
        >>> rotation_pays_off(np.array([1.0, 1.0]), np.array([1.9, 0.1]), 1000, 2, 8)
        True
    """
    if d < 2 or n < 160 * d:
        return False
    tiny = 1e-12 * max(float(column_variance.max()), 1e-300)
    gain = 0.5 * n * float(np.sum(np.log2(np.maximum(column_variance, tiny) / np.maximum(eigenvalues, tiny))))
    return gain >= 0.5 * bits * d * d


def grid_too_coarse(
    low: np.ndarray,
    high: np.ndarray,
    typical: float,
    cells: int,
    forward: np.ndarray,
    squares: Callable[[], list[np.ndarray]],
) -> bool:
    """Whether a rotated column spans far more than the rows (:data:`FAR_SPAN` x ``typical``, the rows' mean
    RMS: robust to a few far rows and to many constant ones), so that its grid's step, at least its range
    (``low`` to ``high``) / ``cells``, is coarser than the column's mean posterior sd at every rate (a mean
    of 1e4 among N(0, 1) with sd 0.05). ``squares()``: the :func:`scale_squares` of the rows (only computed
    for such a column); ``forward``: y = (x - mean) forward.

    Example:
        >>> far = lambda: [np.array([0.0025, 0.0025, 1.0])]  # two columns of sd 0.05, one row
        >>> grid_too_coarse(np.zeros(2), np.array([4.0, 1e4]), 1.0, 4094, np.eye(2), far)
        True
    """
    span = high - low
    far = span > FAR_SPAN * typical
    if not far.any():  # (the usual case: no pass over the rows)
        return False
    total = np.sum(squares(), axis=0)
    variance = (np.asarray(forward, np.float64) ** 2).T @ (total[:-1] / max(total[-1], 1.0))
    return bool(np.any(far & (span / cells > np.sqrt(variance))))


def scale_squares(block: Block, d: int) -> np.ndarray:
    """Per column the sum of the block's posterior variances, then (last) its number of rows of ``d``."""
    squares = np.square(block.scale.reshape(-1, d), dtype=np.float64).sum(axis=0)
    return np.append(squares, len(block.scale) // d)


def auto_classes(blocks: int) -> int:
    """Classes for ``blocks`` coding blocks (``classes="auto"``): the most, up to 8 and a power of two, with
    4 blocks each.

    Example:
        >>> auto_classes(31), auto_classes(32), auto_classes(1000)
        (4, 8, 8)
    """
    classes = 1
    while classes < 8 and blocks // (2 * classes) >= 4:
        classes *= 2
    return classes


def per_column_models(shape: tuple[int, ...], min_rows: int, rows_per_column: int) -> bool:
    """Whether a tensor has rows enough for a model per column: at least ``min_rows`` and ``rows_per_column``
    a column (1-D tensors and fewer rows get one model; their fit needs no statistics)."""
    d = row_size(shape)
    return d > 1 and num_rows(shape) >= max(min_rows, rows_per_column * d)

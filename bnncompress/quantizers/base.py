"""The quantizer interface shared by every method.

A quantizer turns one tensor's posterior into indices on a grid of reconstruction values.
Work that does not depend on the rate (fitting a prior, building the candidate grid) is
done once in :meth:`Quantizer.fit`; :meth:`FittedQuantizer.assign` then maps every weight
to a grid index for a given rate knob ``lam`` (larger ``lam`` = fewer bits), so rate
control can try many values of ``lam`` cheaply. Quantizers know nothing about files.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ..posterior import TensorPosterior


@dataclass(frozen=True)
class QuantizedTensor:
    """Symbols of one tensor and the grid they index.

    ``symbols`` is a flat int32 array (row-major) of indices into ``grid``; ``grid`` holds the
    distinct reconstruction values that occur, in increasing order, and ``counts[k]`` how
    often symbol ``k`` occurs (the entropy model's table). ``params`` describes how the
    grid was made (JSON-serialisable), for the archive.
    """

    symbols: np.ndarray
    grid: np.ndarray
    counts: np.ndarray
    params: dict[str, Any]
    #: 0 for scalar quantization; M for product quantization (M symbols per row, ``grid`` =
    #: M codebooks of ``len(counts)`` sub-vectors, see ``TensorRecord.dequantize``).
    subvectors: int = 0

    def values(self) -> np.ndarray:
        """The dequantized point estimate, flat float32."""
        if not self.subvectors:
            return self.grid[self.symbols]
        books = self.grid.reshape(self.subvectors, len(self.counts), -1)
        return books[np.arange(self.subvectors), self.symbols.reshape(-1, self.subvectors)].reshape(-1)


class FittedQuantizer(ABC):
    """A quantizer fitted to one tensor: a full candidate ``grid`` and a way to pick from it.

    ``loc`` and ``scale`` are the tensor's flat posterior parameters, ``shape`` its shape.
    """

    shape: tuple[int, ...]
    loc: np.ndarray
    scale: np.ndarray
    grid: np.ndarray
    params: dict[str, Any]

    @property
    def num_weights(self) -> int:
        return int(self.loc.shape[0])

    @property
    def num_symbols(self) -> int:
        """How many symbols :meth:`assign_all` returns (one per weight for scalar methods)."""
        return self.num_weights

    #: Grid values stored per symbol of the alphabet (product quantization: one per sub-vector
    #: codebook entry across all codebooks).
    values_per_symbol: int = 1

    @abstractmethod
    def assign(self, lam: float, sample: np.ndarray | None = None) -> np.ndarray:
        """Indices into :meth:`grid_at` ``(lam)`` (int32, flat) for every weight, or for the
        flat positions in ``sample`` only (their grid may then differ from the full one)."""

    def grid_at(self, lam: float) -> np.ndarray:
        """The reconstruction values that :meth:`assign_all` ``(lam)`` indexes. Methods whose
        grid depends on the rate (uniform steps, k-means centroids) override this."""
        return self.grid

    def assign_all(self, lam: float) -> np.ndarray:
        """:meth:`assign` for every weight, remembering the last result (rate control then
        quantizing at the lambda it found costs one pass, not two)."""
        cached = getattr(self, "_last_assignment", None)
        if cached is not None and cached[0] == lam:
            return cached[1]
        indices = self.assign(lam)
        self._last_assignment = (lam, indices)
        return indices

    def quantize(self, lam: float) -> QuantizedTensor:
        """Assign every weight and compact the grid to the values that are used."""
        indices = self.assign_all(lam)
        grid = self.grid_at(lam)
        self._last_assignment = None  # the symbols are renumbered in place below
        return compact(indices, grid, {**self.params, "lam": float(lam)}, in_place=True)


class Quantizer(ABC):
    """A quantization method. Subclasses set ``name`` and implement :meth:`fit`."""

    name: ClassVar[str]
    #: ``lam`` used when neither ``lam`` nor ``bits`` is given.
    default_lam: ClassVar[float] = 0.05
    #: True for methods without a rate knob (``lam`` is ignored; ``--bits`` cannot be met).
    fixed_rate: ClassVar[bool] = False

    @abstractmethod
    def fit(self, tensor: TensorPosterior) -> FittedQuantizer:
        """Do the rate-independent work for one tensor."""


def compact(indices: np.ndarray, grid: np.ndarray, params: dict[str, Any], in_place: bool = False) -> QuantizedTensor:
    """Keep only the grid values that ``indices`` use, and renumber the symbols to match
    (overwriting ``indices`` with the symbols if ``in_place``, to save memory)."""
    counts = np.bincount(indices, minlength=len(grid))
    used = np.flatnonzero(counts)
    remap = np.zeros(len(grid), dtype=np.int32)
    remap[used] = np.arange(len(used), dtype=np.int32)
    return QuantizedTensor(
        symbols=np.take(remap, indices, out=indices if in_place and indices.dtype == np.int32 else None),
        grid=np.ascontiguousarray(grid[used], dtype=np.float32),
        counts=counts[used].astype(np.min_scalar_type(max(int(counts.max(initial=0)), 1))),  # uint8 .. uint64
        params=params,
    )

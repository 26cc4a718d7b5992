"""The quantizer interface every method implements: passes over blocks of whole rows.

A tensor is cut into the archive's coding blocks (:func:`bnncompress.coding.block_rows_for`
rows each). Every method is a short sequence of passes over those blocks, so that the same
code runs on a tensor in memory, streamed from a file, or on a Dask cluster:

1. :meth:`Quantizer.statistics` of each block (exact or block-ordered sums, never anything
   that depends on how blocks are grouped into tasks), then :meth:`Quantizer.fit` on the
   driver, which may run more passes (``rows.map``) and returns a :class:`FittedQuantizer`;
2. :meth:`FittedQuantizer.at` a rate knob ``lam``: any passes the method needs at that rate
   (e.g. entropy-constrained refinements), returning a small picklable *state*;
3. :meth:`FittedQuantizer.assign` of each block at that state: grid indices, one per symbol,
   counted into the entropy model and coded.

``rows`` (:class:`Rows`) maps a module-level function over the blocks in block order; the
pipeline (:mod:`bnncompress.pipeline`) implements it over an executor, :func:`fit_in_memory`
serially here. Results that are reduced are combined in block order, so every route gives
the same bits. Quantizers know nothing about files.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import numpy as np

from ..coding import block_rows_for, dequantize, num_rows, row_size
from ..posterior import TensorPosterior


@dataclass(frozen=True)
class Block:
    """Flat float32 ``loc`` and ``scale`` of some weights of one tensor.

    A coding block holds whole rows starting at row ``first_row``; a rate-control sample holds
    scattered weights at flat ``positions``. ``extra`` carries per-weight values a fitted method
    attached to a sample (see :meth:`FittedQuantizer.prepare_sample`).
    """

    loc: np.ndarray
    scale: np.ndarray
    row_size: int
    first_row: int = 0
    positions: np.ndarray | None = None
    extra: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def is_rows(self) -> bool:
        """True for whole rows (a coding block), False for a sample of scattered weights."""
        return self.positions is None

    @property
    def num_rows(self) -> int:
        return len(self.loc) // max(self.row_size, 1)

    def row_index(self) -> np.ndarray:
        """The row of each weight."""
        if self.positions is not None:
            return self.positions // self.row_size
        return self.first_row + np.arange(len(self.loc)) // self.row_size


class Rows(Protocol):
    """The blocks of one tensor (or a sample of it), as passes see them."""

    shape: tuple[int, ...]

    def map(self, fn: Callable[..., Any], *args: Any) -> list[Any]:
        """``[fn(block, *args) for block in blocks]``, in block order (``fn`` module-level: it may run elsewhere)."""


@dataclass(frozen=True)
class QuantizedTensor:
    """Symbols of one tensor and the grid they index (see :func:`compact`).

    ``symbols`` is a flat int32 array (row-major) of indices into the used grid values;
    ``counts[k]`` says how often symbol ``k`` occurs (the entropy model's table); ``params``
    describe how the grid was made (JSON, for the archive). Product quantization has
    ``subvectors = M`` symbols per row and ``grid`` holds M codebooks of ``len(counts)`` sub-vectors.
    """

    symbols: np.ndarray
    grid: np.ndarray
    counts: np.ndarray
    params: dict[str, Any]
    subvectors: int = 0
    #: For per-column models and transforms: the decoded point estimate (``grid`` is then (models, K)).
    reconstructed: np.ndarray | None = None

    def values(self) -> np.ndarray:
        """The dequantized point estimate, flat float32."""
        if self.reconstructed is not None:
            return self.reconstructed
        return dequantize(self.grid, self.symbols, len(self.counts), self.subvectors)


class FittedQuantizer(ABC):
    """A method fitted to one tensor. Picklable: it is sent to workers with each pass."""

    shape: tuple[int, ...]
    #: Grid values stored per symbol of the alphabet (product quantization: a sub-vector in each codebook).
    values_per_symbol: int = 1

    @property
    def num_weights(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def subvectors(self, state: Any) -> int:
        """0 for scalar quantization (one symbol per weight); M for product quantization (M symbols per row)."""
        return 0

    def num_symbols(self, state: Any) -> int:
        return num_rows(self.shape) * (self.subvectors(state) or row_size(self.shape))

    def models(self, state: Any) -> int:
        """Entropy models: 1, or one per column (symbol i of a row uses model i)."""
        return 1

    def side_arrays(self) -> dict[str, np.ndarray]:
        """Arrays besides the grid that the decoder needs (a transform's means and rotation)."""
        return {}

    def reconstruct(self, block: Block, indices: np.ndarray, state: Any) -> np.ndarray:
        """The values the decoder will produce for ``indices`` of ``block`` (flat float32)."""
        grid = self.grid(state)
        alphabet = len(grid) // self.values_per_symbol // self.models(state)
        if self.models(state) > 1:
            cells = np.resize(np.arange(self.models(state)) * alphabet, len(indices)) + indices
            return grid[cells]
        return dequantize(grid, indices, alphabet, self.subvectors(state))

    def prepare_sample(self, sample: Block | None) -> Block | None:
        """Called once on the driver, right after fitting, with the rate-control sample (or None):
        a method may attach per-weight values it knows from fitting (``Block.extra``)."""
        return sample

    def at(self, lam: float, rows: Rows) -> Any:
        """The state :meth:`assign` needs at rate knob ``lam``, after any passes over ``rows``
        the method makes at that rate. Small and picklable. Default: ``lam`` itself."""
        return lam

    @abstractmethod
    def assign(self, block: Block, state: Any) -> np.ndarray:
        """int32 indices into :meth:`grid` ``(state)``: one per weight of ``block``, or per
        sub-vector of each row for product quantization."""

    @abstractmethod
    def grid(self, state: Any) -> np.ndarray:
        """The reconstruction values the indices refer to (float32; codebooks flattened for PQ)."""

    @abstractmethod
    def params(self, state: Any) -> dict[str, Any]:
        """How the grid was made, for the archive (JSON): the method's options and what was fitted."""


class Quantizer(ABC):
    """A quantization method with its options. Subclasses set ``name`` and implement
    :meth:`statistics` and :meth:`fit`; ``options`` (constructor keywords) rebuild it from an
    archive's parameters (:func:`bnncompress.quantizers.from_config`)."""

    name: ClassVar[str]
    #: ``lam`` used when neither ``lam`` nor ``bits`` is given.
    default_lam: ClassVar[float] = 0.05
    #: True for methods without a rate knob (``lam`` is ignored; ``--bits`` cannot be met).
    fixed_rate: ClassVar[bool] = False
    #: False for methods that need a whole tensor in memory (they do not stream or run on Dask).
    blockwise: ClassVar[bool] = True
    #: True for methods whose rate-control subsample must be whole rows (a rotation mixes a row's values).
    whole_row_samples: ClassVar[bool] = False

    def options(self) -> dict[str, Any]:
        """The constructor keywords that rebuild this quantizer (stored in archives)."""
        return {}

    @abstractmethod
    def statistics(self, block: Block) -> Any:
        """What the fit needs from one block (runs where the block is read)."""

    @abstractmethod
    def fit(self, shape: tuple[int, ...], stats: list[Any], rows: Rows) -> FittedQuantizer:
        """Fit to one tensor from the statistics of its blocks (in block order); may map more passes over ``rows``."""


def compact(
    indices: np.ndarray,
    grid: np.ndarray,
    params: dict[str, Any],
    subvectors: int = 0,
    values_per_symbol: int = 1,
    in_place: bool = False,
) -> QuantizedTensor:
    """Keep only the grid values (or codebook entries) that ``indices`` use, and renumber the
    symbols to match (overwriting ``indices`` with the symbols if ``in_place``, to save memory)."""
    alphabet = len(grid) // values_per_symbol
    counts = np.bincount(indices, minlength=alphabet)
    used = np.flatnonzero(counts)
    remap = np.zeros(alphabet, dtype=np.int32)
    remap[used] = np.arange(len(used), dtype=np.int32)
    return QuantizedTensor(
        symbols=np.take(remap, indices, out=indices if in_place and indices.dtype == np.int32 else None),
        grid=used_grid(grid, used, alphabet, subvectors),
        counts=narrow_counts(counts[used]),
        params=params,
        subvectors=subvectors,
    )


def used_grid(grid: np.ndarray, used: np.ndarray, alphabet: int, subvectors: int = 0) -> np.ndarray:
    """The grid values of the ``used`` symbols (for product quantization: those entries of every codebook)."""
    if not subvectors:
        return np.ascontiguousarray(grid[used], dtype=np.float32)
    return np.ascontiguousarray(grid.reshape(subvectors, alphabet, -1)[:, used, :], dtype=np.float32).reshape(-1)


def narrow_counts(counts: np.ndarray) -> np.ndarray:
    """Counts in the narrowest unsigned type that holds them (uint8 .. uint64)."""
    return counts.astype(np.min_scalar_type(max(int(counts.max(initial=0)), 1)))


class TensorRows:
    """The coding blocks of a tensor in memory, mapped serially in this process."""

    def __init__(self, tensor: TensorPosterior):
        self.shape = tensor.shape
        self.loc, self.scale = tensor.loc.reshape(-1), tensor.scale.reshape(-1)
        self._row_size = row_size(self.shape)
        self._block_rows = block_rows_for(self.shape)

    def blocks(self) -> list[Block]:
        rs, br = self._row_size, self._block_rows
        return [
            Block(self.loc[a * rs : (a + br) * rs], self.scale[a * rs : (a + br) * rs], rs, a)
            for a in range(0, num_rows(self.shape), br)
        ]

    def map(self, fn: Callable[..., Any], *args: Any) -> list[Any]:
        return [fn(block, *args) for block in self.blocks()]

    def block_offsets(self) -> dict[int, int]:
        """First row of each block -> its first flat position."""
        return {b.first_row: b.first_row * self._row_size for b in self.blocks()}


class SampleRows:
    """A rate-control sample as :class:`Rows`: one block of scattered weights."""

    def __init__(self, shape: tuple[int, ...], block: Block):
        self.shape, self.block = shape, block

    def map(self, fn: Callable[..., Any], *args: Any) -> list[Any]:
        return [fn(self.block, *args)]


class InMemoryFit:
    """A quantizer fitted to a tensor in memory, for direct use (tests, notebooks):
    ``fit_in_memory(VBQ(), tensor).quantize(lam).values()``."""

    def __init__(self, fitted: FittedQuantizer, rows: TensorRows, name: str):
        self.fitted, self.rows, self.name = fitted, rows, name
        self._states: dict[float, Any] = {}

    @property
    def shape(self) -> tuple[int, ...]:
        return self.rows.shape

    @property
    def num_weights(self) -> int:
        return self.fitted.num_weights

    @property
    def values_per_symbol(self) -> int:
        return self.fitted.values_per_symbol

    @property
    def loc(self) -> np.ndarray:
        """The tensor's means, flat."""
        return self.rows.loc

    @property
    def scale(self) -> np.ndarray:
        """The tensor's scales, flat."""
        return self.rows.scale

    def num_symbols(self, lam: float) -> int:
        return self.fitted.num_symbols(self.state(lam))

    @property
    def side_bits(self) -> int:
        return 8 * sum(a.nbytes for a in self.fitted.side_arrays().values())

    def histogram(self, lam: float, on_sample: bool = False) -> tuple[np.ndarray, int]:
        """Counts of every grid index at ``lam`` and how many symbols were counted (rate control's view)."""
        indices, state = self.assign(lam), self.state(lam)
        models = self.fitted.models(state)
        alphabet = len(self.grid_at(lam)) // self.values_per_symbol // models
        if models == 1:
            return np.bincount(indices, minlength=alphabet), len(indices)
        cells = np.resize(np.arange(models) * alphabet, len(indices)) + indices
        return np.bincount(cells, minlength=models * alphabet).reshape(models, alphabet), len(indices)

    def state(self, lam: float) -> Any:
        if lam not in self._states:
            self._states[lam] = self.fitted.at(lam, self.rows)
        return self._states[lam]

    def assign(self, lam: float) -> np.ndarray:
        """Grid indices of every weight (or sub-vector) at ``lam``, flat."""
        state = self.state(lam)
        parts = self.rows.map(_assign, self.fitted, state)
        return np.concatenate(parts) if parts else np.zeros(0, np.int32)

    def grid_at(self, lam: float) -> np.ndarray:
        return self.fitted.grid(self.state(lam))

    def quantize(self, lam: float) -> QuantizedTensor:
        """Assign every weight and keep only the grid values used."""
        state = self.state(lam)
        params = {**self.fitted.params(state), "lam": float(lam)}
        f = self.fitted
        if f.models(state) > 1:
            indices = self.assign(lam)
            values = np.concatenate(self.rows.map(_reconstruct, f, state, indices, self.rows.block_offsets()))
            counts, _ = self.histogram(lam)
            return QuantizedTensor(indices, f.grid(state).reshape(len(counts), -1), counts, params, 0, values)
        return compact(self.assign(lam), f.grid(state), params, f.subvectors(state), f.values_per_symbol, in_place=True)


def _assign(block: Block, fitted: FittedQuantizer, state: Any) -> np.ndarray:
    return fitted.assign(block, state)


def _reconstruct(block: Block, fitted: FittedQuantizer, state: Any, indices: np.ndarray, starts: dict) -> np.ndarray:
    start = starts[block.first_row]
    return fitted.reconstruct(block, indices[start : start + len(block.loc)], state)


def fit_in_memory(quantizer: Quantizer, tensor: TensorPosterior) -> InMemoryFit:
    """Fit ``quantizer`` to a tensor in memory (the statistics pass runs here, serially).

    Example:
        >>> from bnncompress.quantizers import Uniform
        >>> t = TensorPosterior(np.array([0.1, 0.9, 2.2], np.float32), np.ones(3, np.float32))
        >>> [round(float(v), 3) for v in fit_in_memory(Uniform(), t).quantize(0.5).values()]
        [0.0, 0.687, 2.06]
    """
    rows = TensorRows(tensor)
    fitted = quantizer.fit(tensor.shape, rows.map(quantizer.statistics), rows)
    fitted.prepare_sample(None)
    return InMemoryFit(fitted, rows, quantizer.name)

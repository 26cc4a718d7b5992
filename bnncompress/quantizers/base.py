"""The quantizer interface every method implements: passes over blocks of whole rows.

A tensor is cut into the archive's coding blocks (:func:`bnncompress.geometry.block_rows_for`
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
pipeline (:mod:`bnncompress.pipeline`) implements it over an executor (serially in this process
for :func:`bnncompress.inmemory.fit_in_memory`). Results that are reduced are combined in block
order, so every route gives the same bits. Quantizers know nothing about files.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Protocol

import numpy as np

from ..geometry import num_rows, row_size
from ..records import dequantize
from .passdata import PassData


@dataclass(frozen=True)
class Block:
    """Flat float32 ``loc`` and ``scale`` of some weights of one tensor.

    A coding block holds whole rows starting at row ``first_row``; a rate-control sample holds
    scattered weights at flat ``positions``. ``extra`` carries per-weight values a fitted method
    attached to a sample (see :meth:`FittedQuantizer.prepare_sample`). ``key``: set by the pipeline
    on the blocks of the tensor a fit was made for (the same key on every pass is the same weights), so
    that the fit may keep per-block values for later passes under it; None (a block of the caller's):
    nothing is kept, as another block of the same rows may hold other values.
    """

    loc: np.ndarray
    scale: np.ndarray
    row_size: int
    first_row: int = 0
    positions: np.ndarray | None = None
    extra: dict[str, np.ndarray] = field(default_factory=dict)
    key: tuple | None = field(default=None, compare=False)

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
    """The blocks of one tensor (or a sample of it), as passes see them; ``representative``: the rows that
    refinement passes run on (these, or whole blocks evenly spread over a tensor of many rows). The pipeline's
    rows also have ``pass_bytes``: what a fit may keep of per-block values for later passes while it passes over
    them (:meth:`FittedQuantizer.keep_pass_data`; its share of the pack's), or None, and ``imap``: ``map``'s results
    one at a time as they are made (:func:`~bnncompress.quantizers.cells.each`); a method's own rows need neither."""

    shape: tuple[int, ...]
    representative: Rows

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
    #: False when a record of this fit describes another method's options than the one asked for
    #: (see :class:`Fallback`): the pipeline then stores :meth:`params` alone.
    stores_method_options: bool = True
    #: Per-block values the fit keeps between passes (None: it keeps none).
    kept: PassData | None = None
    #: A one-model record of it is stored as one-byte levels and float16 values (format version 7).
    levelled: bool = False

    @property
    def num_weights(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def subvectors(self, state: Any) -> int:
        """0 for scalar quantization (one symbol per weight); M for product quantization (M symbols per row)."""
        return 0

    def num_symbols(self, state: Any) -> int:
        return num_rows(self.shape) * (self.subvectors(state) or row_size(self.shape))

    def models(self, state: Any) -> int:
        """Entropy models: 1, or one per column (symbol i of a row uses i; needs a 'mean' side array)."""
        return 1

    def side_arrays(self) -> dict[str, np.ndarray]:
        """Arrays besides the grid the decoder needs (a transform's means, rotation), exact in their stored type."""
        return {}

    @property
    def classes(self) -> int:
        """Sets of entropy models (0: one set, the per-column or one-model record; C >= 1: a classed
        record, each coding block coded with the models of its class, :meth:`row_classes`)."""
        return 0

    def row_classes(self, block: Block) -> np.ndarray | None:
        """The class of each row of ``block`` (None for unclassed fits)."""
        return None

    def block_classes(self, num_blocks: int) -> np.ndarray | None:
        """The class of each coding block (None for unclassed fits)."""
        return None

    def reconstruct(self, block: Block, indices: np.ndarray, state: Any) -> np.ndarray:
        """The values the decoder will produce for ``indices`` of ``block`` (flat float32)."""
        grid = self.grid(state)
        alphabet = len(grid) // self.values_per_symbol // self.models(state)
        if self.models(state) > 1:
            cells = np.resize(np.arange(self.models(state)) * alphabet, len(indices)) + indices
            return grid[cells]
        return dequantize(grid, indices, alphabet, self.subvectors(state))

    def prepare_sample(self, sample: Block | None) -> Block | None:
        """On the driver after fitting, with the rate-control sample (or None): per-weight values may be attached."""
        return sample

    def keep_pass_data(self, limit: int) -> None:
        """Keep up to ``limit`` bytes of per-block values every pass would recompute (:attr:`kept`: a
        transform's rotated coordinates; the pack's tensors share one budget); 0 drops them."""
        if self.kept is not None:  # (what a fit's own passes kept stays, as far as it fits)
            self.kept = self.kept.within(int(limit))

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
        """What was fitted, for the archive (JSON); the pipeline stores the method's options beside it."""


class Fallback(FittedQuantizer):
    """A method's fit to a tensor it does not suit, made by another method (``fitted``): every pass
    is that method's, and a record of it says so (``"fallback": label``) and stores ``options``,
    those of the other method's options that the record needs besides the asked method's
    (or, if ``stores_method_options`` is False, instead of them)."""

    def __init__(self, fitted: FittedQuantizer, label: str, options: dict[str, Any], stores_method_options: bool):
        self.fitted, self.label, self.fallback_options = fitted, label, options
        self.shape, self.stores_method_options, self.levelled = fitted.shape, stores_method_options, fitted.levelled

    @property
    def values_per_symbol(self) -> int:  # type: ignore[override]
        return self.fitted.values_per_symbol

    @property
    def kept(self) -> PassData | None:  # type: ignore[override]
        return self.fitted.kept

    def subvectors(self, state: Any) -> int:
        return self.fitted.subvectors(state)

    def num_symbols(self, state: Any) -> int:
        return self.fitted.num_symbols(state)

    def models(self, state: Any) -> int:
        return self.fitted.models(state)

    def side_arrays(self) -> dict[str, np.ndarray]:
        return self.fitted.side_arrays()

    @property
    def classes(self) -> int:
        return self.fitted.classes

    def row_classes(self, block: Block) -> np.ndarray | None:
        return self.fitted.row_classes(block)

    def block_classes(self, num_blocks: int) -> np.ndarray | None:
        return self.fitted.block_classes(num_blocks)

    def reconstruct(self, block: Block, indices: np.ndarray, state: Any) -> np.ndarray:
        return self.fitted.reconstruct(block, indices, state)

    def prepare_sample(self, sample: Block | None) -> Block | None:
        return self.fitted.prepare_sample(sample)

    def keep_pass_data(self, limit: int) -> None:
        self.fitted.keep_pass_data(limit)

    def at(self, lam: float, rows: Rows) -> Any:
        return self.fitted.at(lam, rows)

    def assign(self, block: Block, state: Any) -> np.ndarray:
        return self.fitted.assign(block, state)

    def grid(self, state: Any) -> np.ndarray:
        return self.fitted.grid(state)

    def params(self, state: Any) -> dict[str, Any]:
        return {**self.fallback_options, **self.fitted.params(state), "fallback": self.label}


#: Field metadata of an option added after archives were written without it: a record stores it
#: only when it is not at its default, so that those archives' bytes stay the same.
STORED_IF_NOT_DEFAULT = {"stored": "if not default"}
#: Field metadata of an option that says where a method runs, not what it computes (not in a config).
NOT_IN_CONFIG = {"stored": "never"}


@dataclass(frozen=True, eq=False, repr=False)
class Quantizer(ABC):
    """A quantization method with its options. Subclasses set ``name`` and implement :meth:`statistics` and
    :meth:`fit`; their options are dataclass fields (keyword arguments, checked in ``__post_init__``), declared
    once: :meth:`options`, ``==`` and ``repr`` follow, and :func:`~bnncompress.quantizers.from_config` rebuilds it.

    Example:
        >>> from bnncompress.quantizers import KMeans
        >>> KMeans(prune=0.25), KMeans(prune=0.25) == KMeans(), KMeans().options()
        (KMeans(prune=0.25), False, {'prune': 0.0})
    """

    name: ClassVar[str]
    #: ``lam`` used when neither ``lam`` nor ``bits`` is given.
    default_lam: ClassVar[float] = 0.05
    #: True for methods without a rate knob (``lam`` is ignored; ``--bits`` cannot be met).
    fixed_rate: ClassVar[bool] = False
    #: False for methods that need a whole tensor in memory (they do not stream or run on Dask).
    blockwise: ClassVar[bool] = True
    #: True for methods whose rate-control subsample must be whole rows (a rotation mixes a row's values).
    whole_row_samples: ClassVar[bool] = False
    requires: ClassVar[dict[str, str]] = {}  #: modules it imports to run, and the package that installs each

    @classmethod
    def option_names(cls) -> list[str]:
        """Every keyword the constructor takes (``device`` included where the method has one)."""
        return [f.name for f in fields(cls)]

    def options(self) -> dict[str, Any]:
        """The options that rebuild this quantizer: its config without the method's name."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.metadata.get("stored") != "never"}

    def stored_options(self) -> dict[str, Any]:
        """The options a record of this method stores (see :data:`STORED_IF_NOT_DEFAULT`)."""
        later = {f.name: f.default for f in fields(self) if f.metadata.get("stored") == "if not default"}
        return {k: v for k, v in self.options().items() if k not in later or v != later[k]}

    def _normalize(self, **values: Any) -> None:
        """Set checked options to their canonical types (from ``__post_init__``: the fields are frozen)."""
        for key, value in values.items():
            object.__setattr__(self, key, value)

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.options() == other.options()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self), tuple(self.options().items())))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.options().items())})"

    @abstractmethod
    def statistics(self, block: Block) -> Any:
        """What the fit needs from one block (runs where the block is read)."""

    @abstractmethod
    def fit(self, shape: tuple[int, ...], stats: list[Any], rows: Rows) -> FittedQuantizer:
        """Fit to one tensor from the statistics of its blocks (in block order); may map more passes over ``rows``."""

    def needs_statistics(self, shape: tuple[int, ...]) -> bool:
        """False when :meth:`fit` of a tensor of ``shape`` uses no :meth:`statistics` (it is then given none)."""
        return True

    #: True for methods whose :meth:`fit` needs only the sum of the blocks' statistics (:meth:`fold_statistics`):
    #: the pipeline adds each block's to a total as it comes and ``fit`` gets ``[total]``.
    folds_statistics: ClassVar[bool] = False

    def fold_statistics(self, total: Any, block: Any) -> Any:
        """``total`` (the first block's statistics, then what this returned) with one more block's added, in
        block order; it may update ``total`` in place (the pipeline owns it)."""
        raise NotImplementedError(f"{type(self).__name__} sets folds_statistics but has no fold_statistics")

    def passes_agree(self, setting: str) -> bool:
        """Whether ``setting`` (:attr:`folds_statistics`, :meth:`needs_statistics`) holds for this method's passes:
        the class that set it also made its :meth:`statistics` and :meth:`fit` (a subclass that changes either gets
        every block's statistics, as a method that never set it)."""
        mro = type(self).__mro__

        def made_by(name: str) -> int:  # (the place in the MRO of the class that defines it: 0 is this class)
            return next(i for i, c in enumerate(mro) if name in vars(c))

        return all(made_by(name) >= made_by(setting) for name in ("statistics", "fit"))  # (a mixin may set it)

    def statistics_bytes(self, row_size: int) -> int:
        """About how many bytes :meth:`statistics` returns for a block of rows of ``row_size`` values (0: small), so
        that the statistics pass holds a bounded number of them (a Gram matrix is ``8 row_size²``)."""
        return 0


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


class SampleRows:
    """A rate-control sample as :class:`Rows`: one block of scattered weights."""

    def __init__(self, shape: tuple[int, ...], block: Block):
        self.shape, self.block, self.pass_bytes = shape, block, None

    @property
    def representative(self) -> SampleRows:  # (a property: an attribute of itself would be a reference cycle)
        return self

    def map(self, fn: Callable[..., Any], *args: Any) -> list[Any]:
        return [fn(self.block, *args)]

"""Transform coding with VBQ inside: decorrelate each tensor, then quantize by uncertainty with one
entropy model per dimension (``vbq-transform``; docs/METHODS.md has the measurements).

For a tensor of rows x (n rows of d values; a matrix, or any tensor by its first dimension):

1. **Transform**: remove the column means m and rotate by the eigenvectors of the means' covariance
   (PCA). The decoder computes ``x_hat = y_hat Rᵀ + m`` with R as stored (int8 entries and a float32
   scale per column; float16 in the version 3 record), and the encoder quantizes ``y = (x - m) F``
   with ``F = (Rᵀ)⁻¹``, so what it chooses is what decodes. Where the rotation does not pay, only the
   means are removed. Tensors too small for per-column tables (1-D, or fewer than max(1024, 32 d) rows),
   with means beyond ±1e30, or with a column whose far values (a mean of 1e4 among N(0, 1)) make its grid of
   at most 4,096 cells coarser than its posterior sd, are quantized as ``vbq-direction`` with one entropy model
   (``"fallback": "one model"``), their own ``small_trust`` and ``small_row_weight``, and (``small_levels``)
   stored as one-byte levels and float16 values (format version 7).
2. **Posterior in the rotated basis**: ``v_j = sum_i F_ij² scale_i²`` (exact for a mean-field posterior).
3. **Distortion weight**: ``w = 1 / (2 v^trust s^(2(1-trust)) (r / s)^(2 row_weight))``, s the RMS
   of the centered means and r the row's RMS.
4. **Entropy-constrained quantization per column**: a uniform grid of step ``step * sqrt(2 lam) * s``
   seeds every column's values; ``iterations`` passes set each value's rate term to its column's code
   length and (``centroids``) the value to the weighted mean of its coordinates, and re-assign every
   coordinate to the value minimising ``w (value - y)² + lam * (-log2 P_j(value))``.
5. **Classes of blocks** (``classes``): runs of consecutive coding blocks get their own column
   models (rows in frequency order: rare words' coarse rows), stored as one-byte levels (format
   version 4), and (``class_values``) their own values of the symbols they use: the weighted mean of
   their coordinates coded to it, as int8 corrections of the column values (format version 5).

Passes: sums, Gram matrix, means' range; rows' RMS, rotated ranges; ``1 + iterations`` per rate; the class values'.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from ..blasthreads import eigh, inv
from ..errors import OptionError
from ..geometry import block_rows_for, num_blocks, num_rows, row_size
from ..records import MAX_REFLECTED, decoded_rotation, inverse_transform, position_classes, stored_rotation
from .base import STORED_IF_NOT_DEFAULT, Block, Fallback, FittedQuantizer, PassData, Quantizer, Rows
from .cells import add_cells, compact_cells, each, reduce_cells
from .checks import is_integer, is_number
from .column_grids import ClassValues, ColumnValues, SeedGrid, refine
from .entropy_constrained import VBQDirection
from .registry import register_quantizer
from .rotated_rows import block_key, keep_basis, keep_rows, kept_rows, rotated_means
from .transform_choices import auto_classes, grid_too_coarse, per_column_models, rotation_pays_off, scale_squares

_ROW_FLOOR = 0.05  # rows shorter than this fraction of the typical row are weighted as this long
_MAX_CELLS = 4096  # cells per column at most (the grid's step grows for very small lambda)
_MAX_ROTATED = MAX_REFLECTED  # wider rows are not rotated (the matrix and the product grow as d²)
_MIN_ROWS, _MIN_ROWS_PER_COLUMN = 1024, 32  # fewer rows: one entropy model (per-column tables cost too much)
_MAX_MAGNITUDE = 1e30  # larger means: one model (sqrt(d) x 2 x this must stay far inside float32's range)
CACHE_BYTES = 1 << 28  # rotated rows (8 bytes a weight), then with their weights (16) kept per tensor, unless raised


@register_quantizer
@dataclass(frozen=True, eq=False, repr=False, kw_only=True)
class TransformVBQ(Quantizer):
    """PCA rotation + per-column entropy models + uncertainty-weighted entropy-constrained quantization.

    Example:
        >>> from bnncompress.posterior import TensorPosterior
        >>> from bnncompress.inmemory import fit_in_memory
        >>> rng = np.random.default_rng(0)
        >>> loc = (rng.normal(size=(2000, 8)) @ rng.normal(size=(8, 8))).astype(np.float32)
        >>> f = fit_in_memory(TransformVBQ(), TensorPosterior(loc, np.full((2000, 8), 0.1, np.float32)))
        >>> f.fitted.rotated, float(np.abs(f.quantize(0.01).values() - loc.reshape(-1)).mean()) < 0.2
        (True, True)
    """

    name: ClassVar[str] = "vbq-transform"
    default_lam: ClassVar[float] = 0.1
    whole_row_samples: ClassVar[bool] = True  # the rotation mixes a row's values

    transform: str = "auto"
    trust: float = 1.0
    row_weight: float = 0.75
    iterations: int = 3
    centroids: bool = True
    step: float = 0.5
    #: ``trust``/``row_weight`` of tensors too small for per-column models: a small net's layers are no embeddings.
    small_trust: float = field(default=0.75, metadata=STORED_IF_NOT_DEFAULT)
    small_row_weight: float = field(default=0.0, metadata=STORED_IF_NOT_DEFAULT)
    small_levels: bool = field(default=True, metadata=STORED_IF_NOT_DEFAULT)  # False: their records in version 1
    #: Sets of column models, each for a run of consecutive coding blocks (rows in frequency order: rare
    #: words' coarse rows get their own statistics); "auto": up to 8, at least 4 blocks each; at most this
    #: many: neighbouring sets are merged where fewer code smaller (rows in an order that tells nothing:
    #: one set); 0: one set stored as the per-column record of format version 3 (older bnncompress reads it).
    classes: int | str = field(default="auto", metadata=STORED_IF_NOT_DEFAULT)
    #: True: the assignment's code lengths are the row's class's (what the coder spends); False: the column's
    #: over all classes (the default: the classes' own move bits to frequent words' rows, docs/METHODS.md).
    class_costs: bool = field(default=False, metadata=STORED_IF_NOT_DEFAULT)
    #: True: each class's own value of every symbol it uses, the weighted mean of its rows' coordinates
    #: coded to it (format version 5: int8 corrections of the column values); False: version 4.
    class_values: bool = field(default=True, metadata=STORED_IF_NOT_DEFAULT)
    #: True: the rotation stored as D (D - 1) / 2 int8 reflector entries (version 6; 2 ms more to a first lookup).
    reflectors: bool = field(default=False, metadata=STORED_IF_NOT_DEFAULT)

    def __post_init__(self) -> None:
        transform, trust, iterations, step = self.transform, self.trust, self.iterations, self.step
        if transform not in ("auto", "pca", "none"):
            raise OptionError(f"transform must be auto, pca or none, got {transform!r}")
        if not (is_number(trust) and 0.0 <= trust <= 1.0):
            raise OptionError(f"trust must be between 0 and 1, got {trust!r}")
        for key, top in (("row_weight", 2.0), ("small_trust", 1.0), ("small_row_weight", 2.0)):
            value = getattr(self, key)
            if not (is_number(value) and 0.0 <= value <= top):
                raise OptionError(f"{key} must be between 0 and {top:g}, got {value!r}")
        if not (is_integer(iterations) and 0 <= iterations <= 20):
            raise OptionError(f"iterations must be an integer from 0 to 20, got {iterations!r}")
        if not (is_number(step) and 0.01 <= step <= 10):
            raise OptionError(f"step must be between 0.01 and 10, got {step!r}")
        for key in ("centroids", "class_costs", "class_values", "reflectors", "small_levels"):
            if not isinstance(getattr(self, key), (bool, np.bool_)):
                raise OptionError(f"{key} must be true or false, got {getattr(self, key)!r}")
            self._normalize(**{key: bool(getattr(self, key))})
        self._normalize(trust=float(trust), row_weight=float(self.row_weight), iterations=int(iterations))
        self._normalize(step=float(step), small_trust=float(self.small_trust))
        self._normalize(small_row_weight=float(self.small_row_weight))
        classes = self.classes
        if classes != "auto" and not (is_integer(classes) and 0 <= classes <= 255):
            raise OptionError(f"classes must be auto or an integer from 0 to 255, got {classes!r}")
        self._normalize(classes=classes if classes == "auto" else int(classes))
        unused = [key for key in ("reflectors", "class_costs") if getattr(self, key) and self.classes == 0]
        if unused:  # (the version 3 record was written, and its params claimed them)
            raise OptionError(f"{' and '.join(unused)} need classes of rows; drop them or give classes above 0")

    def statistics(self, block: Block) -> tuple:
        from ._transform_cpu import gram  # numba: imported on first use

        d = block.row_size
        sums = np.zeros(d, np.float64)
        products = np.zeros((d, d), np.float64) if d <= _MAX_ROTATED else np.zeros((0, 0), np.float64)
        if d <= _MAX_ROTATED:
            gram(block.loc, d, sums, products)
        else:
            sums += block.loc.reshape(-1, d).sum(axis=0, dtype=np.float64)
        low, high = (float(block.loc.min()), float(block.loc.max())) if len(block.loc) else (np.inf, -np.inf)
        return sums, products, low, high  # a tensor that falls back to one model reads its statistics again

    folds_statistics = True

    def fold_statistics(self, total: tuple, block: tuple) -> tuple:
        for acc, part in zip(total[:2], block[:2]):
            acc += part  # (in place: the pipeline owns the total)
        return total[0], total[1], min(total[2], block[2]), max(total[3], block[3])

    def statistics_bytes(self, row_size: int) -> int:
        return 8 * row_size * (row_size + 1) if row_size <= _MAX_ROTATED else 8 * row_size

    def needs_statistics(self, shape: tuple[int, ...]) -> bool:  # (too few rows for per-column models: one model)
        return per_column_models(shape, _MIN_ROWS, _MIN_ROWS_PER_COLUMN)

    @property
    def _single(self) -> VBQDirection:
        """What a tensor too small for per-column models gets: one entropy model, its own settings."""
        options = {"trust": self.small_trust, "row_weight": self.small_row_weight, "levelled": self.small_levels}
        return VBQDirection(**options, iterations=self.iterations, centroids=self.centroids, device="cpu")

    def fit(self, shape: tuple[int, ...], stats: list[Any], rows: Rows) -> FittedQuantizer:
        d, n = row_size(shape), num_rows(shape)
        magnitude = max((max(-s[2], s[3]) for s in stats), default=0.0)  # the largest |mean| (none: one model)
        if not per_column_models(shape, _MIN_ROWS, _MIN_ROWS_PER_COLUMN) or not magnitude <= _MAX_MAGNITUDE:
            return self._one_model(shape, rows)
        total = (np.array(stats[0][0]), np.array(stats[0][1]), *stats[0][2:])
        for block in stats[1:]:  # in block order: the same bits on every route (as the pipeline folds them)
            total = self.fold_statistics(total, block)
        sums, products = total[:2]
        mean = (sums / n).astype(np.float32)
        stored: dict[str, np.ndarray] = {}  # the rotation as the record stores it (none: not rotated)
        spread = 0.0
        if d <= _MAX_ROTATED:
            spread = float(np.sqrt(max(np.trace(products) / n - float(np.dot(sums, sums)) / n**2, 0.0) / d))
            m64 = sums / n
            cov = np.triu(products) / n
            cov = cov + np.triu(cov, 1).T - np.outer(m64, m64)
            values, vectors = eigh(cov)  # (on one BLAS thread: bnncompress/blasthreads.py says why)
            order = np.argsort(values)[::-1]
            form = "float16" if self.classes == 0 else "reflectors" if self.reflectors else "int8"
            bits = {"float16": 16, "int8": 8}.get(form, 4)  # an entry (reflectors: half the entries, 8 each)
            pays = self.transform == "auto" and rotation_pays_off(np.diag(cov), values[order], n, d, bits)
            if self.transform == "pca" or pays:
                stored = stored_rotation(vectors[:, order], form)
        fitted = FittedTransform(shape, mean, stored, self)
        fitted.fit_rows(rows, spread)
        return self._one_model(shape, rows) if fitted.too_coarse(rows) else fitted

    def _one_model(self, shape: tuple[int, ...], rows: Rows) -> Fallback:
        single = self._single  # its record stores this method's options, the prior, its max_level
        fitted = single.fit(shape, rows.map(_statistics_of, single), rows)  # and the settings it used
        used = {"max_level": single.max_level, "small_trust": single.trust, "small_row_weight": single.row_weight}
        return Fallback(fitted, "one model", used, stores_method_options=True)


class FittedTransform(FittedQuantizer):
    """The transform and per-column models fitted to a tensor; its state at a rate is a
    :class:`SeedGrid`, then after each refinement a :class:`ColumnValues`."""

    def __init__(self, shape: tuple[int, ...], mean: np.ndarray, stored: dict[str, np.ndarray], method: TransformVBQ):
        self.shape = shape
        self.d = row_size(shape)
        self.mean = mean
        self.stored_rotation = stored  # what the archive stores: float16 (version 3) or int8 and scales
        self.rotated = bool(stored)
        # R, the matrix the decoder computes x = y R^T + mean with, and F = (R^T)^-1, the one the encoder
        # rotates with, so that y = (x - mean) F decodes to x: the stored R is not exactly orthonormal
        self.rotation = decoded_rotation(stored, self.d) if stored else np.eye(self.d)
        self.forward = self.rotation if "rotation" in stored or not stored else inv(self.rotation.T)
        self.trust, self.row_weight = method.trust, method.row_weight
        self.iterations, self.centroids, self.step = method.iterations, method.centroids, method.step
        self.block_rows = block_rows_for(shape)
        self.num_blocks = num_blocks(shape, self.block_rows)
        asked = auto_classes(self.num_blocks) if method.classes == "auto" else method.classes
        self._classes = min(self.num_blocks, asked)
        self.cost_sets = self._classes if method.class_costs and self._classes > 1 else 1
        self.class_values = method.class_values and self._classes > 0  # a class-valued record (version 5)
        self.kept = PassData(CACHE_BYTES)  # each block's rotated rows, then (y, w): every pass at every rate needs them

    def fit_rows(self, rows: Rows, spread: float) -> None:
        """The second pass: the RMS of the centered means (if the Gram matrix was too wide), the median
        row RMS (the floor of row lengths) and the rotated columns' ranges (the seeding grid's extent);
        with refinements, on the rows they run on (:attr:`Rows.representative`): their cells are refined. The
        rotated rows are kept for the first pass at a rate (:mod:`.rotated_rows`), within ``rows.pass_bytes``."""
        self.sd, self.row_floor = max(spread, 1e-30), 0.0
        share = getattr(rows, "pass_bytes", None)  # (a plug-in's own rows may not say)
        if share is not None:
            self.keep_pass_data(min(self.kept.limit, share))
        keep_basis(self.kept, self.mean, self.forward)
        parts = (rows.representative if self.iterations else rows).map(_row_pass, self)
        rms = np.concatenate([p[0] for p in parts])
        if not spread > 0:
            self.sd = max(float(np.sqrt(np.mean(rms**2))), 1e-30)
        self.typical = max(float(np.mean(rms)), 1e-30)  # a row's mean RMS (the median is 0 if most rows are)
        self.row_floor = _ROW_FLOOR * max(float(np.median(rms)), 1e-30)
        self.low = np.min([p[1] for p in parts], axis=0)
        self.high = np.max([p[2] for p in parts], axis=0)

    def too_coarse(self, rows: Rows) -> bool:
        """Whether far values make a column's grid coarser than its posterior (:func:`grid_too_coarse`)."""
        rows = rows.representative if self.iterations else rows
        squares = lambda: rows.map(scale_squares, self.d)  # noqa: E731
        return grid_too_coarse(self.low, self.high, self.typical, _MAX_CELLS - 2, self.forward, squares)

    def models(self, state: Any) -> int:
        return self.d

    @property
    def classes(self) -> int:
        return self._classes

    def row_classes(self, block: Block) -> np.ndarray | None:
        """Each row's class: that of its coding block (:func:`~bnncompress.records.position_classes`)."""
        return self.classes_of_rows(block) if self._classes else None

    def classes_of_rows(self, block: Block) -> np.ndarray:
        rows = block.row_index()[:: self.d] if not block.is_rows else block.first_row + np.arange(block.num_rows)
        return position_classes(self.num_blocks, max(self._classes, 1), rows // self.block_rows).astype(np.int64)

    def cost_classes(self, block: Block) -> np.ndarray:
        """Each row's set of code lengths in the assignment (:attr:`cost_sets`; all 0 for one set)."""
        if self.cost_sets == 1:
            return np.zeros(len(block.loc) // self.d, np.int64)
        return self.classes_of_rows(block)

    def block_classes(self, num_blocks: int) -> np.ndarray | None:
        return position_classes(num_blocks, self._classes) if self._classes else None

    def side_arrays(self) -> dict[str, np.ndarray]:
        """What the decoder needs besides the grid: the means and the stored rotation."""
        return {"mean": self.mean, **self.stored_rotation}

    def coordinates(self, block: Block) -> tuple[np.ndarray, np.ndarray]:
        """The block's rotated coordinates y and distortion weights w (float64), once per block per process."""
        key = block_key(block)
        found = self.kept.get(key)
        if found is not None:
            return found
        from ._transform_cpu import rotated_weights  # numba: imported on first use

        rotated = kept_rows(self.kept, block, self.mean, self.forward) or rotated_means(block, self.mean, self.forward)
        y, rms = rotated[:2]
        floored = np.maximum(rms, self.row_floor) / self.sd
        factor = floored ** (2 * self.row_weight) if self.row_weight else np.ones(len(rms))
        w, forward = np.empty(len(block.loc), np.float64), np.asarray(self.forward, np.float64)
        rotated_weights(block.scale, forward, self.trust, self.sd, factor, w)  # whole rows (samples too)
        self.kept.put(key, (y, w))  # (a key of None: not kept)
        return y, w

    def _seed(self, lam: float) -> SeedGrid:
        """The seeding grid at ``lam``: per column a step, its first cell and number of cells."""
        if not (lam > 0 and np.isfinite(lam)):
            raise OptionError(f"lambda must be a finite number > 0 for {TransformVBQ.name}, got {lam}")
        span = np.maximum(self.high - self.low, 0.0)
        steps = np.maximum(np.maximum(self.step * np.sqrt(2 * lam) * self.sd, span / (_MAX_CELLS - 2)), 1e-30)
        firsts = np.floor(self.low / steps).astype(np.int64)
        cells = (np.ceil(self.high / steps).astype(np.int64) - firsts + 1).clip(1, _MAX_CELLS)
        return SeedGrid(float(lam), steps, firsts, cells)

    def at(self, lam: float, rows: Rows) -> SeedGrid | ColumnValues:
        """The seeding grid, then ``iterations`` entropy-constrained refinements over ``rows``."""
        seed = self._seed(lam)
        width, state = int(seed.cells.max()), seed
        for _ in range(self.iterations):
            counts, total, moment = reduce_cells(each(rows, _cell_stats, self, state, width))
            state = refine(state, self.grid(state), counts, total, moment, self.cost_sets, self.centroids)
        return state

    def class_moments(self, state: ColumnValues, rows: Rows, kept: list | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Per (class, column, cell) the sums of the weights and of weight x y of the coordinates assigned at
        ``state`` in ``rows`` (coding blocks, one class each; in block order), or ``kept`` (BlockRows.imap_kept)."""
        width = state.width if isinstance(state, ColumnValues) else int(state.cells.max())
        total = np.zeros((self._classes, self.d, width), np.float64)
        moment = np.zeros_like(total)
        sums = rows.imap_kept(_class_sums, kept, self, width) if kept else each(rows, _class_stats, self, state, width)
        for c, part in sums:
            add_cells(total[c], moment[c], part)
        return total, moment

    def assign(self, block: Block, state: SeedGrid | ColumnValues | ClassValues) -> np.ndarray:
        from ._transform_cpu import assign_columns, round_to_cells  # numba: imported on first use

        state = state.columns if isinstance(state, ClassValues) else state
        y, w = self.coordinates(block)
        out = np.empty(len(y), np.int32)
        if isinstance(state, SeedGrid):
            round_to_cells(y, state.steps, state.firsts, state.cells, out)
        else:
            s = state
            classes = self.cost_classes(block)
            tables = (s.values, s.costs, s.below, s.above, s.sizes, s.cell_ids, s.lam, classes)
            assign_columns(y, w, *tables, s.starts, s.start_low, s.start_scale, out)
        return out

    def grid(self, state: SeedGrid | ColumnValues | ClassValues) -> np.ndarray:
        """Every column's value of every cell (d x width, flat; cells no coordinate uses are 0)."""
        state = state.columns if isinstance(state, ClassValues) else state
        if isinstance(state, SeedGrid):
            width = int(state.cells.max())
            with np.errstate(over="ignore"):  # a huge lambda's steps: cells beyond float32, which no value takes
                grid = ((state.firsts[:, None] + np.arange(width)[None, :]) * state.steps[:, None]).astype(np.float32)
        else:
            grid = np.zeros((self.d, state.width), np.float32)
            used = np.arange(state.values.shape[1])[None, :] < state.sizes[:, None]
            grid[np.nonzero(used)[0], state.cell_ids[used]] = state.values[used]
        return grid.reshape(-1)

    def reconstruct(
        self, block: Block, indices: np.ndarray, state: SeedGrid | ColumnValues | ClassValues
    ) -> np.ndarray:
        table = state.table if isinstance(state, ClassValues) else self.grid(state).reshape(1, self.d, -1)
        cells = indices.reshape(-1, self.d) + np.arange(self.d) * table.shape[2]  # flat takes: 4x faster
        table = table.reshape(len(table), -1)  # (classes, d x alphabet)
        if isinstance(state, ClassValues):  # each row's block class's values
            rows = block.first_row + np.arange(len(indices) // self.d)
            classes = state.block_class[rows // self.block_rows].astype(np.int64)
            one = len(classes) and classes.min() == classes.max()  # a coding block: one class
            y_hat = table[classes[0]][cells] if one else table[classes[:, None], cells]
        else:
            y_hat = table[0][cells]
        return inverse_transform(y_hat, self.mean, self.rotation if self.rotated else None).reshape(-1)

    def params(self, state: SeedGrid | ColumnValues) -> dict[str, Any]:
        return {"rotated": self.rotated}


def _statistics_of(block: Block, method: Quantizer) -> Any:
    return method.statistics(block)


def _row_pass(block: Block, fitted: FittedTransform) -> tuple:
    """Each row's RMS about the means, and the ranges of the rotated columns (for the grid's cells);
    the rotated coordinates kept (within the allowance) for the first pass that weighs them."""
    found = rotated_means(block, fitted.mean, fitted.forward)
    keep_rows(fitted.kept, block, found)
    return found[1:]


def _cell_stats(block: Block, fitted: FittedTransform, state: SeedGrid | ColumnValues, width: int) -> tuple:
    from ._transform_cpu import cell_stats  # numba: imported on first use

    y, w = fitted.coordinates(block)
    classes = fitted.cost_classes(block)
    stats = cell_stats(fitted.assign(block, state), w, y, fitted.d, width, classes, fitted.cost_sets)
    return compact_cells(*stats, len(y))


def _class_stats(block: Block, fitted: FittedTransform, state: SeedGrid | ColumnValues, width: int) -> tuple:
    return _class_sums(block, fitted.assign(block, state), fitted, width)


def _class_sums(block: Block, indices: np.ndarray, fitted: FittedTransform, width: int) -> tuple:
    """A coding block's class, and per (column, cell) its sums of weights and of weight x y."""
    from ._transform_cpu import cell_stats  # numba: imported on first use

    y, w = fitted.coordinates(block)
    one = np.zeros(len(y) // fitted.d, np.int64)
    stats = cell_stats(indices, w, y, fitted.d, width, one, 1)
    return int(fitted.classes_of_rows(block)[0]), compact_cells(*stats, len(y))

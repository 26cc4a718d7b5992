"""VBQ iterated with empirical priors: entropy-constrained quantization by posterior uncertainty.

Pass 0 is VBQ as published (:mod:`.vbq`): each weight goes to the grid point minimising
``w (w_hat - loc)² + lam * r`` with ``r`` the bit length of the point on the prior-CDF grid.
The rate term ``lam * r`` is a stand-in for the real code length, so each further pass
replaces it by the code length the entropy coder will actually pay,
``-log2 P_emp(w_hat)``, with ``P_emp`` the empirical distribution of the previous pass's
values (Yang, Bamler & Mandt; the iteration from constriction's ``vbq`` branch notes), and
(optionally) moves every used value to the weighted mean of the weights assigned to it.

The distortion weight ``w`` is what distinguishes the methods here:

- ``vbq-empirical``: ``w = 1 / (2 scale²)``, as VBQ.
- ``vbq-direction`` (what the default method, ``vbq-transform``, does to tensors too small for it):
  ``w = 1 / (2 scale^(2 trust) s^(2 (1 - trust)))
  * (s / rms_row)^(2 row_weight)`` where ``s`` is the RMS of the tensor's means and ``rms_row``
  that of the weight's row. ``trust < 1`` tempers the posterior's scales, so uncertain
  rare-word rows are no longer sent wholesale to the prior median, and the row factor
  measures errors relative to each row's length: what cosine similarity and analogies use.
  ``cap > 0`` (off by default) also limits every effective scale to ``cap * s``, so no weight is
  treated as less certain than that: a similarity-first setting.
  See docs/METHODS.md for the reasoning and the measurements that set the defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from ..devices import resolve_device
from ..errors import OptionError
from ..priors import GaussianPrior
from .base import STORED_IF_NOT_DEFAULT, Block, PassData, Rows
from .cells import each, reduce_cells
from .checks import is_integer, is_number
from .registry import register_quantizer
from .vbq import VBQ, FittedVBQ, fit_prior, fit_range

_ROW_FLOOR = 0.05  # rows shorter than this fraction of the typical row are weighted as this long
_F32_TINY = float(np.finfo(np.float32).tiny)
_F32_HUGE = 1e30
#: Effective scales and weights kept per tensor (12 bytes per weight), so that passes reuse them (unless raised).
CACHE_BYTES = 1 << 28
#: What one used value costs in the record's tables: its count (2 bytes) and its float32 value; in a
#: levelled record (``levelled``, format version 7) its level byte and float16 value.
TABLE_BITS_PER_VALUE = 48
LEVELLED_BITS_PER_VALUE = 24


def distortion_weights(scale: np.ndarray) -> np.ndarray:
    """``1 / (2 scale²)`` as float64: rounded to float32 where float32 holds it (as archives have
    always been made), exact float64 where it would overflow or vanish in float32.

    Example:
        >>> distortion_weights(np.array([1.0, 1e-30], np.float32)).tolist()
        [0.5, 4.999999968289231e+59]
    """
    exact = 0.5 / np.asarray(scale, dtype=np.float64) ** 2
    with np.errstate(over="ignore"):
        rounded = exact.astype(np.float32).astype(np.float64)
    return np.where(np.isfinite(rounded) & ((rounded > 0) | (exact == 0)), rounded, exact)


@register_quantizer
@dataclass(frozen=True, eq=False, repr=False, kw_only=True)
class EntropyConstrainedVBQ(VBQ):
    """VBQ followed by ``iterations`` passes with the empirical distribution as prior.

    Example:
        >>> from bnncompress.posterior import TensorPosterior
        >>> from bnncompress.inmemory import fit_in_memory
        >>> rng = np.random.default_rng(0)
        >>> t = TensorPosterior(rng.normal(size=(100, 20)).astype(np.float32), np.full((100, 20), 0.3, np.float32))
        >>> q = fit_in_memory(EntropyConstrainedVBQ(device="cpu"), t).quantize(lam=0.5)
        >>> len(q.grid) < 20, float(np.abs(q.values() - t.loc.reshape(-1)).mean()) < 0.3
        (True, True)
    """

    name: ClassVar[str] = "vbq-empirical"

    trust: float = 1.0
    row_weight: float = 0.0
    iterations: int = 3
    centroids: bool = False
    cap: float = 0.0
    #: The share of a used value's table bits (:data:`TABLE_BITS_PER_VALUE`) charged to the weights
    #: assigned to it, on top of their code length: ``table_cost * 48 / count`` bits each. Values
    #: that few weights use cost more in the tables than they save, which matters in small tensors
    #: (a small network's layers; docs/METHODS.md, "Small tensors"); 0 = the code length alone.
    table_cost: float = field(default=0.5, metadata=STORED_IF_NOT_DEFAULT)
    #: True: values rounded to float16 where that moves none by more than 1/64 of its weights' effective
    #: scale (the posterior scale tempered by ``trust`` and ``row_weight``), and the record stored as
    #: one-byte levels and float16 values (format version 7, half the scalar grid's table); what
    #: ``vbq-transform`` does to the tensors that fall back to this method.
    levelled: bool = field(default=False, metadata=STORED_IF_NOT_DEFAULT)

    def __post_init__(self) -> None:
        super().__post_init__()
        trust, row_weight, cap, iterations = self.trust, self.row_weight, self.cap, self.iterations
        if not (is_number(trust) and 0.0 <= trust <= 1.0):
            raise OptionError(f"trust must be between 0 and 1, got {trust}")
        if not (is_number(row_weight) and 0.0 <= row_weight <= 2.0):
            raise OptionError(f"row_weight must be between 0 and 2, got {row_weight}")
        if not (is_number(cap) and 0 <= cap < float("inf")):
            raise OptionError(f"cap must be a number >= 0 (0 = no cap), got {cap!r}")
        table_cost = self.table_cost
        if not (is_number(table_cost) and 0 <= table_cost <= 4):
            raise OptionError(f"table_cost must be a number from 0 to 4, got {table_cost!r}")
        if not (is_integer(iterations) and 0 <= iterations <= 20):
            raise OptionError(f"iterations must be an integer from 0 to 20, got {iterations!r}")
        for key in ("centroids", "levelled"):
            if not isinstance(getattr(self, key), (bool, np.bool_)):
                raise OptionError(f"{key} must be true or false, got {getattr(self, key)!r}")
        self._normalize(trust=float(trust), row_weight=float(row_weight), iterations=int(iterations))
        self._normalize(centroids=bool(self.centroids), cap=float(cap), table_cost=float(table_cost))
        self._normalize(levelled=bool(self.levelled))

    def fit(self, shape: tuple[int, ...], stats: list[Any], rows: Rows) -> FittedEntropyConstrained:
        prior = fit_prior(stats)
        row_rms, floor = None, 0.0
        if self.row_weight and len(shape) > 1:  # a second pass: each row's RMS about the prior mean
            row_rms = np.concatenate(rows.map(_row_rms, prior.mean))
            floor = _ROW_FLOOR * max(float(np.median(row_rms)), 1e-30)
            row_rms = np.maximum(row_rms, floor)
        device = resolve_device(self.device)
        return FittedEntropyConstrained(shape, prior, self, device, row_rms, floor, fit_range(stats))


@register_quantizer
@dataclass(frozen=True, eq=False, repr=False, kw_only=True)
class VBQDirection(EntropyConstrainedVBQ):
    """:class:`EntropyConstrainedVBQ` with tempered scales, row-relative errors and centroid
    updates (defaults measured in docs/METHODS.md); what ``vbq-transform`` (the default method)
    does to tensors too small for per-column models."""

    name: ClassVar[str] = "vbq-direction"

    trust: float = 0.75
    row_weight: float = 0.75
    centroids: bool = True


def _row_rms(block: Block, mean: float) -> np.ndarray:
    rows = block.loc.reshape(-1, block.row_size).astype(np.float64)
    return np.sqrt(np.mean((rows - mean) ** 2, axis=1))


@dataclass(frozen=True, eq=False)
class VBQPass:
    """The state of the first pass at rate knob ``lam``: VBQ over the prior's grid, with the effective scales."""

    lam: float


@dataclass(frozen=True, eq=False)
class EmpiricalPass:
    """The state after a refinement at ``lam``: the values used (ascending) and their code lengths ``-log2 P``."""

    lam: float
    values: np.ndarray
    costs: np.ndarray


class FittedEntropyConstrained(FittedVBQ):
    """VBQ with empirical priors fitted to a tensor; its state at a rate is a :class:`VBQPass` or,
    after refinements, an :class:`EmpiricalPass`."""

    def __init__(
        self,
        shape: tuple[int, ...],
        prior: GaussianPrior,
        method: EntropyConstrainedVBQ,
        device: str,
        row_rms: np.ndarray | None,
        row_floor: float,
        span: tuple[float, float],
    ):
        super().__init__(shape, prior, method.max_level, device, span)
        self.trust, self.row_weight, self.cap = method.trust, method.row_weight, method.cap
        self.iterations, self.centroids = method.iterations, method.centroids
        self.levelled = method.levelled
        self.table_bits = method.table_cost * (LEVELLED_BITS_PER_VALUE if self.levelled else TABLE_BITS_PER_VALUE)
        self.row_floor = row_floor  # rows shorter than this are weighted as this long
        self._row_rms = row_rms  # whole-tensor array: kept on the driver until the sample takes its rows
        self.kept = PassData(CACHE_BYTES)  # each block's effective scales and weights

    def prepare_sample(self, sample: Block | None) -> Block | None:
        row_rms, self._row_rms = self._row_rms, None  # never shipped to workers with the fitted state
        if sample is None:
            return None
        extra = {} if row_rms is None else {"row_rms": row_rms[sample.row_index()]}
        sample = Block(sample.loc, sample.scale, sample.row_size, positions=sample.positions, extra=extra)
        scale = self._effective_scale(sample)  # computed once: every rate-control check uses them
        sample.extra.update(search_scale=scale, weight=distortion_weights(scale))
        return sample

    def search_scale(self, block: Block) -> np.ndarray:
        return self.effective(block)[0]

    def effective(self, block: Block) -> tuple[np.ndarray, np.ndarray]:
        """The block's effective scales (float32) and distortion weights ``1 / (2 scale²)`` (float64),
        computed once per block in this process (within :data:`CACHE_BYTES`): every pass at every
        rate needs them."""
        if "search_scale" in block.extra:
            return block.extra["search_scale"], block.extra["weight"]
        key = block.key  # (None: a block of the caller's, whose rows may hold other values than the last one's)
        found = self.kept.get(key)
        if found is not None:
            return found
        scale = self._effective_scale(block)
        found = (scale, distortion_weights(scale))
        if key is not None:
            self.kept.put(key, found)
        return found

    def _effective_scale(self, block: Block) -> np.ndarray:
        """The effective scale: tempered (``trust``), capped, and relative to the row's RMS (``row_weight``)."""
        s = self.prior.std
        variance = block.scale.astype(np.float64) ** (2 * self.trust) * s ** (2 * (1 - self.trust))
        if self.cap > 0:
            with np.errstate(over="ignore"):  # (a cap beyond float64's range caps nothing)
                variance = np.minimum(variance, np.square(np.float64(self.cap) * s))
        if self.row_weight and len(self.shape) > 1:
            if "row_rms" in block.extra:
                rms = block.extra["row_rms"]
            else:
                rms = np.repeat(np.maximum(_row_rms(block, self.prior.mean), self.row_floor), block.row_size)
            variance = variance * (rms / s) ** (2 * self.row_weight)
        # float32 as before, but never 0 or inf: a constant tensor or scales of 1e-38 / 1e38 stay finite
        return np.clip(np.sqrt(variance), _F32_TINY, _F32_HUGE).astype(np.float32)

    def at(self, lam: float, rows: Rows) -> VBQPass | EmpiricalPass:
        """VBQ with the effective scales, then ``iterations`` passes, each replacing the rate term by
        the empirical code length ``-log2 P(value)`` of the previous pass plus the value's share of
        the table bits per weight using it (and, with ``centroids``, every used value by the weighted
        mean of the weights assigned to it). Counts on a sample of rows are scaled to the tensor."""
        state: VBQPass | EmpiricalPass = VBQPass(float(lam))
        values = self.candidates
        for _ in range(self.iterations):
            counts, total, moment = reduce_cells(each(rows, _cell_stats, self, state))
            used = np.flatnonzero(counts)
            if self.centroids:
                values = (moment[used] / total[used]).astype(np.float32)
                order = np.argsort(values, kind="stable")
                values, used = values[order], used[order]
            else:
                values = values[used]
            if self.levelled:  # the values a levelled record can store, if float16 holds them closely enough
                values = _float16_values(values, counts[used], total[used])
            costs = -np.log2(counts[used] / counts.sum())
            if self.table_bits:
                costs = costs + self.table_bits * counts.sum() / (counts[used] * float(self.num_weights))
            state = EmpiricalPass(float(lam), values, costs)
        return state

    def assign(self, block: Block, state: VBQPass | EmpiricalPass) -> np.ndarray:
        if isinstance(state, VBQPass):
            return self.vbq(block, state.lam)
        from .. import _ans  # numba: imported on first use
        from ._ecsq_cpu import assign_ecsq, assign_ecsq_serial

        out = np.empty(len(block.loc), dtype=np.int32)
        assign = _ans._parallel(assign_ecsq, assign_ecsq_serial, len(block.loc))
        assign(block.loc, self.effective(block)[1], state.values, state.costs, state.lam, out)
        return out

    def grid(self, state: VBQPass | EmpiricalPass) -> np.ndarray:
        return state.values if isinstance(state, EmpiricalPass) else self.candidates

    def params(self, state: VBQPass | EmpiricalPass) -> dict[str, Any]:
        """The prior only while it made the grid: after an empirical pass the record's values are the
        grid, and the prior (two float64 numbers, about 33 bytes of a small tensor's record) tells a
        reader nothing."""
        return {} if isinstance(state, EmpiricalPass) else super().params(state)


#: A value is rounded to float16 (a levelled record's) if that moves it by at most this fraction of the
#: effective scale of the weights it codes (what their distortion weights stand for); otherwise every
#: value of the tensor stays float32.
HALF_TOLERANCE = 1 / 64


def _float16_values(values: np.ndarray, counts: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``values`` rounded to float16 if none moves by more than :data:`HALF_TOLERANCE` of the effective
    scale of its weights (``sqrt(count / (2 sum of their distortion weights 1 / (2 scale²)))``), and all
    stay finite; else ``values`` unchanged.

    Example:
        >>> _float16_values(np.array([0.1, 1.0], np.float32), np.array([5, 5]), np.array([5.0, 5.0])).tolist()
        [0.0999755859375, 1.0]
        >>> _float16_values(np.array([0.1], np.float32), np.array([5]), np.array([5e9])).tolist()  # scale 2e-5
        [0.10000000149011612]
    """
    with np.errstate(over="ignore"):
        half = values.astype(np.float16).astype(np.float32)
    scale = np.sqrt(counts / (2.0 * np.maximum(weights, 1e-300)))
    if np.all(np.isfinite(half)) and np.all(np.abs(half.astype(np.float64) - values) <= HALF_TOLERANCE * scale):
        return half
    return values


def _cell_stats(block: Block, fitted: FittedEntropyConstrained, state: VBQPass | EmpiricalPass):
    """How many weights of the block each grid value got, the sum of their distortion weights and
    of weight x mean (for the empirical prior and the centroids)."""
    from ._ecsq_cpu import cell_stats

    indices = fitted.assign(block, state)
    return cell_stats(indices, fitted.effective(block)[1], block.loc, len(fitted.grid(state)))

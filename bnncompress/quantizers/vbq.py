"""Variational Bayesian Quantization, as published (Yang, Bamler & Mandt, ICML 2020).

Each weight with posterior N(loc, scale²) is mapped to the grid point

    w_hat = argmin_{xi in X_r, r <= R}  (F^-1(xi) - loc)² / (2 scale²) + lam * r

where F is the CDF of a Gaussian quantization prior fitted to the tensor's means and
X_r = {(2k + 1) / 2^(r + 1)} are the binary fractions of bit length r (r = 0 is the prior
median and costs nothing). For each r only the two level-r neighbours of F(loc) can win;
they are tried for r = 0, 1, ... until lam * r alone exceeds the best objective found.

All levels together form the grid m / 2^(R+1), m = 1 .. 2^(R+1) - 1, of which level r holds
the odd multiples of 2^(R-r). The neighbours of F(loc) are found by integer arithmetic on
the position of loc among the grid values, so no device-dependent CDF evaluation decides a
symbol: the CPU (numba) and GPU (torch) kernels return identical indices.

The prior's grid ends near ±3.3 standard deviations (R = 10); means beyond it (outliers, heavy
tails) would all be clipped to its ends. So the grid gets *tails*: evenly spaced points beyond
either end, about as far apart as its outermost two (at most 2^(R+1) per side), reaching the
tensor's smallest and largest mean (:func:`vbq_grid`). A tail point costs ``2 (R + 1)`` bits in
the objective, as an escape code (one more bit than the finest level) followed by the point's
index; it is tried only for a mean beyond the prior's grid (the two tail points around it).
On data/example.pt at 3 bits this keeps every weight within 4 posterior sd (it was up to 12.7)
at the same size and weighted error.

Passes: the prior from exact sums of the means and their squares, and their range (one pass),
then one assignment pass per rate.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from ..devices import resolve_device
from ..errors import OptionError
from ..exactsum import ExactSum
from ..priors import GaussianPrior
from .base import NOT_IN_CONFIG, Block, FittedQuantizer, Quantizer, Rows
from .checks import is_integer
from .registry import register_quantizer

DEFAULT_MAX_LEVEL = 10
_TABLE_WEIGHTS = 1 << 16  # smaller tensors build the kernel's bucket table per call (a tensor keeps 32 KiB)


@register_quantizer
@dataclass(frozen=True, eq=False, repr=False, kw_only=True)
class VBQ(Quantizer):
    """VBQ with a Gaussian quantization prior fitted to each tensor's means.

    Example:
        >>> from bnncompress.posterior import TensorPosterior
        >>> from bnncompress.inmemory import fit_in_memory
        >>> t = TensorPosterior(np.array([0.0, 1.0, 2.0], np.float32), np.array([1e-3, 1e-3, 10.0], np.float32))
        >>> fit_in_memory(VBQ(device="cpu"), t).quantize(lam=0.1).values().round(2).tolist()  # the uncertain third
        [0.0, 1.0, 1.0]
    """

    name: ClassVar[str] = "vbq"

    max_level: int = DEFAULT_MAX_LEVEL
    #: Where the search runs ("auto", "cpu", "cuda", ...): the same indices everywhere.
    device: str = field(default="auto", metadata=NOT_IN_CONFIG)

    def __post_init__(self) -> None:
        if not (is_integer(self.max_level) and 1 <= self.max_level <= 20):
            raise OptionError(f"max_level must be an integer from 1 to 20, got {self.max_level!r}")
        self._normalize(max_level=int(self.max_level))

    def statistics(self, block: Block) -> tuple[ExactSum, ExactSum, float, float]:
        low, high = (float(block.loc.min()), float(block.loc.max())) if len(block.loc) else (np.inf, -np.inf)
        return ExactSum.of_float32(block.loc), ExactSum.of_squares(block.loc), low, high

    def fit(self, shape: tuple[int, ...], stats: list[Any], rows: Rows) -> FittedVBQ:
        return FittedVBQ(shape, fit_prior(stats), self.max_level, resolve_device(self.device), fit_range(stats))


def fit_prior(stats: list[tuple]) -> GaussianPrior:
    """The Gaussian prior from blocks' exact sums of the means and of their squares (their first two statistics)."""
    total, squares = stats[0][:2]
    for s, q, *_ in stats[1:]:
        total, squares = total + s, squares + q
    return GaussianPrior.from_sums(total, squares)


def fit_range(stats: list[tuple]) -> tuple[float, float]:
    """The smallest and largest mean, from blocks' statistics ``(sum, squares, min, max)``."""
    return min(s[2] for s in stats), max(s[3] for s in stats)


def core_size(max_level: int) -> int:
    """Points of the prior's grid: every binary fraction of at most ``max_level + 1`` bits."""
    return (1 << (max_level + 1)) - 1


def vbq_grid(prior: GaussianPrior, max_level: int, low: float, high: float) -> tuple[np.ndarray, int]:
    """The candidates (float32, ascending) and the index of the prior's first grid point in them:
    the prior's grid with tails reaching ``low`` and ``high``, when they lie beyond it.

    Example:
        >>> grid, first = vbq_grid(GaussianPrior(0.0, 1.0), 2, -3.0, 1.0)  # the prior's 7 points end at ±1.15
        >>> first, len(grid), [round(float(v), 2) for v in grid[: first + 1]]
        (4, 11, [-3.0, -2.54, -2.08, -1.61, -1.15])
    """
    core = prior.binary_fractions(max_level)
    limit = 1 << (max_level + 1)  # a tail point's index costs at most max_level + 1 bits
    left, right = _tail(core[0], core[1], low, limit, -1.0), _tail(core[-1], core[-2], high, limit, 1.0)
    if not (len(left) or len(right)):
        return core, 0
    return np.concatenate([left[::-1], core, right]), len(left)


def tail_bits(max_level: int) -> int:
    """The rate term of a tail point: an escape (one bit more than the finest level) and its index."""
    return 2 * (max_level + 1)


def _tail(edge: np.float32, inner: np.float32, reach: float, limit: int, side: float) -> np.ndarray:
    """Points from ``edge`` (exclusive) to ``reach`` (inclusive) on ``side`` (+1 above, -1 below) of the
    prior's grid, about ``|edge - inner|`` apart (``limit`` at most); none if ``reach`` is not beyond ``edge``."""
    edge64 = float(edge)
    gap = (reach - edge64) * side
    if not (gap > 0 and np.isfinite(gap)):
        return np.zeros(0, np.float32)
    spacing = abs(edge64 - float(inner))
    count = int(min(limit, np.ceil(gap / spacing))) if spacing > 0 else 1
    points = edge64 + (reach - edge64) * np.arange(1, count + 1) / count
    points[-1] = reach
    return points.astype(np.float32)


class FittedVBQ(FittedQuantizer):
    """VBQ's candidate grid for one tensor; ``search_scale(block)`` is the scale in the objective."""

    def __init__(
        self, shape: tuple[int, ...], prior: GaussianPrior, max_level: int, device: str, span: tuple[float, float]
    ):
        self.shape = shape
        self.prior = prior
        self.max_level = max_level
        self.device = device
        self.low, self.high = span  # the smallest and largest mean: the tails reach them
        self._table: tuple | None = None  # the CPU kernel's bucket table of the prior's grid

    @property
    def candidates(self) -> np.ndarray:
        """Every grid point of every level and the tails: made when needed, so that 10^5 tiny tensors stay small."""
        return self.candidates_and_first()[0]

    def candidates_and_first(self) -> tuple[np.ndarray, int]:
        """The candidates and the index of the prior's first grid point in them (:func:`vbq_grid`)."""
        return vbq_grid(self.prior, self.max_level, self.low, self.high)

    def search_scale(self, block: Block) -> np.ndarray:
        return block.scale

    def assign(self, block: Block, state: Any) -> np.ndarray:
        return self.vbq(block, float(state))

    def vbq(self, block: Block, lam: float) -> np.ndarray:
        """VBQ's search over the candidates with the block's search scales."""
        grid, first = self.candidates_and_first()
        if self.device == "cpu" and self._table is None and self.num_weights >= _TABLE_WEIGHTS:
            from ._vbq_cpu import bucket_table  # numba: imported on first use

            self._table = bucket_table(grid[first : first + core_size(self.max_level)])  # once per tensor
        scale = self.search_scale(block)
        return vbq_assign(block.loc, scale, grid, self.max_level, lam, self.device, self._table, first)

    def grid(self, state: Any) -> np.ndarray:
        return self.candidates

    def params(self, state: Any) -> dict[str, Any]:
        return {"prior": self.prior.to_dict()}


def vbq_assign(
    loc: np.ndarray,
    scale: np.ndarray,
    grid: np.ndarray,
    max_level: int,
    lam: float,
    device: str,
    table: tuple | None = None,
    first: int = 0,
) -> np.ndarray:
    """VBQ's grid index of every weight (numba on the CPU, torch elsewhere; identical results);
    the prior's grid is ``grid[first : first + core_size(max_level)]``, the rest its tails."""
    if not (lam >= 0 and np.isfinite(lam)):
        raise OptionError(f"lambda must be a finite number >= 0, got {lam}")
    if device == "cpu":
        from ._vbq_cpu import assign_cpu  # numba: imported on first use, not with bnncompress

        out = np.empty(loc.shape, dtype=np.int32)
        assign_cpu(loc, scale, grid, first, max_level, lam, out, table)
        return out
    import torch

    dev = torch.device(device)
    indices = assign_torch(
        torch.from_numpy(np.ascontiguousarray(loc)).to(dev),
        torch.from_numpy(np.ascontiguousarray(scale)).to(dev),
        torch.from_numpy(grid).to(dev),
        max_level,
        lam,
        first,
    )
    return indices.cpu().numpy()


def assign_torch(loc, scale, grid, max_level: int, lam: float, first: int = 0):
    """The same search as the CPU kernel, as device-agnostic torch operations (CUDA path).

    Returns int32 indices into ``grid``; identical to the numba kernel on any device.
    """
    import torch

    x = loc.to(torch.float64)
    inv = 0.5 / scale.to(torch.float64) ** 2
    n_grid = core_size(max_level)
    g64 = grid[first : first + n_grid].to(torch.float64)
    half = 1 << max_level
    p = torch.searchsorted(grid[first : first + n_grid].contiguous(), loc.contiguous(), right=True)
    best = (g64[half - 1] - x) ** 2 * inv
    best_m = torch.full_like(p, half)
    for r in range(1, max_level + 1):
        penalty = lam * r
        active = best > penalty  # elsewhere no level >= r can win (early exit)
        if not bool(active.any()):
            break
        step = 1 << (max_level - r)
        m_left = step * (2 * torch.div(p - step, 2 * step, rounding_mode="floor") + 1)
        m_right = m_left + 2 * step
        for m, valid in ((m_left, m_left >= 1), (m_right, m_right <= n_grid)):
            d = g64[(m - 1).clamp(0, n_grid - 1)] - x
            cost = d * d * inv + penalty
            better = valid & active & (cost < best)
            best = torch.where(better, cost, best)
            best_m = torch.where(better, m, best_m)
    index = _tails_torch(x, inv, grid, first, n_grid, lam * tail_bits(max_level), best, best_m - 1 + first)
    return index.to(torch.int32)


def _tails_torch(x, inv, grid, first: int, n_grid: int, penalty: float, best, index):
    """Let the two tail points around each mean beyond the prior's grid compete (as the CPU kernel)."""
    import torch

    g64 = grid.to(torch.float64)
    gate = best > penalty
    for lo, hi, beyond in ((0, first, x < g64[first]), (first + n_grid, len(grid), x > g64[first + n_grid - 1])):
        if hi <= lo:
            continue
        q = lo + torch.searchsorted(grid[lo:hi].contiguous(), x.to(grid.dtype).contiguous(), right=True)
        for k in (q - 1, q):
            d = g64[k.clamp(lo, hi - 1)] - x
            cost = d * d * inv + penalty
            better = gate & beyond & (k >= lo) & (k < hi) & (cost < best)
            best = torch.where(better, cost, best)
            index = torch.where(better, k, index)
    return index

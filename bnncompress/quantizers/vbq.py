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

Passes: the prior from exact sums of the means and their squares (one pass), then one
assignment pass per rate.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from ..devices import resolve_device
from ..errors import OptionError
from ..exactsum import ExactSum
from ..priors import GaussianPrior
from .base import Block, FittedQuantizer, Quantizer, Rows

DEFAULT_MAX_LEVEL = 10
_TABLE_WEIGHTS = 1 << 16  # smaller tensors build the kernel's bucket table per call (a tensor keeps 32 KiB)


class VBQ(Quantizer):
    """VBQ with a Gaussian quantization prior fitted to each tensor's means.

    Example:
        >>> from bnncompress.posterior import TensorPosterior
        >>> from bnncompress.quantizers import fit_in_memory
        >>> t = TensorPosterior(np.array([0.0, 1.0, 2.0], np.float32), np.array([1e-3, 1e-3, 10.0], np.float32))
        >>> fit_in_memory(VBQ(device="cpu"), t).quantize(lam=0.1).values().round(2).tolist()  # the uncertain third
        [0.0, 1.0, 1.0]
    """

    name: ClassVar[str] = "vbq"

    def __init__(self, max_level: int = DEFAULT_MAX_LEVEL, device: str = "auto"):
        if not (isinstance(max_level, (int, np.integer)) and 1 <= max_level <= 20):
            raise OptionError(f"max_level must be an integer from 1 to 20, got {max_level!r}")
        self.max_level = int(max_level)
        self.device = device

    def options(self) -> dict[str, Any]:
        return {"max_level": self.max_level}

    def statistics(self, block: Block) -> tuple[ExactSum, ExactSum]:
        return ExactSum.of_float32(block.loc), ExactSum.of_squares(block.loc)

    def fit(self, shape: tuple[int, ...], stats: list[Any], rows: Rows) -> FittedVBQ:
        return FittedVBQ(shape, fit_prior(stats), self.max_level, resolve_device(self.device))


def fit_prior(stats: list[tuple[ExactSum, ExactSum]]) -> GaussianPrior:
    """The Gaussian prior from blocks' exact sums of the means and of their squares."""
    total, squares = stats[0]
    for s, q in stats[1:]:
        total, squares = total + s, squares + q
    return GaussianPrior.from_sums(total, squares)


class FittedVBQ(FittedQuantizer):
    """VBQ's candidate grid for one tensor; ``search_scale(block)`` is the scale in the objective."""

    def __init__(self, shape: tuple[int, ...], prior: GaussianPrior, max_level: int, device: str):
        self.shape = shape
        self.prior = prior
        self.max_level = max_level
        self.device = device
        self._table: tuple | None = None  # the CPU kernel's bucket table of the candidates

    @property
    def candidates(self) -> np.ndarray:
        """Every grid point of every level: made when needed, so that 10^5 tiny tensors stay small."""
        return self.prior.binary_fractions(self.max_level)

    def search_scale(self, block: Block) -> np.ndarray:
        return block.scale

    def assign(self, block: Block, state: Any) -> np.ndarray:
        return self.vbq(block, float(state))

    def vbq(self, block: Block, lam: float) -> np.ndarray:
        """VBQ's search over the candidates with the block's search scales."""
        if self.device == "cpu" and self._table is None and self.num_weights >= _TABLE_WEIGHTS:
            from ._vbq_cpu import bucket_table  # numba: imported on first use

            self._table = bucket_table(self.candidates)  # once per tensor, not per block
        scale = self.search_scale(block)
        return vbq_assign(block.loc, scale, self.candidates, self.max_level, lam, self.device, self._table)

    def grid(self, state: Any) -> np.ndarray:
        return self.candidates

    def params(self, state: Any) -> dict[str, Any]:
        return {"max_level": self.max_level, "prior": self.prior.to_dict()}


def vbq_assign(
    loc: np.ndarray,
    scale: np.ndarray,
    grid: np.ndarray,
    max_level: int,
    lam: float,
    device: str,
    table: tuple | None = None,
) -> np.ndarray:
    """VBQ's grid index of every weight (numba on the CPU, torch elsewhere; identical results)."""
    if not (lam >= 0 and np.isfinite(lam)):
        raise OptionError(f"lambda must be a finite number >= 0, got {lam}")
    if device == "cpu":
        from ._vbq_cpu import assign_cpu  # numba: imported on first use, not with bnncompress

        out = np.empty(loc.shape, dtype=np.int32)
        assign_cpu(loc, scale, grid, max_level, lam, out, table)
        return out
    import torch

    dev = torch.device(device)
    indices = assign_torch(
        torch.from_numpy(np.ascontiguousarray(loc)).to(dev),
        torch.from_numpy(np.ascontiguousarray(scale)).to(dev),
        torch.from_numpy(grid).to(dev),
        max_level,
        lam,
    )
    return indices.cpu().numpy()


def assign_torch(loc, scale, grid, max_level: int, lam: float):
    """The same search as the CPU kernel, as device-agnostic torch operations (CUDA path).

    Returns int32 indices into ``grid``; identical to the numba kernel on any device.
    """
    import torch

    x = loc.to(torch.float64)
    inv = 0.5 / scale.to(torch.float64) ** 2
    g64 = grid.to(torch.float64)
    n_grid = grid.shape[0]
    half = 1 << max_level
    p = torch.searchsorted(grid, loc.contiguous(), right=True)
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
    return (best_m - 1).to(torch.int32)

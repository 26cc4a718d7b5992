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
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..devices import resolve_device
from ..errors import OptionError
from ..posterior import TensorPosterior
from ..priors import GaussianPrior
from .base import FittedQuantizer, Quantizer

DEFAULT_MAX_LEVEL = 10


class VBQ(Quantizer):
    """VBQ with a Gaussian quantization prior fitted to each tensor's means.

    Example:
        >>> import numpy as np
        >>> from bnncompress.posterior import TensorPosterior
        >>> t = TensorPosterior(np.array([0.0, 1.0, 2.0], np.float32), np.array([1e-3, 1e-3, 10.0], np.float32))
        >>> q = VBQ(device="cpu").fit(t).quantize(lam=0.1)
        >>> q.values().round(2).tolist()  # the uncertain third weight goes to the prior median
        [0.0, 1.0, 1.0]
    """

    name = "vbq"

    def __init__(self, max_level: int = DEFAULT_MAX_LEVEL, device: str = "auto"):
        if not 1 <= max_level <= 20:
            raise OptionError(f"max_level must be between 1 and 20, got {max_level}")
        self.max_level = int(max_level)
        self.device = device

    def fit(self, tensor: TensorPosterior) -> FittedVBQ:
        prior = GaussianPrior.fit(tensor.loc)
        return FittedVBQ(tensor, prior, self.max_level, resolve_device(self.device))


class FittedVBQ(FittedQuantizer):
    def __init__(self, tensor: TensorPosterior, prior: GaussianPrior, max_level: int, device: str):
        self.shape = tensor.shape
        self.loc = tensor.loc.reshape(-1)
        self.scale = tensor.scale.reshape(-1)
        self.search_scale = self.scale  # the scale in the objective (tempered by vbq-direction)
        self.max_level = max_level
        self.device = device
        fractions = np.arange(1, 2 ** (max_level + 1)) / 2.0 ** (max_level + 1)
        self.grid = prior.ppf(fractions).astype(np.float32)
        self.params: dict[str, Any] = {"max_level": max_level, "prior": prior.to_dict()}

    def assign(self, lam: float, sample: np.ndarray | None = None) -> np.ndarray:
        if not (lam >= 0 and np.isfinite(lam)):
            raise OptionError(f"lambda must be a finite number >= 0, got {lam}")
        loc, scale = self.loc, self.search_scale
        if sample is not None:
            loc, scale = loc[sample], scale[sample]
        if self.device == "cpu":
            from ._vbq_cpu import assign_cpu  # compiled by numba on first use, then cached

            out = np.empty(loc.shape, dtype=np.int32)
            assign_cpu(loc, scale, self.grid, self.max_level, float(lam), out)
            return out
        import torch

        dev = torch.device(self.device)
        return (
            assign_torch(
                torch.from_numpy(loc).to(dev),
                torch.from_numpy(scale).to(dev),
                torch.from_numpy(self.grid).to(dev),
                self.max_level,
                float(lam),
            )
            .cpu()
            .numpy()
        )


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

"""Quantization priors: the distribution whose quantiles place a quantizer's grid.

VBQ (Yang et al. 2020) maps each weight through the CDF F of a prior fitted to the
posterior means and picks grid points at binary fractions of (0, 1); the reconstruction
value of a fraction xi is F^-1(xi).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from .exactsum import ExactSum

_F32_MAX = float(np.finfo(np.float32).max)


@dataclass(frozen=True)
class GaussianPrior:
    """N(mean, std²) fitted to a tensor's posterior means.

    Example:
        >>> p = GaussianPrior.fit(np.array([-1.0, 1.0]))
        >>> (p.mean, p.std), p.binary_fractions(1).tolist()
        ((0.0, 1.0), [-0.6744897365570068, 0.0, 0.6744897365570068])
    """

    mean: float
    std: float

    @classmethod
    def fit(cls, loc: np.ndarray) -> GaussianPrior:
        """Moment-match the (float32) means; a constant tensor gets a tiny positive width (1e-6 of its value).

        Mean and variance are computed exactly from exact sums and rounded once
        (:mod:`bnncompress.exactsum`), so a prior fitted block by block (:meth:`from_sums`)
        is the same to the last bit, in one pass."""
        flat = np.asarray(loc).reshape(-1)
        return cls.from_sums(ExactSum.of_float32(flat), ExactSum.of_squares(flat))

    @classmethod
    def from_sums(cls, total: ExactSum, squares: ExactSum) -> GaussianPrior:
        """The prior from the exact sum of the means and of their squares."""
        n = max(total.count, 1)
        s = total.exact()
        mean = float(s / n)
        std = float(max(squares.exact() - s * s / n, 0) / n) ** 0.5
        if not std > 0:  # a constant tensor: a grid of width 1e-6 relative to its value
            std = abs(mean) * 1e-6 if mean else 1e-6
        return cls(mean, std)

    def to_dict(self) -> dict:
        return {"kind": "gaussian", "mean": self.mean, "std": self.std}

    def binary_fractions(self, max_level: int) -> np.ndarray:
        """The prior's quantiles at ``m / 2^(max_level+1)`` for m = 1 .. 2^(max_level+1) - 1 as float32:
        VBQ's candidates (the standard normal's quantiles are computed once per level and shared by every tensor).
        Values beyond float32's range are clipped to it (a prior of means near ±3e38)."""
        values = self.mean + self.std * _standard_quantiles(max_level)
        return np.clip(values, -_F32_MAX, _F32_MAX).astype(np.float32)


@functools.lru_cache(maxsize=32)
def _standard_quantiles(max_level: int) -> np.ndarray:
    from scipy.special import ndtri  # scipy takes ~0.2 s to import: only when a grid is built

    quantiles = ndtri(np.arange(1, 2 ** (max_level + 1)) / 2.0 ** (max_level + 1))
    quantiles.flags.writeable = False
    return quantiles

"""Uniform scalar quantization with entropy coding: the scale-agnostic baseline.

Every weight's mean is rounded to the nearest multiple of a step ``delta = lam * s`` (``s``
the RMS of the tensor's means); the posterior's scales are ignored. The entropy coder then
pays for the rounded values' empirical distribution, as "uniform quantization + arithmetic
coding" in Yang et al. (2020). Passes: exact sums, minimum and maximum of the means (one
pass), then one assignment pass per rate.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from ..errors import OptionError
from ..exactsum import ExactSum
from .base import Block, FittedQuantizer, Quantizer, Rows
from .registry import register_quantizer
from .vbq import fit_prior

_MAX_STEPS = 1 << 20  # the grid never has more than this many points
_F32_MAX = float(np.finfo(np.float32).max)


@register_quantizer
class Uniform(Quantizer):
    """Round the means to a uniform grid whose step is ``lam`` times their RMS.

    Example:
        >>> from bnncompress.posterior import TensorPosterior
        >>> from bnncompress.inmemory import fit_in_memory
        >>> t = TensorPosterior(np.array([0.1, 0.9, 2.2], np.float32), np.ones(3, np.float32))
        >>> [round(float(v), 3) for v in fit_in_memory(Uniform(), t).quantize(lam=0.5).values()]  # step 0.687
        [0.0, 0.687, 2.06]
    """

    name: ClassVar[str] = "uniform"
    default_lam: ClassVar[float] = 0.1

    def statistics(self, block: Block) -> tuple[ExactSum, ExactSum, float, float]:
        return (
            ExactSum.of_float32(block.loc),
            ExactSum.of_squares(block.loc),
            float(block.loc.min()),
            float(block.loc.max()),
        )

    def fit(self, shape: tuple[int, ...], stats: list[Any], rows: Rows) -> FittedUniform:
        prior = fit_prior([s[:2] for s in stats])
        unit = float(np.sqrt(prior.std**2 + prior.mean**2))
        return FittedUniform(shape, unit, min(s[2] for s in stats), max(s[3] for s in stats))


class FittedUniform(FittedQuantizer):
    def __init__(self, shape: tuple[int, ...], unit: float, low: float, high: float):
        self.shape, self.unit, self.low, self.high = shape, unit, low, high

    def at(self, lam: float, rows: Rows) -> float:
        """The step at ``lam``."""
        if not (lam > 0 and np.isfinite(lam)):
            raise OptionError(f"lambda must be a finite number > 0 for uniform quantization, got {lam}")
        return max(lam * self.unit, (self.high - self.low) / _MAX_STEPS, float(np.finfo(np.float32).tiny))

    def _first(self, delta: float) -> int:
        return int(np.rint(self.low / delta))

    def assign(self, block: Block, state: float) -> np.ndarray:
        return (np.rint(block.loc / np.float64(state)) - self._first(state)).astype(np.int32)

    def grid(self, state: float) -> np.ndarray:
        first, last = self._first(state), int(np.rint(self.high / state))
        values = np.arange(first, last + 1, dtype=np.float64) * state
        return np.clip(values, -_F32_MAX, _F32_MAX).astype(np.float32)  # the outermost step may pass ±3.4e38

    def params(self, state: float) -> dict[str, Any]:
        return {"rms": self.unit}

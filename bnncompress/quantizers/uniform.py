"""Uniform scalar quantization with entropy coding: the scale-agnostic baseline.

Every weight's mean is rounded to the nearest multiple of a step ``delta = lam * s`` (``s``
the RMS of the tensor's means); the posterior's scales are ignored. The entropy coder then
pays for the rounded values' empirical distribution, as "uniform quantization + arithmetic
coding" in Yang et al. (2020).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from ..errors import OptionError
from ..posterior import TensorPosterior
from ..priors import GaussianPrior
from .base import FittedQuantizer, Quantizer

_MAX_STEPS = 1 << 20  # the grid never has more than this many points


class Uniform(Quantizer):
    """Round the means to a uniform grid whose step is ``lam`` times their RMS.

    Example:
        >>> import numpy as np
        >>> from bnncompress.posterior import TensorPosterior
        >>> t = TensorPosterior(np.array([0.1, 0.9, 2.2], np.float32), np.ones(3, np.float32))
        >>> [round(float(v), 3) for v in Uniform().fit(t).quantize(lam=0.5).values()]  # RMS 1.374: step 0.687
        [0.0, 0.687, 2.06]
    """

    name: ClassVar[str] = "uniform"
    default_lam: ClassVar[float] = 0.1

    def fit(self, tensor: TensorPosterior) -> FittedUniform:
        return FittedUniform(tensor)


class FittedUniform(FittedQuantizer):
    def __init__(self, tensor: TensorPosterior):
        self.shape = tensor.shape
        self.loc = tensor.loc.reshape(-1)
        self.scale = tensor.scale.reshape(-1)
        prior = GaussianPrior.fit(self.loc)
        self.unit = float(np.sqrt(prior.std**2 + prior.mean**2))
        self.low, self.high = float(self.loc.min()), float(self.loc.max())
        self.grid = np.zeros(1, np.float32)
        self.params = {"rms": self.unit}

    def step(self, lam: float) -> float:
        if not (lam > 0 and np.isfinite(lam)):
            raise OptionError(f"lambda must be a finite number > 0 for uniform quantization, got {lam}")
        return max(lam * self.unit, (self.high - self.low) / _MAX_STEPS, np.finfo(np.float32).tiny)

    def _first(self, delta: float) -> int:
        return int(np.rint(self.low / delta))

    def assign(self, lam: float, sample: np.ndarray | None = None) -> np.ndarray:
        delta = self.step(lam)
        loc = self.loc if sample is None else self.loc[sample]
        return (np.rint(loc / np.float64(delta)) - self._first(delta)).astype(np.int32)

    def grid_at(self, lam: float) -> np.ndarray:
        delta = self.step(lam)
        first, last = self._first(delta), int(np.rint(self.high / delta))
        return (np.arange(first, last + 1, dtype=np.float64) * delta).astype(np.float32)

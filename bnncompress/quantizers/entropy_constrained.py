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
- ``vbq-direction`` (the default method): ``w = 1 / (2 scale^(2 trust) s^(2 (1 - trust)))
  * (s / rms_row)^(2 row_weight)`` where ``s`` is the RMS of the tensor's means and ``rms_row``
  that of the weight's row. ``trust < 1`` tempers the posterior's scales, so uncertain
  rare-word rows are no longer sent wholesale to the prior median, and the row factor
  measures errors relative to each row's length: what cosine similarity and analogies use.
  ``cap > 0`` (off by default) also limits every effective scale to ``cap * s``, so no weight is
  treated as less certain than that: a similarity-first setting.
  See docs/METHODS.md for the reasoning and the measurements that set the defaults.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from ..devices import resolve_device
from ..errors import OptionError
from ..posterior import TensorPosterior
from ..priors import GaussianPrior
from .base import Quantizer
from .vbq import DEFAULT_MAX_LEVEL, FittedVBQ

_ROW_FLOOR = 0.05  # rows shorter than this fraction of the typical row are weighted as this long
_F32_TINY = float(np.finfo(np.float32).tiny)
_F32_HUGE = 1e30


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


class EntropyConstrainedVBQ(Quantizer):
    """VBQ followed by ``iterations`` passes with the empirical distribution as prior.

    Example:
        >>> import numpy as np
        >>> from bnncompress.posterior import TensorPosterior
        >>> rng = np.random.default_rng(0)
        >>> t = TensorPosterior(rng.normal(size=(100, 20)).astype(np.float32), np.full((100, 20), 0.3, np.float32))
        >>> q = EntropyConstrainedVBQ(device="cpu").fit(t).quantize(lam=0.5)
        >>> len(q.grid) < 20, float(np.abs(q.values() - t.loc.reshape(-1)).mean()) < 0.3
        (True, True)
    """

    name: ClassVar[str] = "vbq-empirical"

    def __init__(
        self,
        trust: float = 1.0,
        row_weight: float = 0.0,
        iterations: int = 3,
        centroids: bool = False,
        max_level: int = DEFAULT_MAX_LEVEL,
        device: str = "auto",
        cap: float = 0.0,
    ):
        if not 0.0 <= trust <= 1.0:
            raise OptionError(f"trust must be between 0 and 1, got {trust}")
        if not 0.0 <= row_weight <= 2.0:
            raise OptionError(f"row_weight must be between 0 and 2, got {row_weight}")
        if not cap >= 0:
            raise OptionError(f"cap must be >= 0 (0 = no cap), got {cap}")
        if not 0 <= iterations <= 20:
            raise OptionError(f"iterations must be between 0 and 20, got {iterations}")
        self.trust, self.row_weight = float(trust), float(row_weight)
        self.iterations, self.centroids = int(iterations), bool(centroids)
        self.max_level, self.device = int(max_level), device
        self.cap = float(cap)

    def fit(self, tensor: TensorPosterior) -> FittedEntropyConstrained:
        loc = tensor.loc.reshape(-1)
        prior = GaussianPrior.fit(loc)
        s = prior.std
        scale = tensor.scale.reshape(-1).astype(np.float64)
        variance = scale ** (2 * self.trust) * s ** (2 * (1 - self.trust))
        if self.cap > 0:
            variance = np.minimum(variance, (self.cap * s) ** 2)
        if self.row_weight and len(tensor.shape) > 1:
            rows = tensor.loc.reshape(tensor.shape[0], -1).astype(np.float64)
            rms = np.sqrt(np.mean((rows - prior.mean) ** 2, axis=1))
            rms = np.maximum(rms, _ROW_FLOOR * max(float(np.median(rms)), 1e-30))
            variance = variance.reshape(len(rms), -1) * (rms[:, None] / s) ** (2 * self.row_weight)
        # float32 as before, but never 0 or inf: a constant tensor or scales of 1e-38 / 1e38 stay finite
        effective_scale = np.clip(np.sqrt(variance).reshape(-1), _F32_TINY, _F32_HUGE).astype(np.float32)
        params = {
            "trust": self.trust,
            "row_weight": self.row_weight,
            "iterations": self.iterations,
            "centroids": self.centroids,
            "cap": self.cap,
        }
        return FittedEntropyConstrained(
            tensor,
            effective_scale,
            prior,
            self.max_level,
            resolve_device(self.device),
            params,
            self.iterations,
            self.centroids,
        )


class VBQDirection(EntropyConstrainedVBQ):
    """The default method: :class:`EntropyConstrainedVBQ` with tempered scales, row-relative
    errors and centroid updates (defaults measured in docs/METHODS.md)."""

    name: ClassVar[str] = "vbq-direction"

    def __init__(
        self,
        trust: float = 0.75,
        row_weight: float = 0.75,
        iterations: int = 3,
        centroids: bool = True,
        max_level: int = DEFAULT_MAX_LEVEL,
        device: str = "auto",
        cap: float = 0.0,
    ):
        super().__init__(trust, row_weight, iterations, centroids, max_level, device, cap)


class FittedEntropyConstrained(FittedVBQ):
    def __init__(
        self,
        tensor: TensorPosterior,
        effective_scale: np.ndarray,
        prior: GaussianPrior,
        max_level: int,
        device: str,
        params: dict[str, Any],
        iterations: int,
        centroids: bool,
    ):
        super().__init__(tensor, prior, max_level, device)
        self.search_scale = effective_scale
        self.weight = distortion_weights(effective_scale)
        self.iterations, self.centroids = iterations, centroids
        self.params = {**self.params, **params}
        self._grids: dict[float, np.ndarray] = {}

    def assign(self, lam: float, sample: np.ndarray | None = None) -> np.ndarray:
        from ._ecsq_cpu import assign_ecsq, cell_stats

        indices = FittedVBQ.assign(self, lam, sample)  # pass 0: VBQ with the effective scales
        loc = self.loc if sample is None else self.loc[sample]
        weight = self.weight if sample is None else self.weight[sample]
        values = self.grid
        for _ in range(self.iterations):
            counts, total, moment = cell_stats(indices, weight, loc, len(values))
            used = np.flatnonzero(counts)
            if self.centroids:
                values = (moment[used] / total[used]).astype(np.float32)
                order = np.argsort(values, kind="stable")
                values, used = values[order], used[order]
            else:
                values = values[used]
            costs = -np.log2(counts[used] / len(indices))
            indices = np.empty(len(loc), dtype=np.int32)
            assign_ecsq(loc, weight, values, costs, float(lam), indices)
        if sample is None:
            self._grids[lam] = values
        return indices

    def grid_at(self, lam: float) -> np.ndarray:
        if lam not in self._grids:
            self.assign_all(lam)
        return self._grids[lam]

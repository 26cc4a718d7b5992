"""k-means weight sharing (Deep Compression) and importance-weighted k-means (Gao et al. 2019).

The means are clustered into ``k`` shared values by Lloyd's algorithm in one dimension; each
weight is stored as the index of its nearest centroid, entropy-coded. ``weighted-kmeans``
weights every weight's squared error by an importance (default ``1 / scale²``, the
posterior's precision): centroid = sum(I w) / sum(I). Its ``prune`` option first sets the
fraction ``prune`` of weights with the smallest ``I w²`` to exactly zero (Gao et al.'s
importance-based pruning). The rate knob is the number of clusters, ``k = 64 / lam``.

Lloyd runs on a fine weighted histogram of the means (2^14 bins, each bin at its weighted
mean), so each iteration costs O(bins log k) whatever the tensor's size. Pruning ranks all
weights of a tensor, so these methods need the whole tensor in memory (no streaming or Dask).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ..errors import OptionError
from .base import Block, FittedQuantizer, Quantizer, Rows
from .checks import is_number
from .registry import register_quantizer

_BINS = 1 << 14
_MAX_K = 4096
_ITERATIONS = 60


def clusters_for(lam: float) -> int:
    """The number of clusters at rate knob ``lam`` (larger lam, fewer clusters)."""
    if not (lam > 0 and np.isfinite(lam)):
        raise OptionError(f"lambda must be a finite number > 0 for k-means, got {lam}")
    return int(min(_MAX_K, max(1, 64.0 / lam)))


def weighted_lloyd(x: np.ndarray, w: np.ndarray, k: int) -> np.ndarray:
    """Sorted centroids of a weighted 1-D k-means (at most ``k``; empty clusters are dropped).

    Example:
        >>> weighted_lloyd(np.array([0.0, 0.1, 5.0, 5.2]), np.ones(4), 2).round(2).tolist()
        [0.05, 5.1]
    """
    order = np.argsort(x, kind="stable")
    x, w = x[order], w[order]
    cum = np.cumsum(w)
    centroids = np.unique(x[np.searchsorted(cum, (np.arange(k) + 0.5) / k * cum[-1]).clip(0, len(x) - 1)])
    if len(centroids) < k:  # heavy points took several quantiles: add evenly spread distinct values
        distinct = np.unique(x)
        spread = distinct[np.linspace(0, len(distinct) - 1, min(k, len(distinct))).round().astype(int)]
        extra = np.setdiff1d(spread, centroids)[: k - len(centroids)]
        centroids = np.union1d(centroids, extra)
    for _ in range(_ITERATIONS):
        cell = np.searchsorted((centroids[1:] + centroids[:-1]) / 2, x)
        total = np.bincount(cell, weights=w, minlength=len(centroids))
        moved = np.bincount(cell, weights=w * x, minlength=len(centroids))
        keep = total > 0
        new = np.sort(moved[keep] / total[keep])
        if len(new) == len(centroids) and np.allclose(new, centroids, rtol=0, atol=1e-12 * abs(x).max()):
            break
        centroids = new
    return centroids


@register_quantizer
@dataclass(frozen=True, eq=False, repr=False, kw_only=True)
class KMeans(Quantizer):
    """Cluster the means into ``64 / lam`` shared values (scale-agnostic).

    Example:
        >>> from bnncompress.posterior import TensorPosterior
        >>> from bnncompress.inmemory import fit_in_memory
        >>> t = TensorPosterior(np.array([0.0, 0.1, 5.0, 5.2], np.float32), np.ones(4, np.float32))
        >>> [round(float(v), 2) for v in fit_in_memory(KMeans(), t).quantize(lam=32).values()]  # k = 2
        [0.05, 0.05, 5.1, 5.1]
    """

    name: ClassVar[str] = "kmeans"
    default_lam: ClassVar[float] = 1.0
    blockwise: ClassVar[bool] = False
    weighted: ClassVar[bool] = False

    prune: float = 0.0

    def __post_init__(self) -> None:
        if not (is_number(self.prune) and 0.0 <= self.prune < 1.0):
            raise OptionError(f"prune must be a fraction in [0, 1), got {self.prune!r}")
        self._normalize(prune=float(self.prune))

    def statistics(self, block: Block) -> tuple[np.ndarray, np.ndarray]:
        return block.loc, block.scale

    def fit(self, shape: tuple[int, ...], stats: list[Any], rows: Rows) -> FittedKMeans:
        loc = np.concatenate([s[0] for s in stats])
        scale = np.concatenate([s[1] for s in stats])
        importance = (1.0 / scale.astype(np.float64) ** 2) if self.weighted else np.ones(len(loc))
        return FittedKMeans(shape, loc, importance, self.prune)


@register_quantizer
class WeightedKMeans(KMeans):
    """k-means with each squared error weighted by the posterior precision ``1 / scale²``
    (Gao et al. 2019's importance-weighted k-means); ``prune`` as in :class:`KMeans`."""

    name: ClassVar[str] = "weighted-kmeans"
    weighted: ClassVar[bool] = True


def _binned(x: np.ndarray, w: np.ndarray, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each value's bin among sorted ``edges`` and every bin's weight (``w`` summed)."""
    b = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, len(edges) - 2)
    return b, np.bincount(b, weights=w, minlength=len(edges) - 1)


class FittedKMeans(FittedQuantizer):
    """State at a rate: the sorted centroids."""

    def __init__(self, shape: tuple[int, ...], loc: np.ndarray, importance: np.ndarray, prune: float):
        self.shape = shape
        self.pruned = np.zeros(len(loc), dtype=bool)
        if prune > 0:
            saliency = importance * loc.astype(np.float64) ** 2
            self.pruned[np.argsort(saliency, kind="stable")[: int(prune * len(loc))]] = True
        x = loc[~self.pruned].astype(np.float64)
        w = importance[~self.pruned]
        # Fine weighted histogram: each non-empty bin becomes one point at its weighted mean.
        if len(x):
            edges = np.linspace(x.min(), x.max(), _BINS + 1)
            b, mass = _binned(x, w, edges)
            if x.max() > x.min() and np.count_nonzero(mass) * 8 < min(len(x), _BINS):  # outliers stretched the
                half = np.linspace(0.0, 1.0, _BINS // 2 + 1)  # bins over the bulk: 15 values at any lam. Half
                edges = np.unique(np.r_[np.quantile(x, half), np.interp(half, [0, 1], [x.min(), x.max()])])
                b, mass = _binned(x, w, edges)  # the edges by mass then (equal-count bins), half evenly spaced
            nz = mass > 0
            self._points = np.bincount(b, weights=w * x, minlength=len(mass))[nz] / mass[nz]
            self._mass = mass[nz]
        else:
            self._points = self._mass = np.zeros(0)
        self._centroids: dict[int, np.ndarray] = {}
        self.importance = "inverse-variance" if importance.std() else "uniform"

    def at(self, lam: float, rows: Rows) -> np.ndarray:
        k = clusters_for(lam)
        if k not in self._centroids:
            c = weighted_lloyd(self._points, self._mass, k) if len(self._points) else np.zeros(0)
            if self.pruned.any():
                c = np.union1d(c, [0.0])
            self._centroids[k] = c.astype(np.float32)
        return self._centroids[k]

    def assign(self, block: Block, state: np.ndarray) -> np.ndarray:
        nearest = np.searchsorted((state[1:].astype(np.float64) + state[:-1]) / 2, block.loc).astype(np.int32)
        if self.pruned.any():
            where = (
                block.positions
                if block.positions is not None
                else slice(block.first_row * block.row_size, block.first_row * block.row_size + len(block.loc))
            )
            nearest[self.pruned[where]] = int(np.searchsorted(state, 0.0))
        return nearest

    def grid(self, state: np.ndarray) -> np.ndarray:
        return state

    def params(self, state: np.ndarray) -> dict[str, Any]:
        return {"importance": self.importance}

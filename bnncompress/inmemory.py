"""A quantizer fitted to one tensor in memory, for direct use (tests, notebooks, recipes).

:func:`fit_in_memory` runs the pack pipeline's own :class:`~bnncompress.tensorjob.TensorJob` on
the tensor, serially in this process, so that what it fits, assigns and reconstructs is what a
pack would; :class:`InMemoryFit` adds the uncoded symbols (:meth:`InMemoryFit.quantize`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .executors import LocalExecutor
from .posterior import TensorPosterior
from .quantizers import Block, FittedQuantizer, QuantizedTensor, Quantizer, compact
from .tensorjob import KeepBudget, TensorJob


class InMemoryFit(TensorJob):
    """A :class:`~bnncompress.tensorjob.TensorJob` of a tensor in memory, named after its method:
    ``fit_in_memory(VBQ(), tensor).quantize(lam).values()``."""

    def __init__(self, quantizer: Quantizer, tensor: TensorPosterior):
        super().__init__(quantizer.name, tensor, quantizer, LocalExecutor(threads=1), KeepBudget(0), None)

    @property
    def loc(self) -> np.ndarray:
        """The tensor's means, flat."""
        return self.source.loc.reshape(-1)

    @property
    def scale(self) -> np.ndarray:
        """The tensor's scales, flat."""
        return self.source.scale.reshape(-1)

    def assign(self, lam: float) -> np.ndarray:
        """Grid indices of every weight (or sub-vector) at ``lam``, flat."""
        parts = self.rows.map(_assign, self.fitted, self.state(lam))
        return np.concatenate(parts) if parts else np.zeros(0, np.int32)

    def grid_at(self, lam: float) -> np.ndarray:
        """The grid the indices at ``lam`` refer to."""
        return self.fitted.grid(self.state(lam))

    def quantize(self, lam: float) -> QuantizedTensor:
        """Assign every weight and keep only the grid values used (per-column models: every
        column's values, and the decoded point estimate)."""
        state, f = self.state(lam), self.fitted
        params = self.params(state, lam)
        indices = self.assign(lam)
        if f.models(state) > 1:  # the values of the state the record decodes to (a class-valued record's)
            values = np.concatenate(self.rows.map(_reconstruct, f, self.tables(lam)[-1], indices))
            counts, _ = self.histogram(lam)
            return QuantizedTensor(indices, f.grid(state).reshape(f.models(state), -1), counts, params, 0, values)
        return compact(indices, f.grid(state), params, f.subvectors(state), f.values_per_symbol, in_place=True)


def fit_in_memory(quantizer: Quantizer, tensor: TensorPosterior) -> InMemoryFit:
    """Fit ``quantizer`` to a tensor in memory (every pass runs here, serially).

    Example:
        >>> from bnncompress.quantizers import Uniform
        >>> t = TensorPosterior(np.array([0.1, 0.9, 2.2], np.float32), np.ones(3, np.float32))
        >>> [round(float(v), 3) for v in fit_in_memory(Uniform(), t).quantize(0.5).values()]
        [0.0, 0.687, 2.06]
    """
    return InMemoryFit(quantizer, tensor)


def _assign(block: Block, fitted: FittedQuantizer, state: Any) -> np.ndarray:
    return fitted.assign(block, state)


def _reconstruct(block: Block, fitted: FittedQuantizer, state: Any, indices: np.ndarray) -> np.ndarray:
    start = block.first_row * block.row_size
    return fitted.reconstruct(block, indices[start : start + len(block.loc)], state)

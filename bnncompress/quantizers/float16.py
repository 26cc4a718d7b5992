"""Cast to float16: a reference point with no rate knob (the grid is every float16 value used)."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from ..errors import OptionError
from .base import Block, FittedQuantizer, Quantizer, Rows
from .registry import register_quantizer

_FLOAT16_MAX = float(np.finfo(np.float16).max)
_FLOAT16_ROUNDS_TO_INF = 65520.0  # the smallest value float16 rounding makes infinite


@register_quantizer
class Float16(Quantizer):
    """Round every mean to the nearest float16, then entropy-code the values like any grid. A tensor
    whose values cost less than that code (a small one with many distinct values) is stored as its
    float32 means, as with every method: 32 bits/weight, not float16's 16.

    Example:
        >>> from bnncompress.posterior import TensorPosterior
        >>> from bnncompress.inmemory import fit_in_memory
        >>> t = TensorPosterior(np.array([0.1, 0.1, 1 / 3], np.float32), np.ones(3, np.float32))
        >>> fit_in_memory(Float16(), t).quantize(lam=0).values().tolist()
        [0.0999755859375, 0.0999755859375, 0.333251953125]
    """

    name: ClassVar[str] = "float16"
    default_lam: ClassVar[float] = 0.0
    fixed_rate: ClassVar[bool] = True

    def statistics(self, block: Block) -> np.ndarray:
        largest = float(np.abs(block.loc).max(initial=0))
        if largest >= _FLOAT16_ROUNDS_TO_INF:  # (65519.9 rounds to 65504: it fits)
            raise OptionError(
                f"method 'float16' cannot hold values beyond +-{_FLOAT16_MAX:g} (this tensor has {largest:.3g}); "
                "use another method"
            )
        return np.unique(block.loc.astype(np.float16))

    def fit(self, shape: tuple[int, ...], stats: list[Any], rows: Rows) -> FittedFloat16:
        return FittedFloat16(shape, np.unique(np.concatenate(stats)).astype(np.float32))


class FittedFloat16(FittedQuantizer):
    def __init__(self, shape: tuple[int, ...], values: np.ndarray):
        self.shape, self.values = shape, values

    def assign(self, block: Block, state: Any) -> np.ndarray:
        return np.searchsorted(self.values, block.loc.astype(np.float16).astype(np.float32)).astype(np.int32)

    def grid(self, state: Any) -> np.ndarray:
        return self.values

    def params(self, state: Any) -> dict[str, Any]:
        return {}

"""Cast to float16: a reference point with no rate knob (the grid is every float16 value used)."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from ..errors import OptionError
from ..posterior import TensorPosterior
from .base import FittedQuantizer, Quantizer

_FLOAT16_MAX = float(np.finfo(np.float16).max)


class Float16(Quantizer):
    """Round every mean to the nearest float16, then entropy-code the values like any grid.

    Example:
        >>> import numpy as np
        >>> from bnncompress.posterior import TensorPosterior
        >>> t = TensorPosterior(np.array([0.1, 0.1, 1 / 3], np.float32), np.ones(3, np.float32))
        >>> Float16().fit(t).quantize(lam=0).values().tolist()
        [0.0999755859375, 0.0999755859375, 0.333251953125]
    """

    name: ClassVar[str] = "float16"
    default_lam: ClassVar[float] = 0.0
    fixed_rate: ClassVar[bool] = True

    def fit(self, tensor: TensorPosterior) -> FittedFloat16:
        return FittedFloat16(tensor)


class FittedFloat16(FittedQuantizer):
    def __init__(self, tensor: TensorPosterior):
        self.shape = tensor.shape
        self.loc = tensor.loc.reshape(-1)
        self.scale = tensor.scale.reshape(-1)
        largest = float(np.abs(self.loc).max())
        if largest > _FLOAT16_MAX:
            raise OptionError(
                f"method 'float16' cannot hold values beyond +-{_FLOAT16_MAX:g} (this tensor has {largest:.3g}); "
                "use another method"
            )
        self.grid = np.unique(self.loc.astype(np.float16)).astype(np.float32)
        self.params = {}

    def assign(self, lam: float, sample: np.ndarray | None = None) -> np.ndarray:
        loc = self.loc if sample is None else self.loc[sample]
        return np.searchsorted(self.grid, loc.astype(np.float16).astype(np.float32)).astype(np.int32)

"""A fit of a method from outside the package, checked where what it returns reaches an archive.

The package's own methods are trusted (their tests check them); a plug-in's ``assign`` could
return indices outside its grid (the counting kernel would write outside its table), its
``params`` could take a name the archive gives a meaning (``support``: loads would apply it as a
Pyro constraint) or hold what JSON cannot, and its side arrays could hold values their stored
type cannot (the decoder would get other values than the method chose). Each is refused with
the method's name, before anything is written.

Example:
    >>> import numpy as np
    >>> from bnncompress.quantizers import Block, get_quantizer
    >>> q = get_quantizer("uniform")
    >>> block = Block(np.array([0.0, 1.0], np.float32), np.ones(2, np.float32), row_size=2)
    >>> fit = CheckedFit(q.fit((1, 2), [q.statistics(block)], None), "uniform")
    >>> state = fit.at(1.0, None)
    >>> fit.assign(block, state).tolist() == q.fit((1, 2), [q.statistics(block)], None).assign(block, state).tolist()
    True
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from ..errors import OptionError
from ..records import side_arrays
from .base import Block, Fallback, FittedQuantizer
from .registry import RESERVED_PARAMS


def is_plugin(quantizer: Any) -> bool:
    """Whether ``quantizer``'s class is defined outside the package."""
    return not type(quantizer).__module__.startswith("bnncompress.")


class CheckedFit(Fallback):
    """``fitted`` (of method ``method``), every pass its own, with its outputs checked."""

    def __init__(self, fitted: FittedQuantizer, method: str):
        super().__init__(fitted, "", {}, fitted.stores_method_options)
        self.method = method

    @property
    def class_values(self) -> bool:  # (a per-class-values record, as the method's own fit says)
        return bool(getattr(self.fitted, "class_values", False))

    def class_moments(self, *args: Any) -> Any:
        return self.fitted.class_moments(*args)

    def _refuse(self, what: str) -> None:
        raise OptionError(f"method {self.method!r} (a plug-in) {what}; fix the method")

    def assign(self, block: Block, state: Any) -> np.ndarray:
        indices = self.fitted.assign(block, state)
        alphabet = len(self.fitted.grid(state)) // self.values_per_symbol // max(self.fitted.models(state), 1)
        ok = isinstance(indices, np.ndarray) and indices.ndim == 1 and indices.dtype.kind in "iu"
        ok = ok and len(indices) * self.values_per_symbol == len(block.loc)
        if ok and len(indices):
            ok = 0 <= int(indices.min()) and int(indices.max()) < alphabet
        if not ok:
            got = f"{type(indices).__name__} {getattr(indices, 'dtype', '')} of shape {np.shape(indices)}"
            if isinstance(indices, np.ndarray) and indices.size and indices.dtype.kind in "iuf":
                got += f" from {indices.min()} to {indices.max()}"
            self._refuse(
                f"returned from assign() a {got}; it must be a 1-D integer array of one grid index per "
                f"{self.values_per_symbol} of the block's {len(block.loc)} weights, each from 0 to {alphabet - 1}"
            )
        return indices

    def params(self, state: Any) -> dict[str, Any]:
        params = self.fitted.params(state)
        if not isinstance(params, dict):
            self._refuse(f"returned params() of type {type(params).__name__}; it must be a dict")
        clash = [k for k in RESERVED_PARAMS if k in params]
        if clash:
            self._refuse(f"returned params() with {clash[0]!r}, a name the archive reads with a meaning of its own")
        try:
            json.dumps(params)
        except (TypeError, ValueError) as exc:
            self._refuse(f"returned params() that JSON cannot store ({exc}); give plain numbers, strings and lists")
        return params

    def side_arrays(self) -> dict[str, np.ndarray]:
        side = self.fitted.side_arrays()
        stored = {array.name: np.dtype(array.dtype) for array, _ in side_arrays()}
        for name, values in side.items():
            if name not in stored:
                self._refuse(f"returned a side array {name!r} that no record kind declares")
            values = np.asarray(values)
            if not np.array_equal(values.astype(stored[name]), values):
                self._refuse(
                    f"returned side array {name!r} with values its stored type {stored[name].name} cannot hold "
                    "exactly (the decoder would get other values than the method chose); round them to it first"
                )
        return side

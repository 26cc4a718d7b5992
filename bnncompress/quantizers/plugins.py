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

import contextlib
import json
from collections.abc import Iterator
from typing import Any

import numpy as np

from ..errors import BnnCompressError, OptionError
from ..geometry import block_rows_for, num_blocks
from ..records import decoded_rotation, inverse_transform, side_arrays
from .base import Block, Fallback, FittedQuantizer
from .registry import RESERVED_PARAMS


def is_plugin(quantizer: Any) -> bool:
    """Whether ``quantizer``'s class is defined outside the package."""
    return not type(quantizer).__module__.startswith("bnncompress.")


@contextlib.contextmanager
def plugin_errors(quantizer: Any) -> Iterator[None]:
    """Within the block, an exception a plug-in's code raises (not the package's errors, memory or
    file errors) becomes one :class:`OptionError` naming the method, not a traceback."""
    try:
        yield
    except (BnnCompressError, MemoryError, OSError):
        raise
    except Exception as exc:
        if not is_plugin(quantizer):
            raise
        detail = str(exc).splitlines()[0] if str(exc) else ""
        raise OptionError(
            f"method {quantizer.name!r} (a plug-in) failed: {type(exc).__name__}: {detail:.200}; fix the method"
        ) from exc


def own_fit(fitted: FittedQuantizer) -> FittedQuantizer:
    """The fit inside the package's :class:`Fallback` wrappers (a plug-in's, if it made one)."""
    while type(fitted) is Fallback:
        fitted = fitted.fitted
    return fitted


def checked(fitted: FittedQuantizer, quantizer: Any) -> FittedQuantizer:
    """``fitted`` as :class:`CheckedFit` where a plug-in's code made it (a plug-in deriving from a
    package method may return the package's own fits: those are trusted)."""
    if not is_plugin(quantizer) or not is_plugin(own_fit(fitted)):
        return fitted
    return CheckedFit(fitted, quantizer.name, quantizer.option_names())


class CheckedFit(Fallback):
    """``fitted`` (of method ``method``), every pass its own, with its outputs checked."""

    def __init__(self, fitted: FittedQuantizer, method: str, options: list[str] = ()):
        super().__init__(fitted, "", {}, fitted.stores_method_options)
        self.method, self.options, self.assigned = method, set(options), {True: 0, False: 0}  # (by block.is_rows)

    @property
    def class_values(self) -> bool:  # (a per-class-values record, as the method's own fit says)
        return bool(getattr(self.fitted, "class_values", False))

    def class_moments(self, *args: Any) -> Any:
        return self.fitted.class_moments(*args)

    def _refuse(self, what: str) -> None:
        raise OptionError(f"method {self.method!r} (a plug-in) {what}; fix the method")

    def assign(self, block: Block, state: Any) -> np.ndarray:
        indices = self.fitted.assign(block, state)
        if self.assigned[block.is_rows] < 2:  # the first two coding blocks and samples: assigned twice, the
            self.assigned[block.is_rows] += 1  # same indices (the count and coding passes may each assign)
            if not np.array_equal(self.fitted.assign(block, state), indices):
                self._refuse(
                    "returned other indices from assign() for the same block and lambda; it must be deterministic"
                )
        alphabet = len(self.fitted.grid(state)) // self.values_per_symbol // max(self.fitted.models(state), 1)
        ok = isinstance(indices, np.ndarray) and indices.ndim == 1 and indices.dtype.kind in "iu"
        sub = self.fitted.subvectors(state)  # (product quantization: sub symbols a row)
        expected = block.num_rows * sub if sub else len(block.loc) // self.values_per_symbol
        ok = ok and len(indices) == expected
        if ok and len(indices):
            ok = 0 <= int(indices.min()) and int(indices.max()) < alphabet
        if not ok:
            got = f"{type(indices).__name__} {getattr(indices, 'dtype', '')} of shape {np.shape(indices)}"
            if isinstance(indices, np.ndarray) and indices.size and indices.dtype.kind in "iuf":
                got += f" from {indices.min()} to {indices.max()}"
            self._refuse(
                f"returned from assign() a {got}; it must be a 1-D integer array of {expected} grid indices "
                f"for the block's {len(block.loc)} weights, each from 0 to {alphabet - 1}"
            )
        return indices

    def row_classes(self, block: Block) -> np.ndarray | None:
        classes = self.fitted.row_classes(block)
        if classes is None and not self.fitted.classes:
            return None
        ok = bool(self.fitted.classes) and classes is not None
        if ok and block.is_rows:  # a coding block: each row of the class its block is coded with
            rows = block_rows_for(self.shape)
            coded = self.fitted.block_classes(num_blocks(self.shape, rows))
            own = (block.first_row + np.arange(block.num_rows)) // rows
            ok = coded is not None and np.array_equal(classes, np.asarray(coded)[own])
        if not ok:
            self._refuse(
                f"returned row_classes() that are not each row's block's class from block_classes() (classes "
                f"{self.fitted.classes}); the counts of a row's class must be those its block is coded with"
            )
        return classes

    def params(self, state: Any) -> dict[str, Any]:
        params = self.fitted.params(state)
        if not isinstance(params, dict):
            self._refuse(f"returned params() of type {type(params).__name__}; it must be a dict")
        inner = own_fit(self.fitted)  # (its own params: not the package's fallback's 'fallback')
        own = params if inner is self.fitted else inner.params(state)
        clash = [k for k in (*RESERVED_PARAMS, *sorted(self.options)) if k in own]
        if clash:
            meaning = "an option of the method" if clash[0] in self.options else "a name the archive reads"
            self._refuse(f"returned params() with {clash[0]!r}, {meaning} (a config would rebuild another method)")
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

    def reconstruct(self, block: Block, indices: np.ndarray, state: Any) -> np.ndarray:
        values = self.fitted.reconstruct(block, indices, state)
        side = self.fitted.side_arrays()
        own = type(own_fit(self.fitted)).reconstruct
        if own is not FittedQuantizer.reconstruct or self.fitted.models(state) <= 1 or "mean" not in side:
            return values
        d = len(side["mean"])  # the base class gives per-column values: what decodes adds the transform back
        return inverse_transform(values.reshape(-1, d), side["mean"], decoded_rotation(side, d)).reshape(-1)

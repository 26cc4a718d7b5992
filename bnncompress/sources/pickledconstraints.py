"""Constraints of torch and Pyro as a .pt file names them, applied in numpy.

A param store pickles each parameter's constraint beside it; :mod:`.torchzip` reads those files
without torch and records each constraint as a :class:`PickledConstraint` (module, class name,
pickled state), which :mod:`.containers` applies as Pyro's param store does
(``transform_to(constraint)(unconstrained)``). What has no numpy transform here raises
:class:`NotPlain`, and the file is read with torch instead.

Example:
    >>> c = PickledConstraint.named("pyro.distributions.constraints", "_SoftplusPositive")
    >>> c.apply(np.array([-30.0, 0.0, 30.0], np.float32)).tolist()
    [9.357622912219837e-14, 0.6931471824645996, 30.0]
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import PosteriorError

#: The constraint classes with a numpy transform here, by the module that defines them (where a .pt
#: file names them); a file naming any other is read with torch.
CONSTRAINT_CLASSES = {
    ("torch.distributions.constraints", "_Real"),
    ("torch.distributions.constraints", "_GreaterThan"),
    ("torch.distributions.constraints", "_IndependentConstraint"),
    ("pyro.distributions.constraints", "_SoftplusPositive"),
}


class NotPlain(Exception):
    """The file holds something the torch-free reading does not handle; read it with torch's safe loader."""


class PickledConstraint:
    """A torch / Pyro constraint as the file names it: its module, class name and pickled state.

    :meth:`apply` maps unconstrained values to the constrained space as Pyro's param store does
    (``transform_to``), for the constraints Pyro's guides use: the real line, ``positive`` and
    ``greater_than`` (``exp(x) + lower_bound``), ``softplus_positive`` (``log1p(exp(x))``, ``x``
    above 20), and ``independent`` of these. Computed in float64 and rounded once, so the result
    does not depend on the machine (torch's float32 kernels differ from it by at most one unit in
    the last place).
    """

    module: str = ""
    name: str = ""

    def __new__(cls, *args: Any) -> PickledConstraint:  # what pickle's NEWOBJ calls (no __init__)
        obj = super().__new__(cls)
        obj.state = {}
        return obj

    state: dict[str, Any]

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2:  # (dict, slots) from __reduce_ex__
            state = {**(state[0] or {}), **(state[1] or {})}
        if not isinstance(state, dict):
            raise NotPlain(f"constraint {self.name} with a {type(state).__name__} state")
        self.state = state

    @classmethod
    def named(cls, module: str, name: str) -> PickledConstraint:
        """A record of the constraint class ``module.name`` with no state (as pickle makes one)."""
        return type(name, (cls,), {"module": module, "name": name})()

    def __repr__(self) -> str:
        return f"PickledConstraint({self.module!r}, {self.name!r}, {self.state!r})"

    def apply(self, values: Any) -> np.ndarray:
        """``transform_to(constraint)(values)`` in numpy; raises :class:`NotPlain` for other constraints."""
        x = np.asarray(values)
        if x.dtype.kind != "f":
            raise NotPlain(f"constraint {self.name} on {x.dtype} values")
        if self.name == "_Real":
            return x
        if self.name == "_IndependentConstraint":  # elementwise the same as its base constraint
            base, seen = self, set()
            while base.name == "_IndependentConstraint" and isinstance(
                base.state.get("base_constraint"), PickledConstraint
            ):
                if id(base) in seen:
                    raise PosteriorError("a constraint in the file contains itself; re-save the param store")
                seen.add(id(base))
                base = base.state["base_constraint"]
            if base.name != "_IndependentConstraint":
                return base.apply(x)
        if self.name == "_GreaterThan" and type(self.state.get("lower_bound")) in (int, float):
            try:
                bound = x.dtype.type(float(self.state["lower_bound"]))
            except OverflowError:
                raise PosteriorError("a constraint's lower bound is too large for a float; re-save it") from None
            return _chunked(x, lambda wide: np.exp(wide).astype(x.dtype) + bound)
        if self.name == "_SoftplusPositive":
            return _chunked(x, lambda wide: np.where(wide > 20.0, wide, np.log1p(np.exp(np.minimum(wide, 20.0)))))
        raise NotPlain(f"constraint {self.name} has no numpy transform here")


def constraint_name(constraint: Any) -> str | None:
    """The class name of a torch / Pyro constraint, read with torch or without (None for none).

    Example:
        >>> constraint_name(PickledConstraint.named("pyro.distributions.constraints", "_SoftplusPositive"))
        '_SoftplusPositive'
    """
    if constraint is None:
        return None
    return constraint.name if isinstance(constraint, PickledConstraint) else type(constraint).__name__


def _chunked(x: np.ndarray, function: Any, chunk: int = 1 << 16) -> np.ndarray:
    """``function`` of ``x`` in float64, rounded once to ``x``'s dtype, a chunk at a time (so the
    float64 temporaries stay small)."""
    flat, out = x.reshape(-1), np.empty(x.shape, dtype=x.dtype)
    result = out.reshape(-1)
    with np.errstate(over="ignore"):
        for start in range(0, len(flat), chunk):
            result[start : start + chunk] = function(flat[start : start + chunk].astype(np.float64))
    return out

"""Supports of Pyro sample sites as plain JSON: a constraint's name and its parameters, never a pickle.

A guide such as AutoNormal keeps each latent site in its *unconstrained* space (where its
posterior is Gaussian, and where it is quantized); the site's support lives in the model. An
archive records it per tensor (``params["support"]``, docs/FORMAT.md) as ``{"constraint": NAME}``
plus the constraint's bounds (``lower_bound``, ``upper_bound``), and every load path returns
``biject_to(support)(value)``: the constrained posterior median.

Example:
    >>> from pyro.distributions import constraints          # doctest: +SKIP
    >>> describe(constraints.interval(0.0, 2.0))            # doctest: +SKIP
    {'constraint': 'interval', 'lower_bound': 0.0, 'upper_bound': 2.0}
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np

from .errors import ArchiveError

#: Constraints made from bounds, by their torch class name: (name, bound attributes).
_BOUNDED = {
    "_GreaterThan": ("greater_than", ("lower_bound",)),
    "_GreaterThanEq": ("greater_than_eq", ("lower_bound",)),
    "_LessThan": ("less_than", ("upper_bound",)),
    "_Interval": ("interval", ("lower_bound", "upper_bound")),
    "_HalfOpenInterval": ("half_open_interval", ("lower_bound", "upper_bound")),
}
#: Words in a site name that suggest a non-real support (a scale, a rate, a probability).
_CONSTRAINED_WORDS = re.compile(
    r"(sigma|scale|std|sd|stddev|noise|tau|precision|variance|var|rate|concentration|prob|probs|lengthscale|df|nu)$"
)

SUPPORT_UNKNOWN = "site supports unknown"
_MAX_BOUNDS = 1 << 16  # per-element bounds recorded at most (they are JSON in the manifest)
_FLOAT_MAX = float(np.finfo(np.float64).max)


def describe(constraint: Any) -> dict[str, Any] | None:
    """``constraint`` (a Pyro / torch constraint) as plain JSON; None for the real line.

    ``independent(c, n)`` is recorded as ``c`` (the same values, elementwise); tensor-valued bounds
    as nested lists (up to :data:`_MAX_BOUNDS` of them). Raises ValueError for a constraint that
    cannot be written down.
    """
    from pyro.distributions import constraints

    while isinstance(constraint, constraints.independent):
        constraint = constraint.base_constraint
    if constraint is constraints.real or constraint is constraints.real_vector:
        return None
    for name in dir(constraints):  # the singletons: positive, unit_interval, simplex, softplus_positive ...
        if not name.startswith("_") and getattr(constraints, name) is constraint:
            return {"constraint": name}
    cls = type(constraint).__name__
    if cls in _BOUNDED:
        name, bounds = _BOUNDED[cls]
        spec: dict[str, Any] = {"constraint": name}
        for bound in bounds:
            value = getattr(constraint, bound)
            if hasattr(value, "numel"):  # a tensor of bounds (Uniform(low, high) with tensors): per element
                flat = value.detach().reshape(-1)
                if flat.numel() and bool((flat == flat[0]).all()):  # one value (Uniform(zeros, ones)): a scalar
                    value = flat[0].item()  # (the same where it broadcasts; 65,536 numbers in the manifest each)
                elif value.numel() > _MAX_BOUNDS:
                    raise ValueError(f"{name} with {value.numel():,} bounds (over {_MAX_BOUNDS:,}) is not recorded")
                else:
                    value = value.detach().cpu().double().tolist()
            spec[bound] = float(value) if isinstance(value, (int, float)) else value
        return spec
    raise ValueError(f"the constraint {constraint!r} cannot be recorded")


def check_bound_shapes(spec: Any, shape: tuple[int, ...], where: str) -> None:
    """ArchiveError if a per-element bound of ``spec`` does not broadcast to the stored ``shape``
    (a forged (2, 4, 3) bound turned a (4, 3) tensor into (2, 4, 3) on load); numpy only, at read time."""
    bounds = (
        [v for k, v in spec.items() if k.endswith("_bound") and isinstance(v, list)] if isinstance(spec, dict) else []
    )
    for value in bounds:
        try:
            fits = np.broadcast_shapes(np.shape(np.asarray(value, dtype=np.float64)), shape) == tuple(shape)
        except (ValueError, TypeError, OverflowError):  # ragged, not numbers, or shapes that do not broadcast
            fits = False
        if not fits:
            raise ArchiveError(
                f"{where}: a bound of its support does not fit its shape {tuple(shape)}; the archive is damaged"
            )


def constraint_of(spec: Any, where: str) -> Any:
    """The Pyro constraint a recorded ``spec`` describes; ArchiveError if it is not one, or not one
    that values can be mapped into (a discrete support, a bound that is not a finite number,
    an empty interval)."""
    from pyro.distributions import constraints
    from torch.distributions import biject_to

    name = spec.get("constraint") if isinstance(spec, dict) else None
    known = {n for n, _ in _BOUNDED.values()}
    if name in known:
        bounds = next(b for n, b in _BOUNDED.values() if n == name)
        values = [_bound(spec.get(b)) for b in bounds]
        if any(v is None for v in values):
            raise ArchiveError(
                f"{where}: support {spec!r:.200} lacks finite {', '.join(bounds)}; the archive is damaged"
            )
        if len(values) == 2:
            import torch

            low, high = (torch.as_tensor(v, dtype=torch.float64) for v in values)
            try:
                empty = not bool((low < high).all())
            except RuntimeError:  # bounds of shapes that do not broadcast
                empty = True
            if empty:
                raise ArchiveError(f"{where}: support {spec!r:.200} is an empty interval; the archive is damaged")
        value = getattr(constraints, name)(*values)
    else:
        value = getattr(constraints, name, None) if isinstance(name, str) and not name.startswith("_") else None
        if not isinstance(value, constraints.Constraint):
            raise ArchiveError(f"{where}: unknown support {spec!r:.200}; a newer bnncompress may read it")
    try:
        biject_to(value)
    except NotImplementedError:  # e.g. a discrete support: no continuous value maps into it
        raise ArchiveError(
            f"{where}: support {spec!r:.200} is not one a continuous value maps into; the archive is damaged"
        ) from None
    return value


def _bound(value: Any) -> Any:
    """A recorded bound as a constraint takes it: a finite float, or a float64 tensor of finite floats
    from a nested list (per-element bounds); None if it is neither."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value) if abs(value) <= _FLOAT_MAX else None  # (not NaN; 10**400 compares without overflow)
    if not isinstance(value, list):
        return None
    flat, stack = [], [value]
    while stack:  # the nesting is checked by numpy below (ragged lists fail there)
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, (int, float)) and not isinstance(item, bool) and math.isfinite(item):
            flat.append(item)
        else:
            return None
        if len(flat) > _MAX_BOUNDS:
            return None
    import torch

    try:
        return torch.as_tensor(np.array(value, dtype=np.float64))
    except ValueError:  # ragged
        return None


def is_elementwise(constraint: Any) -> bool:
    """Whether ``constraint``'s transform maps each value on its own (``positive``, bounds), so rows can be
    decoded one by one; not ``simplex``, ``ordered_vector``, ``corr_cholesky`` (across a row, or reshaping)."""
    from torch.distributions import biject_to

    transform = biject_to(constraint)
    return not (transform.domain.event_dim or transform.codomain.event_dim)


def constrain(spec: Any, values: np.ndarray, where: str) -> np.ndarray:
    """``biject_to(support)(values)`` in float64 (values keep their shape unless the transform
    changes it, as ``simplex`` adds one entry to the last dimension); ArchiveError where the
    support does not fit the values' shape (a vector support on a scalar)."""
    return apply_constraint(constraint_of(spec, where), values, where)


def apply_constraint(
    constraint: Any, values: np.ndarray, where: str, rows: np.ndarray | None = None, shape: tuple | None = None
) -> np.ndarray:
    """:func:`constrain` with the constraint built (:func:`constraint_of`); ``rows``: ``values`` are
    those rows (along the first dimension) of a tensor of ``shape``, so bounds given per element
    are taken at those rows (a server's cache fills a few rows at a time)."""
    import torch
    from torch.distributions import biject_to

    if rows is not None and type(constraint).__name__ in _BOUNDED:
        constraint = _at_rows(constraint, np.asarray(rows), tuple(shape or ()))
    transform = biject_to(constraint)
    with torch.no_grad():
        try:
            steps = _elementwise_steps(transform)
            if steps is not None:
                return _apply_steps(steps, np.asarray(values, dtype=np.float64, order="C"))
            return transform(torch.as_tensor(np.asarray(values, dtype=np.float64))).numpy()
        except (IndexError, ValueError, RuntimeError) as exc:
            detail = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
            raise ArchiveError(
                f"{where}: support {constraint!r:.200} does not fit a tensor of shape {np.shape(values)} ({detail}); "
                "the archive is damaged"
            ) from None


def _elementwise_steps(transform: Any) -> list[tuple[str, Any, Any]] | None:
    """The steps of an elementwise ``transform`` that numpy evaluates (exp, sigmoid, softplus, affine), or None.
    torch's float64 sigmoid and softplus take a vectorised path for most values and a scalar one for the last few,
    so a value's last bit depended on how many were transformed at once: rows served alone differed from the
    whole tensor's in 14-83 of 20,000 values. numpy's give each value the same bits however many there are."""
    from torch.distributions import transforms as T

    parts = transform.parts if isinstance(transform, T.ComposeTransform) else [transform]
    steps = []
    for part in parts:
        if isinstance(part, T.AffineTransform) and not part.event_dim:
            steps.append(("affine", *(np.asarray(v, dtype=np.float64) for v in (part.loc, part.scale))))
        elif type(part) in (T.ExpTransform, T.SigmoidTransform) or _is_softplus(part):
            steps.append((type(part).__name__, None, None))
        else:  # (the identity is a ComposeTransform of no parts)
            return None
    return steps


def _is_softplus(part: Any) -> bool:
    """torch's SoftplusTransform, or Pyro's (``softplus_positive``'s): both ``F.softplus(x)``."""
    from torch.distributions import transforms as T

    return type(part) is T.SoftplusTransform or (
        type(part).__name__ == "SoftplusTransform" and type(part).__module__.startswith("pyro.distributions")
    )


def _apply_steps(steps: list[tuple[str, Any, Any]], x: np.ndarray) -> np.ndarray:
    """``x`` through :func:`_elementwise_steps`, as torch defines each step (sigmoid clipped to (tiny, 1 - eps))."""
    finfo = np.finfo(np.float64)
    with np.errstate(over="ignore", under="ignore"):
        for name, loc, scale in steps:
            if name == "affine":
                x = loc + scale * x
            elif name == "ExpTransform":
                x = np.exp(x)
            elif name == "SigmoidTransform":
                x = np.clip(1.0 / (1.0 + np.exp(-x)), finfo.tiny, 1.0 - finfo.eps)
            else:  # SoftplusTransform: torch's softplus (beta 1, threshold 20)
                x = np.where(x > 20.0, x, np.log1p(np.exp(np.minimum(x, 20.0))))
    return np.asarray(x, dtype=np.float64)


def _at_rows(constraint: Any, rows: np.ndarray, shape: tuple) -> Any:
    """``constraint`` with each bound that has one entry per row of a tensor of ``shape`` taken at ``rows``."""
    import torch
    from pyro.distributions import constraints

    name, attributes = _BOUNDED[type(constraint).__name__]
    bounds = []
    for attribute in attributes:
        bound = getattr(constraint, attribute)
        if isinstance(bound, torch.Tensor) and shape and bound.dim() == len(shape) and bound.shape[0] == shape[0] > 1:
            bound = bound[torch.as_tensor(rows, dtype=torch.long)]
        bounds.append(bound)
    return getattr(constraints, name)(*bounds)


def site_supports(sites: Any, where: str, warnings: list[str]) -> dict[str, dict[str, Any]]:
    """``{name: spec}`` for ``(name, support)`` pairs whose support is not the real line; a
    support that cannot be recorded is reported in ``warnings`` (that site stays unconstrained)."""
    supports = {}
    for name, support in sites:
        try:
            spec = describe(support)
        except ValueError as exc:
            warnings.append(f"{where}: site '{name}' is returned unconstrained: {exc}")
            continue
        if spec is not None:
            supports[name] = spec
    return supports


IGNORED = "ignored "


def has_bounds(support: Any) -> bool:
    """The support is made from bounds (greater_than, interval, ...), possibly ``independent``."""
    return type(getattr(support, "base_constraint", support)).__name__ in _BOUNDED


def ignored_warning(keys: list[Any]) -> str:
    """The warning for a param store's parameters that are no guide loc/scale pair."""
    listed = ", ".join(map(str, keys[:5])) + (" ..." if len(keys) > 5 else "")
    return f"{IGNORED}{len(keys)} parameter(s) that are not guide loc/scale pairs: {listed}"


def messenger_warning(guide: str) -> str:
    """The warning for AutoNormal-like ``<guide>.locs.X`` / ``.scales.X`` whose scales are constrained positive,
    as an AutoMessenger's are (AutoNormal's are softplus_positive)."""
    return (
        f"the scales of guide '{guide}' are constrained positive, not softplus_positive as AutoNormal's: "
        "if it is an AutoRegressiveMessenger, its locs and scales act on a prior draw and the values packed are "
        "wrong (an AutoNormalMessenger's are right); pack an AutoNormal guide instead"
    )


def unknown_support_warning(names: list[str]) -> str | None:
    """The one warning for Pyro sites ``names`` read without their model (None for none): a param store
    does not record supports, so every site loads unconstrained; the names that suggest a non-real
    support are named."""
    if not names:
        return None
    suspects = [n for n in names if any(_CONSTRAINED_WORDS.search(w) for w in re.split(r"[^A-Za-z0-9]+|_", n) if w)]
    likely = f" ({', '.join(suspects[:10])}{' ...' if len(suspects) > 10 else ''} by their names)" if suspects else ""
    return (
        f"{SUPPORT_UNKNOWN}: a Pyro param store keeps latent sites unconstrained and does not record their "
        f"supports, so every site loads as stored: right for real-valued sites, but a positive, bounded or "
        f"simplex site{likely} loads unconstrained (e.g. the log of a positive site); pass the model: "
        "pack(path, model=model) in Python, --model pkg.module:attr on the command line"
    )

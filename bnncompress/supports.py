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

import functools
import math
import re
from typing import Any

import numpy as np

from .errors import ArchiveError, ArgumentTypeError, PosteriorError
from .posterior import FLAT_LATENT_NAME, Posterior, TensorPosterior

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
                if value.numel() > _MAX_BOUNDS:
                    raise ValueError(f"{name} with {value.numel():,} bounds (over {_MAX_BOUNDS:,}) is not recorded")
                value = value.item() if value.numel() == 1 else value.detach().cpu().double().tolist()
            spec[bound] = float(value) if isinstance(value, (int, float)) else value
        return spec
    raise ValueError(f"the constraint {constraint!r} cannot be recorded")


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
        return float(value) if math.isfinite(value) else None
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
            return transform(torch.as_tensor(np.asarray(values, dtype=np.float64))).numpy()
        except (IndexError, ValueError, RuntimeError) as exc:
            detail = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
            raise ArchiveError(
                f"{where}: support {constraint!r:.200} does not fit a tensor of shape {np.shape(values)} ({detail}); "
                "the archive is damaged"
            ) from None


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


def model_sites(
    model: Any,
    model_args: tuple = (),
    model_kwargs: dict | None = None,
    held: set[str] | None = None,
    warnings: list[str] | None = None,
) -> list[tuple[str, Any, Any]]:
    """``(name, support, unconstrained shape)`` of every continuous latent (unobserved) sample site
    of ``model``, traced with ``model_args`` at its feasible point (every site at 0 unconstrained, as
    AutoNormal's prototype with its default initialization; no draw from the prior, and the caller's
    random state and param store are left as they were): a callable (or a PyroModule) model, in trace
    order (the order of an AutoContinuous guide's flat latent), a subsampled plate's dimension at its
    full size (as AutoNormal's parameters). Discrete sites are left out (no continuous guide holds them),
    unless ``held`` names them: then PosteriorError. Sites whose bounds depend on other sites (they move
    in a second trace at a random point) are named in ``warnings``."""
    from torch.distributions import biject_to

    trace = _trace_model(model, model_args, model_kwargs, random=False)
    sites = []
    for name, site in trace.nodes.items():
        if site["type"] != "sample" or site["is_observed"] or site["infer"].get("is_auxiliary"):
            continue
        if type(site["fn"]).__name__ == "_Subsample":
            continue
        support = site["fn"].support
        try:
            unconstrained = biject_to(support).inv(site["value"])
        except NotImplementedError:  # a discrete (integer or boolean) site: no continuous posterior
            if held and name in held:
                raise PosteriorError(
                    f"sample site '{name}' of the model is discrete ({type(support).__name__.lstrip('_')}), "
                    "but the posterior has a tensor of that name; pack only continuous sites"
                ) from None
            continue
        shape = list(unconstrained.shape)
        event_dim = site["fn"].event_dim + unconstrained.dim() - site["value"].dim()
        for frame in site["cond_indep_stack"]:  # a subsampled plate: the guide holds every element
            if frame.dim is not None and frame.full_size is not None and frame.full_size != frame.size:
                if -len(shape) <= frame.dim - event_dim < 0:
                    shape[frame.dim - event_dim] = frame.full_size
        sites.append((name, support, tuple(shape)))
    if warnings is not None and any(_bounded(s) for _, s, _ in sites):
        other = _trace_model(model, model_args, model_kwargs, random=True).nodes
        moved = [n for n, s, _ in sites if _bounded(s) and n in other and _spec(other[n]["fn"].support) != _spec(s)]
        if moved:
            warnings.append(
                f"the bounds of site(s) {', '.join(moved[:10])} depend on other sites of the model; they are "
                "recorded at the model's feasible point (as AutoNormal's default initialization), which may "
                "not be the bounds at the posterior"
            )
    return sites


def _trace_model(model: Any, model_args: tuple, model_kwargs: dict | None, random: bool) -> Any:
    """One trace of ``model`` at its feasible point, or (``random``) at a random point of (-2, 2) unconstrained."""
    import pyro
    import torch
    from pyro.infer.autoguide.initialization import InitMessenger
    from pyro.util import get_rng_state, set_rng_state

    state, store = get_rng_state(), pyro.get_param_store()
    before = set(store.keys())
    try:
        init = functools.partial(_initial_point, random=random)
        with torch.no_grad(), pyro.poutine.block(hide_types=["param"]):
            return pyro.poutine.trace(InitMessenger(init)(model)).get_trace(*model_args, **(model_kwargs or {}))
    except (Exception, SystemExit) as exc:  # the user's code: any error (or a sys.exit), said in one line
        detail = str(exc).splitlines()[0] if str(exc) else ""  # (Pyro appends the trace's shapes)
        raise PosteriorError(
            f"calling the model to find its sample sites failed ({type(exc).__name__}: {detail}); "
            "give the arguments it needs as «model_args»"
        ) from None
    finally:
        set_rng_state(state)  # the user's next draws stay the same
        for key in set(store.keys()) - before:  # parameters the model registered (a PyroParam): not ours to keep
            del store[key]


def _initial_point(site: dict, random: bool) -> Any:
    """A latent site's value at 0 unconstrained (or uniform in (-2, 2)); a discrete site's draw from its prior."""
    import torch
    from torch.distributions import transform_to

    fn = site["fn"]
    try:
        t = transform_to(fn.support)
        shape = t.inverse_shape(fn.shape())
    except NotImplementedError:
        return fn.sample().detach()
    at = torch.rand(shape) * 4 - 2 if random else torch.zeros(shape)
    return t(at)


def _bounded(support: Any) -> bool:
    return type(getattr(support, "base_constraint", support)).__name__ in _BOUNDED


def _spec(support: Any) -> Any:
    try:
        return describe(support)
    except ValueError:
        return None


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


def with_model(posterior: Any, model: Any, model_args: tuple = (), model_kwargs: dict | None = None) -> Any:
    """``posterior`` with the supports of ``model``'s latent sites recorded, and a flat
    AutoDiagonalNormal-style ``latent`` split into the model's sites that the posterior does not
    already hold (their unconstrained shapes, in trace order: the guide's ``_unpack_latent``
    layout; an AutoGuideList's other parts hold the rest). A flat ``latent`` of every site beside
    per-site parameters (two guides of the same sites in one store) is refused: which was trained is unknown."""
    if not callable(model):
        kind = type(model).__name__
        raise ArgumentTypeError(f"«model» must be a Pyro model (a callable or a PyroModule), not a {kind}")
    warnings = [w for w in posterior.warnings if not w.startswith(SUPPORT_UNKNOWN)]
    sites = model_sites(model, tuple(model_args), model_kwargs, held=set(posterior.tensors), warnings=warnings)
    tensors = dict(posterior.tensors)
    missing = [(name, shape) for name, _, shape in sites if name not in tensors]
    doubled = [name for name, _, _ in sites if name in tensors]
    everything = sum(int(np.prod(shape, dtype=np.int64)) for _, _, shape in sites)
    if FLAT_LATENT_NAME in tensors and doubled and tensors[FLAT_LATENT_NAME].size == everything:
        raise PosteriorError(  # which of the two was trained cannot be told from the store
            f"the param store holds two guides of the same sites: a flat '{FLAT_LATENT_NAME}' of all {everything} "
            f"values and per-site parameters of {', '.join(doubled[:5])}{' ...' if len(doubled) > 5 else ''} "
            "(one left from an earlier try?); clear the store (pyro.clear_param_store()) before training, "
            "or pack the guide"
        )
    if FLAT_LATENT_NAME in tensors and missing and not any(name == FLAT_LATENT_NAME for name, _, _ in sites):
        flat = tensors[FLAT_LATENT_NAME].load()
        sizes = [int(np.prod(shape, dtype=np.int64)) for _, shape in missing]
        if sum(sizes) != flat.size:
            raise PosteriorError(
                f"the flat '{FLAT_LATENT_NAME}' has {flat.size} values but the model's latent sites it would "
                f"hold ({', '.join(n for n, _ in missing[:5])}{' ...' if len(missing) > 5 else ''}) have "
                f"{sum(sizes)}; pass the model the guide was trained with (and its model_args)"
            )
        loc, scale, start = flat.loc.reshape(-1), flat.scale.reshape(-1), 0
        split = {}
        for (name, shape), size in zip(missing, sizes):
            split[name] = TensorPosterior(
                loc[start : start + size].reshape(shape), scale[start : start + size].reshape(shape), flat.dtype
            )
            start += size
        position = list(tensors).index(FLAT_LATENT_NAME)
        items = list(tensors.items())
        tensors = dict(items[:position] + list(split.items()) + items[position + 1 :])
    warnings = [w for w in warnings if f"'{FLAT_LATENT_NAME}'" not in w]  # split, or (below) not a site
    known = {name for name, _, _ in sites}
    strangers = [n for n in tensors if n not in known]
    if strangers:
        warnings.append(
            f"tensor(s) {', '.join(strangers[:10])} are not latent sample sites of the model; "
            "their supports are unknown and they load as stored"
        )
    unlike = [(n, shape) for n, _, shape in sites if n in tensors and tuple(tensors[n].shape) != shape]
    if unlike:  # another model's store: its supports would not fit the values
        warnings.append(
            "tensor(s) "
            + ", ".join(f"{n} {tuple(tensors[n].shape)} (the model's site: {shape})" for n, shape in unlike[:5])
            + " do not have the shape of the model's site; they load as stored: was the guide trained on this model?"
        )
    fitting = [(n, s) for n, s, shape in sites if n in tensors and (n, shape) not in unlike]
    supports = site_supports(fitting, "model", warnings)
    return Posterior(tensors, posterior.vocab, posterior.source, warnings, supports)

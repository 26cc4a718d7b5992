"""A Pyro model's latent sites, and a posterior read from a param store fitted to them.

:func:`with_model` records each site's support (:mod:`bnncompress.supports`), splits a flat
AutoDiagonalNormal-style ``latent`` into the model's sites, and takes an AutoGuideList's AutoDelta
parts as point estimates; :func:`model_sites` traces the model once at its feasible point.
"""

from __future__ import annotations

import functools
import sys
import threading
from typing import Any

import numpy as np

from .contents import support_text
from .errors import ArgumentTypeError, PosteriorError
from .forksafe import renew_after_fork, runs_alone
from .modulebuffers import buffers_kept
from .posterior import FLAT_LATENT_NAME, Posterior, TensorPosterior
from .supports import IGNORED, SUPPORT_UNKNOWN, describe, has_bounds, ignored_warning, site_supports


def model_sites(
    model: Any,
    model_args: tuple = (),
    model_kwargs: dict | None = None,
    held: set[str] | None = None,
    warnings: list[str] | None = None,
    moved: set[str] | None = None,
) -> list[tuple[str, Any, Any]]:
    """``(name, support, unconstrained shape)`` of every continuous latent (unobserved) sample site
    of ``model``, traced with ``model_args`` at its feasible point (every site at 0 unconstrained, as
    AutoNormal's prototype with its default initialization; no draw from the prior; the caller's random
    state, where no other thread runs, and param store left as they were): a callable (or a PyroModule) model, in
    trace order (the order of an AutoContinuous guide's flat latent), a subsampled plate's dimension at its
    full size (as AutoNormal's parameters). Discrete sites are left out (no continuous guide holds them),
    unless ``held`` names them: then PosteriorError. Sites whose bounds depend on other sites (they move
    in a second trace at a random point) are named in ``warnings`` and added to ``moved``."""
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
    if (warnings is not None or moved is not None) and any(has_bounds(s) for _, s, _ in sites):
        other = _trace_model(model, model_args, model_kwargs, random=True).nodes
        dependent = [
            n for n, s, _ in sites if has_bounds(s) and n in other and _spec(other[n]["fn"].support) != _spec(s)
        ]
        if moved is not None:
            moved.update(dependent)
        if dependent and warnings is not None:
            warnings.append(
                f"the bounds of site(s) {', '.join(dependent[:10])} depend on other sites of the model; they are "
                "recorded at the model's feasible point (as AutoNormal's default initialization), which may "
                "not be the bounds at the posterior"
            )
    return sites


#: Pyro's handler stack is the process's: two traces at once (packs with a model in two threads) put one model's
#: sites in the other's trace, or in none (a positive site then loaded as its log). They run one at a time.
_TRACING = threading.Lock()
_CALLERS: list = []  # the handler stack a trace running now will give back (for a child forked meanwhile)


def _after_fork() -> None:  # a child forked during another thread's trace: that trace never ends in it
    global _TRACING
    if _CALLERS:
        import pyro

        pyro.poutine.runtime._PYRO_STACK[:] = _CALLERS[0]  # (not the tracer's handlers)
    _CALLERS.clear()
    _TRACING = threading.Lock()


renew_after_fork(sys.modules[__name__])


def _trace_model(model: Any, model_args: tuple, model_kwargs: dict | None, random: bool) -> Any:
    """One trace of ``model`` at its feasible point, or (``random``) at a random point of (-2, 2) unconstrained."""
    with _TRACING:
        return _trace_alone(model, model_args, model_kwargs, random)


def _trace_alone(model: Any, model_args: tuple, model_kwargs: dict | None, random: bool) -> Any:
    import pyro
    import torch
    from pyro.infer.autoguide.initialization import InitMessenger
    from pyro.util import get_rng_state, set_rng_state

    state, store, made = get_rng_state(), pyro.get_param_store(), _param_names()
    before = set(store.keys())
    handlers = pyro.poutine.runtime._PYRO_STACK  # the caller's (a condition, a trace): not applied to this run,
    outer = handlers[:]  # which they would change (an observed site not found) or record (an outer trace)
    _CALLERS[:] = [outer]
    handlers.clear()
    try:
        init = functools.partial(_initial_point, random=random)
        with (
            torch.no_grad(),
            pyro.poutine.block(hide_types=["param"]),
            made,
            buffers_kept(model),  # (BatchNorm's running statistics, as they were)
        ):
            return pyro.poutine.trace(InitMessenger(init)(model)).get_trace(*model_args, **(model_kwargs or {}))
    except (Exception, SystemExit) as exc:  # the user's code: any error (or a sys.exit), said in one line
        detail = str(exc).splitlines()[0] if str(exc) else ""  # (Pyro appends the trace's shapes)
        raise PosteriorError(
            f"calling the model to find its sample sites failed ({type(exc).__name__}: {detail}); "
            "give the arguments it needs as «model_args» (keyword ones: pass functools.partial(model, x=...))"
        ) from None
    finally:
        handlers[:] = outer
        _CALLERS.clear()
        if runs_alone():  # the user's next draws stay the same (but not another thread's, which would come again)
            set_rng_state(state)
        for key in (set(store.keys()) - before) & made.names:  # the model registered them (a PyroParam): not ours
            del store[key]  # to keep (those another thread made meanwhile stay)


def _param_names() -> Any:
    from pyro.poutine.messenger import Messenger

    class ParamNames(Messenger):
        """Records the names of the params the run makes (inside the block that hides them from the caller's), in
        this thread (Pyro's handler stack is the process's: another thread's params pass through it meanwhile)."""

        def __init__(self) -> None:
            super().__init__()
            self.names: set[str] = set()
            self.thread = threading.get_ident()

        def _process_message(self, msg: dict) -> None:
            if msg["type"] == "param" and threading.get_ident() == self.thread:
                self.names.add(msg["name"])

    return ParamNames()


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


def _spec(support: Any) -> Any:
    try:
        return describe(support)
    except ValueError:
        return None


#: The scale a point estimate (an AutoDelta's site) is packed with, relative to its size (at least 1).
POINT_SCALE = 1e-4


def _point_estimates(points: dict[str, Any], sites: list, tensors: dict) -> dict[str, tuple[str, TensorPosterior]]:
    """``{site: (key, tensor)}`` for the model's sites no tensor holds that a ``<guide>.<site>`` parameter does
    (an AutoDelta's, stored unconstrained by ``transform_to(support)``): unconstrained by ``biject_to(support)``
    as every site is, with a scale of :data:`POINT_SCALE` of their size."""
    import torch
    from torch.distributions import biject_to, transform_to

    found = {}
    wanted = {name: (support, shape) for name, support, shape in sites if name not in tensors}
    for key, stored in points.items():
        name = _point_site(key, wanted)
        if name is None or name in found:
            continue
        support, shape = wanted[name]
        stored = stored if isinstance(stored, torch.Tensor) else torch.as_tensor(np.asarray(stored))
        if not stored.is_floating_point():
            continue
        with torch.no_grad():
            loc = biject_to(support).inv(transform_to(support)(stored.double())).numpy()
        if tuple(loc.shape) == shape and np.isfinite(loc).all():
            dtype = str(stored.dtype).replace("torch.", "")
            scale = POINT_SCALE * np.maximum(1.0, np.abs(loc))
            found[name] = (key, TensorPosterior(loc.astype(np.float32), scale.astype(np.float32), dtype))
    return found


def _point_site(key: str, wanted: dict) -> str | None:
    """The site a ``<guide>.<site>`` key names: its guide is its first name, with an AutoGuideList's part
    number (``AutoGuideList.1``); sites may have dots and digits in their names (``1.0.weight``)."""
    first, _, rest = key.partition(".")
    part, _, inner = rest.partition(".")
    listed = inner if first == "AutoGuideList" and part.isdigit() else None
    for name in (listed, rest) if listed is not None else (rest,):
        if name in wanted:
            return name
    return None


#: Constraints that map the real line the same way (biject_to) as another one.
_SAME_TRANSFORM = {"nonnegative": "positive", "greater_than_eq": "greater_than"}


def _refuse_other_supports(names: list[str], own: dict, modelled: dict, moved: set[str]) -> None:
    """Refuse a model given with a live guide (its ``own`` supports, from the model it traced) that gives one of
    its sites ``names`` another support (``modelled``): another model. Bounds that depend on other sites
    (``moved``) may differ (the guide records them at another point); positive and nonnegative, greater_than and
    greater_than_eq, are the same (one transform)."""

    def spec(supports: dict, name: str) -> dict:
        spec = dict(supports.get(name) or {"constraint": "real"})
        spec["constraint"] = _SAME_TRANSFORM.get(spec["constraint"], spec["constraint"])
        return spec if name not in moved else {"constraint": spec["constraint"]}

    differ = [n for n in names if spec(own, n) != spec(modelled, n)]
    if differ:
        text = {n: (support_text(modelled.get(n)), support_text(own.get(n))) for n in differ[:5]}
        shown = ", ".join(f"{n} ({new or 'real'}; the guide's {old or 'real'})" for n, (new, old) in text.items())
        raise PosteriorError(
            f"the model gives the guide's site(s) other supports than the model the guide traced: {shown}; "
            "give the model the guide was trained with, or none (a live guide knows its model)"
        )


def with_model(
    posterior: Any, model: Any, model_args: tuple = (), model_kwargs: dict | None = None, own_supports: bool = False
) -> Any:
    """``posterior`` with the supports of ``model``'s latent sites recorded, and a flat
    AutoDiagonalNormal-style ``latent`` split into the model's sites that the posterior does not
    already hold (their unconstrained shapes, in trace order: the guide's ``_unpack_latent``
    layout; an AutoGuideList's other parts hold the rest). A flat ``latent`` of every site beside
    per-site parameters (two guides of the same sites in one store) is refused: which was trained is unknown.
    ``own_supports``: the posterior's supports are its live guide's own, and a model that gives a site another
    is refused."""
    if not callable(model):
        kind = type(model).__name__
        raise ArgumentTypeError(f"«model» must be a Pyro model (a callable or a PyroModule), not a {kind}")
    warnings = [w for w in posterior.warnings if not w.startswith(SUPPORT_UNKNOWN)]
    moved: set[str] = set()
    sites = model_sites(model, tuple(model_args), model_kwargs, set(posterior.tensors), warnings, moved)
    if not sites:  # (a PyroModule class where an instance was meant, a model of observed sites only)
        raise PosteriorError(
            f"the model {getattr(model, '__name__', type(model).__name__)} samples no continuous latent site when "
            "called; give the function or module instance that runs the model (a class is neither)"
        )
    tensors = dict(posterior.tensors)
    latent_site = next((shape for name, _, shape in sites if name == FLAT_LATENT_NAME), None)
    flat_guide = FLAT_LATENT_NAME in tensors and tuple(tensors[FLAT_LATENT_NAME].shape) != latent_site  # (a site
    # may be named 'latent' itself: then the tensor of that name is the site's, or a flat guide's that holds it)
    points = _point_estimates(posterior.points, sites, tensors)
    if points:  # an AutoDelta's sites (an AutoGuideList's MAP part): they count as held
        tensors.update({name: tensor for name, (_, tensor) in points.items()})
        left = [k for k in posterior.points if k not in {key for key, _ in points.values()}]
        warnings = [w for w in warnings if not w.startswith(IGNORED)] + ([ignored_warning(left)] if left else [])
        warnings.append(
            f"site(s) {', '.join(list(points)[:10])} are point estimates (an AutoDelta's: no posterior scale); "
            f"packed as near-certain, with a scale of {POINT_SCALE:g} of their size"
        )
    missing = [(n, shape) for n, _, shape in sites if n not in tensors or (flat_guide and n == FLAT_LATENT_NAME)]
    doubled = [n for n, _, _ in sites if n in tensors and not (flat_guide and n == FLAT_LATENT_NAME)]
    everything = sum(int(np.prod(shape, dtype=np.int64)) for _, _, shape in sites)
    if flat_guide and doubled and tensors[FLAT_LATENT_NAME].size == everything:
        raise PosteriorError(  # which of the two was trained cannot be told from the store
            f"the param store holds two guides of the same sites: a flat '{FLAT_LATENT_NAME}' of all {everything} "
            f"values and per-site parameters of {', '.join(doubled[:5])}{' ...' if len(doubled) > 5 else ''} "
            "(one left from an earlier try?); clear the store (pyro.clear_param_store()) before training, "
            "or pack the guide"
        )
    if flat_guide and missing:
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
    strangers = [n for n in tensors if n not in known and n not in posterior.supports]  # (a store's own record)
    if strangers:
        warnings.append(
            f"tensor(s) {', '.join(strangers[:10])} are not latent sample sites of the model; "
            "their supports are unknown and they load as stored"
        )
    unheld = [name for name, _, _ in sites if name not in tensors]
    parts = [n for n in tensors if n.endswith(f".{FLAT_LATENT_NAME}")]  # (an AutoGuideList's flat parts: at
    if unheld:  # least two, else the one is named latent; one such name is a site's own)
        where = (
            f"may be in the flat parts {', '.join(parts[:5])}, which are not split into sites (which part holds "
            "which site is not in the store; an AutoGuideList with one flat part is split)"
            if len(parts) > 1
            else "are in no tensor of the posterior"
        )
        warnings.append(
            f"the model's latent site(s) {', '.join(unheld[:10])} {where}: a model conditioned on the archive "
            "samples them from their priors"
        )
    unlike = [(n, shape) for n, _, shape in sites if n in tensors and tuple(tensors[n].shape) != shape]
    if unlike:  # another model's store: its supports would not fit the values
        warnings.append(
            "tensor(s) "
            + ", ".join(f"{n} {tuple(tensors[n].shape)} (the model's site: {shape})" for n, shape in unlike[:5])
            + " do not have the shape of the model's site; they load as stored: was the guide trained on this model?"
        )
    fitting = [(n, s) for n, s, shape in sites if n in tensors and (n, shape) not in unlike]
    recorded = {n: spec for n, spec in posterior.supports.items() if n in tensors and n not in known}
    supports = {**recorded, **site_supports(fitting, "model", warnings)}
    if own_supports:
        _refuse_other_supports(list(posterior.tensors), posterior.supports, supports, moved)
    return Posterior(tensors, posterior.vocab, posterior.source, warnings, supports)

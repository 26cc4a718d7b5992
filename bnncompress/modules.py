"""Point estimates back into models: torch modules, PyroModules whose weights are ``PyroSample``
sites, and Pyro models conditioned on an archive (:meth:`bnncompress.Archive.load_into`,
:meth:`bnncompress.Archive.condition`)."""

from __future__ import annotations

import warnings
from typing import Any

from .errors import ArgumentTypeError, ModelMismatchError, QualityWarning


def _pyro_sample_sites(module: Any, site_names: bool = True) -> dict[str, tuple[Any, str]]:
    """``{name: (submodule, attribute)}`` of a PyroModule's ``PyroSample`` attributes, and of those an earlier
    load_into made buffers (a second load_into fills them again), under every name they have: the site name Pyro
    samples them as (``site_names``: the submodule's Pyro name, which a root ``PyroModule(name=...)`` prefixes; a
    shared layer's is its last path), then each module path (a layer used under two names has two) that is not
    already a site's name."""
    found: dict[str, tuple[Any, str]] = {}
    paths = []
    for prefix, sub in module.named_modules(remove_duplicate=False):
        for attr in [*getattr(sub, "_pyro_samples", {}), *getattr(sub, _FIXED, ())]:
            pyro_name = getattr(sub, "_pyro_name", "")
            if site_names:
                found.setdefault(f"{pyro_name}.{attr}" if pyro_name else attr, (sub, attr))
            paths.append((f"{prefix}.{attr}" if prefix else attr, (sub, attr)))
    for path, site in paths:
        found.setdefault(path, site)
    return found


def _site(found: tuple[Any, str]) -> tuple[int, str]:
    """One key per PyroSample attribute, whichever of its names found it."""
    return id(found[0]), found[1]


_FIXED = "_bnncompress_fixed"  # a submodule's PyroSample attributes that load_into made buffers


def _within_support(archive: Any, name: str, site: dict) -> bool:
    """The archive's tensor ``name`` fits the model's ``site``: a real site, or values inside its support
    (a guide's values packed without their support recorded are unconstrained: they do not fit)."""
    support = site["fn"].support
    if _is_real(support):
        return True
    if _packed_unconstrained(archive, name):
        return False
    try:
        return bool(support.check(site["value"]).all())
    except (RuntimeError, ValueError):  # (a shape the support's bounds do not broadcast with)
        return True


def _packed_unconstrained(archive: Any, name: str) -> bool:
    """Tensor ``name`` holds a guide's unconstrained values without their support recorded (a param store
    packed without the model, or a support that could not be recorded)."""
    return archive.record(name).params.get("support") is None and archive.source.startswith(("Pyro", "live "))


def _is_real(support: Any) -> bool:
    from pyro.distributions import constraints

    while isinstance(support, constraints.independent):
        support = support.base_constraint
    return support is constraints.real or support is constraints.real_vector or support.is_discrete


UNCONSTRAINED = (
    "have a constrained support in the model but their archive values are unconstrained or outside it "
    "(packed from a param store without the model?); repack with pack(path, model=model)"
)


def load_into(archive: Any, module: Any, strict: bool = True, prefix: str = "") -> Any:
    """Copy the archive's tensors into ``module`` (see :meth:`bnncompress.Archive.load_into`)."""
    import torch

    if not isinstance(module, torch.nn.Module):
        raise ArgumentTypeError(f"«module» must be a torch.nn.Module, not a {type(module).__name__}")
    if not isinstance(prefix, str) or not isinstance(strict, bool):
        raise ArgumentTypeError(
            f"«prefix» must be a str and «strict» True or False, not {prefix!r:.40} and {strict!r:.40}"
        )
    names = {n[len(prefix) :]: n for n in archive.names if n.startswith(prefix)}
    params = dict(module.named_parameters(remove_duplicate=False))  # tied weights: every name they have
    _check_materialized(module, {n: p for n, p in params.items() if n in names})
    # (with prefix=, the archive's names less the prefix are module paths: a named root's name is the prefix)
    samples = {n: s for n, s in _pyro_sample_sites(module, site_names=not prefix).items() if n not in params}
    targets = set(params) | set(samples)
    # a tied weight, or a site (a shared layer's, a named root's), is given under any of its names
    given = {id(params[n]) for n in names if n in params} | {_site(samples[n]) for n in names if n in samples}
    listed_as: dict[tuple[int, str], str] = {}  # the name a site missing under all its names is listed as: its first
    for n in sorted(samples):
        listed_as.setdefault(_site(samples[n]), n)
    missing = sorted(
        n
        for n in targets - set(names)
        if (id(params[n]) if n in params else _site(samples[n])) not in given
        and (n in params or listed_as[_site(samples[n])] == n)  # (a site missing under all its names: said once)
    )
    outside = sorted(n for n in archive.names if not n.startswith(prefix))
    unexpected = sorted(set(names) - targets) + outside
    pyro_module = hasattr(module, "_pyro_samples")
    computed = []  # PyroSample attributes whose prior is a function of the module: maybe deterministic
    if pyro_module:  # a PyroModule: its parameters (PyroParam, nn.Parameter) are Pyro params, not posteriors,
        missing = [n for n in missing if n in samples]  # and other archive tensors are its model's other sites
        left, unexpected = [n for n in unexpected if n in names] + outside, []
        computed = [n for n in missing if not hasattr(_declared(*samples[n]), "batch_shape")]
        missing = [n for n in missing if n not in computed]
    shapes = []
    matched = set(names) & targets
    for n in sorted(matched):
        shape = tuple(archive.shape(names[n]))
        expected = tuple(params[n].shape) if n in params else _sample_shape(*samples[n])
        if expected is not None and shape != expected:
            shapes.append(f"{n}: archive {shape} vs module {expected}")
    problems = []
    if strict and missing:
        problems.append(f"missing from the archive: {', '.join(_few(missing))}")
    if strict and unexpected:
        buffers = dict(module.named_buffers(remove_duplicate=False))
        held = [n for n in unexpected if n in buffers]  # (they are not parameters: load them with load_state_dict)
        what = f" ({', '.join(_few(held))}: buffers, not parameters; load_into fills parameters)" if held else ""
        problems.append(f"not in the module: {', '.join(_few(unexpected))}{what}")
    if shapes:
        problems.append(f"shape mismatch: {'; '.join(_few(shapes))}")
    if strict and missing and not matched and (unexpected or pyro_module):
        problems.append(_hint(archive.names))
    tied = _tied_apart(archive, names, params) or _tied_apart(archive, names, {n: _site(s) for n, s in samples.items()})
    if tied:
        problems.append(f"tied parameters given different values: {tied}")
    if problems:
        raise ModelMismatchError(f"cannot load the archive into {type(module).__name__}: {'; '.join(problems)}")
    if not strict and archive.names and not matched:  # (a prefix no name starts with: nothing loaded, unsaid)
        why = f"no archive tensor's name starts with the prefix {prefix!r}" if not names else (
            f"no archive tensor names a parameter of the {type(module).__name__} (its names: "
            f"{', '.join(_few(sorted(params)))})"
        )  # fmt: skip
        warnings.warn(f"load_into(strict=False) loaded nothing: {why}; {_hint(archive.names)}", QualityWarning, 3)
    unconstrained = [n for n in names if n in samples and _fills_unconstrained(archive, names[n], *samples[n])]
    like = {n: _like(*samples[n]) for n in names if n in samples}  # (before the priors become buffers)
    _check_writable(module, {n: params[n] for n in names if n in params}, like)  # (before any copy)
    done = set()  # (a site given under two names is written once)
    with torch.inference_mode(False), torch.no_grad():  # (buffers made in inference mode: no backward later)
        for short, full in names.items():
            if short in params:
                p = params[short]
                p.copy_(torch.tensor(archive[full], device="cpu").to(dtype=p.dtype, device=p.device))
            elif short in samples and _site(samples[short]) not in done:  # the PyroSample site becomes a fixed
                sub, attr = samples[short]  # tensor, a buffer (Pyro makes nn.Parameters trainable pyro.params):
                done.add(_site(samples[short]))  # the module is deterministic
                delattr(sub, attr)
                sub.register_buffer(attr, archive.tensor(full).to(**like[short]))  # (the model's dtype, device)
                sub.__dict__.setdefault(_FIXED, set()).add(attr)
    for unsaid, what in (
        (unconstrained, f"site(s) {', '.join(unconstrained[:10])} {UNCONSTRAINED}"),
        (
            computed,
            f"PyroSample attribute(s) {', '.join(computed[:10])} (a prior that is a function of the module: "
            "maybe deterministic) are not in the archive: the module computes or samples them",
        ),
    ):
        if unsaid:
            warnings.warn(what, QualityWarning, stacklevel=3)
    if pyro_module and left:
        warnings.warn(
            f"load_into left archive tensor(s) {', '.join(left[:10])} to the model: they are not attributes of "
            f"the {type(module).__name__} (sites sampled in its forward?), so it still samples them; "
            "condition(model) fixes them too",
            QualityWarning,
            stacklevel=3,
        )
    return module


def _hint(archive_names: list[str]) -> str:
    """Why no archive tensor names a parameter or site of the module, and what to do."""
    if list(archive_names) == ["latent"]:
        return (
            "the archive holds a flat 'latent' (an AutoDiagonalNormal or AutoMultivariateNormal guide packed "
            "without its model): repack with pack(path, model=model) to split it into the model's sites"
        )
    return (
        f"the archive's names are {', '.join(_few(sorted(archive_names), 3))}: a wrapper adds a prefix to every "
        "name (DataParallel: pass model.module; torch.compile: model._orig_mod), or pass prefix= for the archive's own"
    )


def _few(names: list[str], most: int = 10) -> list[str]:
    """At most ``most`` names, then how many more (a 1000-layer model's message was 21,878 characters)."""
    return names if len(names) <= most else [*names[:most], f"... ({len(names) - most} more)"]


def _tied_apart(archive: Any, names: dict[str, str], params: dict[str, Any]) -> str:
    """Tied parameters (one tensor under several names; a site under several) the archive gives different values:
    the last one copied was kept, silently. ``params`` values: the tensors, or keys alike for one tensor."""
    import numpy as np

    seen: dict[Any, str] = {}
    for short in sorted(n for n in names if n in params):
        value = params[short]
        first = seen.setdefault(value if isinstance(value, tuple) else id(value), short)
        if first != short and not np.array_equal(archive[names[first]], archive[names[short]]):
            return f"{first} and {short}"
    return ""


def _like(sub: Any, attr: str) -> dict[str, Any]:
    """The dtype and device a PyroSample attribute has in the model: the submodule's other tensors' (moved by
    ``.double()`` / ``.to(device)``, which leave a prior as it was made), else its prior's (an archive packed
    from float64 numpy made a float64 buffer in a float32 model: forward failed)."""
    tensors = [t for n, t in [*sub.named_parameters(recurse=False), *sub.named_buffers(recurse=False)] if n != attr]
    reference = next((t for t in tensors if t.is_floating_point()), None)
    if reference is None:
        prior = _prior(sub, attr)
        try:
            reference = prior.mean if prior is not None else None
        except (NotImplementedError, AttributeError, ValueError):
            reference = None
    return {} if reference is None else {"dtype": reference.dtype, "device": reference.device}


def _fills_unconstrained(archive: Any, name: str, sub: Any, attr: str) -> bool:
    prior = _prior(sub, attr)
    if prior is None:  # (a prior that cannot be built outside the model's call: unsure, so it is said)
        return _packed_unconstrained(archive, name)
    return hasattr(prior, "support") and not _is_real(prior.support) and _packed_unconstrained(archive, name)


def _declared(sub: Any, attr: str) -> Any:
    """A PyroSample attribute's prior as declared, or (made a buffer by load_into) the buffer."""
    return sub._pyro_samples[attr] if attr in getattr(sub, "_pyro_samples", {}) else sub._buffers[attr]


def _prior(sub: Any, attr: str) -> Any:
    """A PyroSample attribute's prior; one that is a function of the module (a learned hyper-prior) built,
    or None if it cannot be built outside the model's call (or is a buffer load_into made)."""
    prior = _declared(sub, attr)
    if hasattr(prior, "batch_shape"):
        return prior
    if not callable(prior):  # (a buffer load_into made)
        return None
    import pyro
    import torch

    try:  # (a hierarchical prior samples its hyper-parameters: the caller's random state is kept)
        with torch.random.fork_rng(devices=[]), pyro.poutine.block(), torch.no_grad():
            return prior(sub)
    except Exception:
        return None


def _check_materialized(module: Any, params: dict[str, Any]) -> None:
    """Parameters without storage would take nothing, silently: a lazy module's before its first
    forward pass, or a module built on the meta device."""
    import torch

    for name, p in params.items():
        if isinstance(p, torch.nn.parameter.UninitializedParameter):
            raise ModelMismatchError(
                f"{type(module).__name__}'s parameter {name} is not initialized yet (a lazy module); "
                "run one forward pass first"
            )
        if p.is_meta:
            raise ModelMismatchError(
                f"{type(module).__name__}'s parameter {name} is on the meta device (no storage to load into); "
                "materialize the module first, e.g. module.to_empty(device='cpu')"
            )
        if p.is_inference():  # (checked before any copy: the first layers were loaded, then a raw RuntimeError)
            raise ModelMismatchError(
                f"{type(module).__name__}'s parameter {name} was made under torch.inference_mode (it cannot be "
                "written outside it); build the module outside inference_mode, or call load_into inside it"
            )


def _check_writable(module: Any, params: dict[str, Any], like: dict[str, dict[str, Any]]) -> None:
    """Before any copy (a refusal then leaves the module as it was): a parameter whose elements share memory (an
    expanded tensor) cannot take values, and a site's buffer on the meta device (its submodule's other tensors are
    there) would hold none: load_into succeeded and the values were lost."""
    for name, p in params.items():
        if any(stride == 0 and size > 1 for stride, size in zip(p.stride(), p.shape)):
            raise ModelMismatchError(
                f"{type(module).__name__}'s parameter {name} shares one value among its elements (an expanded "
                "tensor): it cannot take the archive's; give it storage of its own, e.g. nn.Parameter(p.clone())"
            )
    meta = sorted(n for n, where in like.items() if getattr(where.get("device"), "type", "") == "meta")
    if meta:
        raise ModelMismatchError(
            f"{type(module).__name__}'s site {meta[0]} would be on the meta device (its module's tensors are: no "
            "storage to load into); materialize the module first, e.g. module.to_empty(device='cpu')"
        )


def _sample_shape(sub: Any, attr: str) -> tuple[int, ...] | None:
    """The shape of a PyroSample prior's samples (batch + event), or None if its prior cannot be built."""
    prior = _declared(sub, attr)
    if not callable(prior) and hasattr(prior, "shape"):  # a buffer an earlier load_into made
        return tuple(prior.shape)
    prior = _prior(sub, attr)
    if not hasattr(prior, "batch_shape"):
        return None
    return tuple(prior.batch_shape) + tuple(prior.event_shape)


def condition(archive: Any, model: Any) -> Any:
    """``pyro.poutine.condition(model, data={site: point estimate})`` over all the archive's tensors.
    The first call of the conditioned model that returns warns (:class:`~bnncompress.errors.QualityWarning`)
    if some tensors named no sample site of the model, so they conditioned nothing (e.g. a flat
    ``latent`` packed without the model)."""
    import pyro
    import torch

    data = {name: archive.tensor(name) for name in archive.names}
    conditioned = pyro.poutine.condition(model, data=data)
    checked = [False]

    def run(*args: Any, **kwargs: Any) -> Any:
        if checked[0]:
            return conditioned(*args, **kwargs)
        with pyro.poutine.trace() as tracer:
            out = conditioned(*args, **kwargs)
        checked[0] = True  # (after a call that returned: one that raised, e.g. a missing argument, checked nothing)
        nodes = {n: site for n, site in tracer.trace.nodes.items() if site["type"] == "sample"}
        fixed = _fixed_sites(model) if isinstance(model, torch.nn.Module) else set()  # (by load_into)
        unused = [n for n in data if n not in nodes and n not in fixed]
        if unused:
            parts = sum(n.endswith(".latent") for n in unused) > 1  # (an AutoGuideList's flat parts: not split)
            why = "an AutoGuideList's flat parts are not split into sites" if parts else "a flat 'latent' needs "
            warnings.warn(
                f"archive tensor(s) {', '.join(unused[:10])} are not sample sites of the model, so they conditioned "
                f"nothing ({why}{'' if parts else 'pack(path, model=model) to be split into sites'})",
                QualityWarning,
                stacklevel=2,
            )
        outside = [n for n in data if n in nodes and not _within_support(archive, n, nodes[n])]
        if outside:
            warnings.warn(f"site(s) {', '.join(outside[:10])} {UNCONSTRAINED}", QualityWarning, stacklevel=2)
        return out

    return run


def _fixed_sites(module: Any) -> set[str]:
    """The names (module paths and Pyro site names) of the sites load_into made buffers."""
    return {n for n, (sub, attr) in _pyro_sample_sites(module).items() if attr in getattr(sub, _FIXED, ())}

"""Posteriors of live objects: Pyro autoguides (AutoNormal, AutoDiagonalNormal,
AutoLowRankMultivariateNormal, TyXe's), and IVON optimizers (:func:`ivon_posterior`)."""

from __future__ import annotations

import gc
import inspect
import sys
import types
from typing import Any

from ..errors import PosteriorError
from ..posterior import Posterior, make_tensor
from ..supports import site_supports
from .containers import NOT_MEAN_FIELD

_SUPPORTED = (
    "use AutoNormal, AutoDiagonalNormal, AutoLowRankMultivariateNormal, AutoMultivariateNormal "
    "or AutoLaplaceApproximation's laplace_approximation()"
)


def is_pyro_guide(obj: Any) -> bool:
    if "pyro" not in sys.modules:  # no guide can exist yet; importing pyro (and torch) costs ~1.5 s
        return False
    from pyro.infer.autoguide import AutoGuide

    return isinstance(obj, AutoGuide)


def from_live_guide(guide: Any) -> Posterior:
    import torch
    from pyro.infer.autoguide import AutoContinuous, AutoDiagonalNormal, AutoLaplaceApproximation, AutoNormal

    name = type(guide).__name__
    warnings: list[str] = []
    supports: dict = {}
    if getattr(guide, "prototype_trace", None) is None:
        raise PosteriorError(f"the {name} guide has no parameters yet; run it (or train it) once before packing")
    if isinstance(guide, AutoLaplaceApproximation):  # a MAP point (scales 0) until it is approximated
        raise PosteriorError(
            f"the {name} guide is a MAP point; pack guide.laplace_approximation(...) (its Gaussian posterior)"
        )
    with torch.no_grad():
        if isinstance(guide, AutoNormal):
            sites = [site for site, _ in guide.prototype_trace.iter_stochastic_nodes()]
            pairs = {site: guide._get_loc_and_scale(site) for site in sites}  # unconstrained
            nodes = guide.prototype_trace.nodes
            supports = site_supports([(s, nodes[s]["fn"].support) for s in sites], f"{name} guide", warnings)
        elif isinstance(guide, AutoContinuous) and hasattr(guide, "get_posterior"):
            posterior = guide.get_posterior()
            try:  # a flow (AutoIAFNormal, AutoNormalizingFlow) has no closed-form mean and variance
                loc, scale = posterior.mean, posterior.variance.sqrt()
            except NotImplementedError:
                raise PosteriorError(
                    f"the {name} guide's posterior has no closed-form mean and variance to pack; {_SUPPORTED}"
                ) from None
            if loc.dim() != 1:
                raise PosteriorError(f"cannot read a diagonal from the {name} guide's posterior; {_SUPPORTED}")
            if not isinstance(guide, AutoDiagonalNormal):
                warnings.append(f"the {name} guide {NOT_MEAN_FIELD}")
            locs = {site["name"]: value for site, value in guide._unpack_latent(loc)}
            scales = {site["name"]: value for site, value in guide._unpack_latent(scale)}
            pairs = {site: (locs[site], scales[site]) for site in locs}
            fns = [(site["name"], site["fn"].support) for site, _ in guide._unpack_latent(loc)]
            supports = site_supports(fns, f"{name} guide", warnings)
        elif hasattr(guide, "get_loc") and hasattr(guide, "get_scale"):  # TyXe's AutoNormal
            sites = [site for site, _ in guide.prototype_trace.iter_stochastic_nodes()]
            pairs = {site: (guide.get_loc(site), guide.get_scale(site)) for site in sites}
        elif name == "AutoGuideList":  # (its saved store packs: each part by its own keys)
            raise PosteriorError(
                "cannot pack a live AutoGuideList; save its param store (pyro.get_param_store().save(path)) "
                "and pack that with the model: pack(path, model=model)"
            )
        else:
            raise PosteriorError(f"cannot pack the {name} guide; {_SUPPORTED}")
    tensors = {n: make_tensor(n, loc, scale, f"{name} guide") for n, (loc, scale) in pairs.items()}
    return Posterior(tensors, None, f"live {name} guide", warnings, supports)


def ivon_posterior(model: Any, optimizer: Any) -> Posterior:
    """The Gaussian posterior an IVON optimizer (ivon-opt) holds for ``model``'s parameters.

    Means are the parameters; scale = 1 / sqrt(ess * (hess + weight_decay)) per weight, as
    defined by IVON (Shen et al., 2024), computed in float64. Names are ``model.named_parameters()``
    names. Call it outside ``optimizer.sampled_params()`` (inside, the parameters hold a sample: refused; after a
    block left by an exception ivon-opt leaves them holding it, which cannot be told).
    The model's parameters the optimizer does not hold, and its buffers (a BatchNorm's statistics),
    are not in the posterior: a warning names them.

    Example:
        >>> import torch, ivon                                          # doctest: +SKIP
        >>> opt = ivon.IVON(model.parameters(), lr=0.1, ess=len(data))  # doctest: +SKIP
        >>> bnncompress.pack(ivon_posterior(model, opt), "model.bnc")   # doctest: +SKIP
    """
    import torch

    if _sampling(optimizer):
        raise PosteriorError(
            "ivon_posterior was called inside optimizer.sampled_params(): the model's parameters hold a sample "
            "of the posterior, not its means; call it after the with-block"
        )
    names = {id(p): n for n, p in model.named_parameters()}
    pairs = {}
    with torch.no_grad():
        for group in optimizer.param_groups:
            if "hess" not in group or "ess" not in group:
                raise PosteriorError("the optimizer is not IVON: its parameter groups have no 'hess' and 'ess'")
            # in float64: a float16 optimizer's ess * hess overflows past 65504 (a training set's size)
            scale = 1.0 / torch.sqrt(group["ess"] * (group["hess"].double() + group["weight_decay"]))
            offset = 0
            for p in group["params"]:
                if id(p) not in names:
                    raise PosteriorError("the IVON optimizer holds a parameter that is not in the model")
                pairs[names[id(p)]] = (p.detach(), scale[offset : offset + p.numel()].view(p.shape))
                offset += p.numel()
    warnings = []
    left = [n for n in names.values() if n not in pairs]
    if left:  # (a frozen part: load_into(strict=False) would keep a fresh module's values, silently)
        warnings.append(f"not in the IVON optimizer, so not packed: the model's parameter(s) {_listed(left)}")
    params = {n for n, _ in model.named_parameters(remove_duplicate=False)}
    buffers = [n for n in model.state_dict(keep_vars=True) if n not in params]  # (persistent: a fresh module's differ)
    if buffers:
        warnings.append(
            f"the model's buffers are not in the posterior (IVON holds parameters only): {_listed(buffers)}; "
            "load_into() leaves a module's own; copy them from the trained model"
        )
    tensors = {n: make_tensor(n, loc, scale, "IVON optimizer") for n, (loc, scale) in pairs.items()}
    return Posterior(tensors, None, "IVON optimizer state", warnings)


def _sampling(optimizer: Any) -> bool:
    """Whether a ``with optimizer.sampled_params():`` block is open: ivon-opt keeps the means only in that
    suspended generator (its local ``param_avg``), and the parameters hold a draw until the block ends."""
    methods = [c.__dict__["sampled_params"] for c in type(optimizer).__mro__ if "sampled_params" in c.__dict__]
    codes = {getattr(getattr(m, "__wrapped__", None), "__code__", None) for m in methods} - {None}  # (a subclass's too)
    for holder in gc.get_referrers(optimizer) if codes else ():
        if isinstance(holder, types.GeneratorType):  # Python >= 3.11: the generator holds its frame's locals
            holder = holder.gi_frame if inspect.getgeneratorstate(holder) == inspect.GEN_SUSPENDED else None
        if isinstance(holder, types.FrameType) and holder.f_code in codes and "param_avg" in holder.f_locals:
            return True
    return False


def _listed(names: list[str]) -> str:
    return ", ".join(names[:5]) + (f" ... ({len(names)} in all)" if len(names) > 5 else "")

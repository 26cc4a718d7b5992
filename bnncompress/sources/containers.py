"""Posteriors in dict-like containers: Pyro param stores, guide state dicts, bayesian-torch and
IVON-style state dicts, and plain ``{name: {"loc", "scale"}}`` dicts, from .pt, .npz and
safetensors files or Python (:func:`from_mapping`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ..errors import ArchiveError, NotAPosteriorError, PosteriorError
from ..posterior import FLAT_LATENT_NAME, Posterior, make_tensor
from ..supports import constrain, constraint_of, ignored_warning, messenger_warning, unknown_support_warning
from ..vocabulary import decode_words, validate_words
from .pickledconstraints import PickledConstraint, constraint_name

NOT_MEAN_FIELD = "is not mean-field: packing its marginal standard deviations drops the correlations between weights"


def from_mapping(obj: Any, where: str) -> Posterior:
    """Interpret a loaded container: param store, guide state dict, or plain loc/scale dict."""
    if not isinstance(obj, Mapping):
        raise PosteriorError(f"{where} holds a {type(obj).__name__}, not a dict of posterior tensors")
    obj = dict(obj)
    vocab = obj.pop("vocab", None)
    if vocab is not None:
        if isinstance(vocab, np.ndarray) and vocab.dtype.kind in "US":
            vocab = vocab.reshape(-1).tolist()
        pair = isinstance(vocab, dict) and {"loc", "scale"} <= set(vocab)
        if pair or (isinstance(vocab, (list, tuple)) and vocab and getattr(vocab[0], "ndim", 0)):
            raise PosteriorError(  # (a tensor of that name: the key is the vocabulary's)
                f"{where}: the key 'vocab' holds the vocabulary (a list of words), not a tensor; rename the tensor"
            )
        if isinstance(vocab, dict):  # gensim's key_to_index, torchtext's stoi
            raise PosteriorError(
                f"{where}: 'vocab' must be a list of strings (the words in row order), found dict; for a word -> "
                "index mapping d give sorted(d, key=d.get)"
            )
        if not isinstance(vocab, (list, tuple)):
            raise PosteriorError(f"{where}: 'vocab' must be a list of strings, found {type(vocab).__name__}")
        vocab = validate_words(decode_words(vocab, f"{where}: 'vocab'"), f"vocabulary in {where}")
    warnings: list[str] = []
    points: dict[str, Any] = {}  # a param store's other parameters (an AutoDelta's point estimates)
    recorded: dict[str, Any] = {}  # a param store's "supports" record (bnncompress train writes one)
    if "params" in obj and "constraints" in obj and isinstance(obj["params"], Mapping):
        recorded = _supports_record(obj.pop("supports", {}), where)
        pairs, kind = _pairs_from_param_store(obj["params"], obj["constraints"], where, warnings, points)
    elif any(_is_state_dict_key(k) for k in obj):
        pairs, kind = _pairs_from_guide_state_dict(obj, where, warnings)
    elif any(isinstance(k, str) and k.rsplit(".", 1)[-1] in _BAYESIAN_TORCH_MU for k in obj):
        pairs, kind = _pairs_from_bayesian_torch(obj, where, warnings)
    elif set(obj) == {"mean", "variance"} and all(_is_ivon_state(v) for v in obj.values()):
        pairs, kind = _pairs_from_mean_variance(obj["mean"], obj["variance"], where)
    else:
        pairs, kind = _pairs_from_plain(obj, where)
    keys = getattr(pairs, "keys_of", {})
    flat = FLAT_LATENT_NAME in pairs and ".locs." not in keys.get(FLAT_LATENT_NAME, "")  # (not a site named latent)
    if flat and kind.startswith("Pyro"):
        guide = kind[kind.find("(") + 1 : -1] if kind.endswith(")") else "AutoDiagonalNormal"
        warnings.append(
            f"{guide} posterior read without its model: packed as one flat tensor "
            f"'{FLAT_LATENT_NAME}' (all sample sites concatenated, unconstrained); pass the model to split it "
            "into its sites and record their supports: pack(path, model=model), --model pkg.module:attr"
        )
    if kind.startswith("Pyro"):  # locs are unconstrained; the supports live in the model
        note = unknown_support_warning([n for n in pairs if n not in recorded])
        warnings += [note] if note else []
    tensors = {name: make_tensor(name, loc, scale, where) for name, (loc, scale) in pairs.items()}
    supports = fitting_supports({n: s for n, s in recorded.items() if n in tensors}, tensors, where, "fix the file")
    return Posterior(tensors, vocab, f"{kind}: {where}", warnings, supports, points)


def _supports_record(record: Any, where: str, fix: str = "fix the file") -> dict[str, Any]:
    """A param store's ``"supports"``: ``{site: None}`` for a real support, or ``{site: spec}`` as an
    archive records one (:func:`bnncompress.supports.describe`); PosteriorError if it is not."""
    if not isinstance(record, Mapping) or not all(isinstance(k, str) for k in record):
        raise PosteriorError(f"{where}: 'supports' must map site names to supports, found {type(record).__name__}")
    for name, spec in record.items():
        if spec is not None:
            try:
                constraint_of(spec, f"{where}: 'supports' of '{name}'")
            except ArchiveError as exc:
                raise PosteriorError(f"{str(exc).rsplit('; ', 1)[0]}; {fix}") from None
    return dict(record)


def fitting_supports(record: Mapping[str, Any], tensors: Mapping[str, Any], where: str, fix: str) -> dict[str, Any]:
    """The supports of ``record`` (checked by :func:`_supports_record`) that are not real, each checked
    against its tensor's shape: a record that does not fit would make an archive none can load."""
    supports = {n: spec for n, spec in _supports_record(record, where, fix).items() if spec is not None}
    for name, spec in supports.items():
        try:
            constrain(spec, np.zeros(tensors[name].shape, np.float32), f"'{name}'")
        except ArchiveError:
            raise PosteriorError(
                f"{where}: 'supports' of '{name}' ({spec.get('constraint')}) does not fit its tensor of shape "
                f"{tuple(tensors[name].shape)}; {fix}"
            ) from None
    return supports


class _Pairs(dict):
    """Tensor name -> (loc, scale), refusing a second pair for a name (two keys that map to one
    tensor, e.g. ``{"w": {"loc", "scale"}}`` beside ``"w.loc"`` / ``"w.scale"``)."""

    def __init__(self, where: str):
        super().__init__()
        self.where, self.keys_of = where, {}

    def add(self, name: str, key: str, pair: tuple[Any, Any]) -> None:
        if name in self:
            raise PosteriorError(
                f"{self.where}: '{self.keys_of[name]}' and '{key}' both hold tensor '{name}'; keep one of them"
            )
        self[name], self.keys_of[name] = pair, key


def _is_state_dict_key(key: Any) -> bool:
    return isinstance(key, str) and (
        (key.startswith(("locs.", "scales.")) and key.endswith("_unconstrained")) or key == "scale_unconstrained"
    )


def _pairs_from_param_store(
    params: Mapping, constraints: Any, where: str, warnings: list[str], points: dict[str, Any]
) -> tuple[dict, str]:
    """AutoNormal (``G.locs.X`` / ``G.scales.X``), TyXe-style suffixes (``G.X.loc`` / ``G.X.scale``),
    and the flat ``G.loc`` / ``G.scale`` of continuous guides (AutoDiagonalNormal; low-rank
    ``cov_factor`` and full ``scale_tril`` give marginal scales), also inside AutoGuideList
    (``AutoGuideList.1.loc``). Parameters that fit none of these are ignored with a warning."""
    constraints = constraints if isinstance(constraints, Mapping) else {}

    def constrained(key: str) -> Any:  # as Pyro's param store does: transform_to(constraint)
        value, constraint = params[key], constraints.get(key)
        if constraint is None:
            return value
        if isinstance(constraint, PickledConstraint):  # read without torch: numpy's transform, or NotPlain
            return constraint.apply(value)
        from torch.distributions import transform_to

        try:
            return transform_to(constraint)(_as_tensor(value))
        except NotImplementedError:
            raise PosteriorError(f"{where}: parameter '{key}' has an unsupported constraint") from None
        except RecursionError:  # (the torch-free reader says so as it unpickles)
            raise PosteriorError(f"{where}: the constraint of '{key}' contains itself; the file is damaged") from None
        except (ValueError, OverflowError, TypeError, IndexError):  # (torch's, on a misfit)
            raise PosteriorError(f"{where}: the constraint of '{key}' does not fit its tensor (damaged)") from None

    pairs = _Pairs(where)
    flat: dict[str, tuple[Any, Any]] = {}
    guides: set[str] = set()
    used: set[str] = set()
    sites: dict[str, set[str]] = {}  # AutoNormal-like guides' sites, by guide
    for key in params:  # AutoNormal first (its sites may be named loc and scale): <guide>.locs.<site>
        split = _autonormal_split(key, params, where) if isinstance(key, str) and ".locs." in key else None
        if split:
            prefix, site = split
            sites.setdefault(prefix, set()).add(site)
            pairs.add(site, key, (constrained(key), constrained(f"{prefix}.scales.{site}")))
            guides.add(prefix)
            used |= {key, f"{prefix}.scales.{site}"}
    for prefix, its_sites in sites.items():  # (once per guide: a store of 4,000 sites)
        own = [k[len(prefix) + 1 :] for k in params if isinstance(k, str) and k.startswith(prefix + ".")]
        _refuse_other_guides(own, its_sites, where)
        if any(constraint_name(constraints.get(f"{prefix}.scales.{s}")) == "_GreaterThan" for s in its_sites):
            warnings.append(messenger_warning(prefix))  # (AutoNormal's scales are softplus_positive)
    for key in params:
        if not isinstance(key, str) or key in used:
            continue
        if not (key.endswith(".loc") and key[: -len(".loc")] + ".scale" in params):
            continue
        prefix = key[: -len(".loc")]
        guide, _, rest = prefix.partition(".")
        loc, scale = constrained(key), _as_tensor(constrained(prefix + ".scale"))
        if rest and not rest.isdigit() and not _multivariate(prefix, params):  # TyXe: <guide>.<site>.loc
            pairs.add(rest, key, (loc, scale))
            guides.add(guide)
            used |= {key, prefix + ".scale"}
            continue
        if _as_tensor(loc).dim() != 1 or tuple(scale.shape) != tuple(_as_tensor(loc).shape):
            continue  # not a continuous guide's flat vector (e.g. a user's pyro.param); reported below
        flat[prefix] = (loc, _marginal_scale(prefix, scale, params, constrained, warnings, used))
        guides.add(prefix)
        used |= {key, prefix + ".scale"}
    for prefix, pair in flat.items():  # one flat guide is "latent"; several are "<guide>.latent"
        pairs.add(FLAT_LATENT_NAME if len(flat) == 1 else f"{prefix}.{FLAT_LATENT_NAME}", f"{prefix}.loc", pair)
    if not pairs:
        sample = ", ".join(list(map(str, params))[:5])
        raise PosteriorError(
            f"{where} is a Pyro param store without guide loc/scale parameters (found: {sample}): a guide without "
            "a Gaussian posterior (AutoIAFNormal, AutoDelta) or one that keeps it outside the store (pack the live "
            "guide laplace_approximation() returns); save a normal guide's parameters after training"
        )
    if ignored := [k for k in params if k not in used]:
        warnings.append(ignored_warning(ignored))
    points.update({k: params[k] for k in ignored if isinstance(k, str)})  # as stored: unconstrained
    return pairs, f"Pyro param store ({', '.join(sorted(guides))})"


#: Parameters of guides whose posterior is no normal per site though they also have AutoNormal's locs and scales.
_OTHER_GUIDES = dict(scale_trils="AutoStructured", deps="AutoStructured", white_vecs="AutoGaussian")
_OTHER_GUIDES.update(prec_sqrts="AutoGaussian", weights="AutoHierarchicalNormalMessenger")


def _refuse_other_guides(keys: list[str], sites: set[str], where: str, suffix: str = "") -> None:
    """Refuse a guide whose locs are not its posterior's centre: among ``keys`` (names within one guide), one of
    :data:`_OTHER_GUIDES`' parameters of one of its ``sites`` (``white_vecs.<site><suffix>``, ``deps.<site>.<...>``;
    a user's own module named ``weights`` beside the guide's parameters is not one)."""
    for key in keys:
        head, _, rest = key.partition(".")
        if head not in _OTHER_GUIDES:
            continue
        parts = rest.removesuffix(suffix).split(".")
        if any(".".join(parts[:i]) in sites for i in range(1, len(parts) + 1)):
            raise PosteriorError(
                f"{where}: its {head} parameters are an {_OTHER_GUIDES[head]} guide's, whose posterior is not a "
                "normal at its locs; pack an AutoNormal, AutoDiagonalNormal or (multivariate) normal guide"
            )


def _autonormal_split(key: str, params: Mapping, where: str) -> tuple[str, str] | None:
    """(guide prefix, site) of an AutoNormal ``<guide>.locs.<site>`` key: the split whose ``.scales.`` key
    exists (a site's name may itself contain ``.locs.``); None for a ``.scales.`` key of such a site."""
    at = key.find(".locs.")
    while at >= 0:
        prefix, site = key[:at], key[at + len(".locs.") :]
        if f"{prefix}.scales.{site}" in params:
            return prefix, site
        at = key.find(".locs.", at + 1)
    if ".scales." in key:
        return None
    prefix, site = key.split(".locs.", 1)
    raise PosteriorError(f"{where}: '{key}' has no matching '{prefix}.scales.{site}'")


def _marginal_scale(prefix: str, scale: Any, params: Mapping, constrained: Any, warnings: list, used: set) -> Any:
    """A continuous guide's marginal scales: AutoMultivariateNormal ``scale[:, None] * scale_tril``,
    AutoLowRankMultivariateNormal ``scale`` and ``cov_factor`` (with a warning), else ``scale``."""
    if f"{prefix}.scale_tril" in params:
        tril = _as_tensor(constrained(f"{prefix}.scale_tril"))
        scale = scale * (tril**2).sum(-1).sqrt()
        used.add(f"{prefix}.scale_tril")
    elif f"{prefix}.cov_factor" in params:
        cov_factor = _as_tensor(constrained(f"{prefix}.cov_factor"))
        scale = scale * (1 + (cov_factor**2).sum(-1)).sqrt()
        used.add(f"{prefix}.cov_factor")
    else:
        return scale
    warnings.append(f"'{prefix}' {NOT_MEAN_FIELD}")
    return scale


def _pairs_from_guide_state_dict(sd: Mapping, where: str, warnings: list[str]) -> tuple[dict, str]:
    """``torch.save(guide.state_dict())`` of AutoNormal (``locs.X_unconstrained``), or of a
    continuous guide: AutoDiagonalNormal, AutoLowRankMultivariateNormal (``cov_factor``) and
    AutoMultivariateNormal (``scale_tril_unconstrained``), read as one flat tensor."""
    import torch.nn.functional as F
    from pyro.distributions import constraints
    from torch.distributions import transform_to

    pairs = _Pairs(where)
    suffix = "_unconstrained"
    sites = [
        k[len("locs.") : -len(suffix)]
        for k in sd
        if isinstance(k, str) and k.startswith("locs.") and k.endswith(suffix)
    ]
    _refuse_other_guides([k for k in sd if isinstance(k, str)], set(sites), where, suffix)
    used = {"loc", "scale_unconstrained", "scale_tril_unconstrained", "cov_factor"}
    for site in sites:
        key, scale_key = f"locs.{site}{suffix}", f"scales.{site}{suffix}"
        if scale_key not in sd:
            raise PosteriorError(f"{where}: '{key}' has no matching '{scale_key}'")
        pairs.add(site, key, (sd[key], F.softplus(_as_tensor(sd[scale_key], where, scale_key))))
        used |= {key, scale_key}
    if "loc" in sd and "scale_unconstrained" in sd:
        # AutoDiagonalNormal / AutoLowRank / AutoMultivariateNormal all store a softplus-positive scale
        scale = F.softplus(_as_tensor(sd["scale_unconstrained"], where, "scale_unconstrained"))
        if "scale_tril_unconstrained" in sd:  # AutoMultivariateNormal: scale[:, None] * unit lower Cholesky
            tril = _as_tensor(sd["scale_tril_unconstrained"], where, "scale_tril_unconstrained")
            tril = transform_to(constraints.unit_lower_cholesky)(tril)
            scale = scale * (tril**2).sum(-1).sqrt()
            warnings.append(f"the multivariate normal guide {NOT_MEAN_FIELD}")
        elif "cov_factor" in sd:
            scale = scale * (1 + (_as_tensor(sd["cov_factor"], where, "cov_factor") ** 2).sum(-1)).sqrt()
            warnings.append(f"the low-rank multivariate normal guide {NOT_MEAN_FIELD}")
        pairs.add(FLAT_LATENT_NAME, "loc", (sd["loc"], scale))
    if not pairs:
        raise PosteriorError(f"{where}: found guide state-dict keys but no loc/scale pairs")
    if ignored := [k for k in sd if k not in used]:  # (said, as the param store's are: they may have meant something)
        warnings.append(ignored_warning(ignored))
    if FLAT_LATENT_NAME not in pairs:
        return pairs, "Pyro guide state dict"
    flat = "AutoMultivariateNormal" if "scale_tril_unconstrained" in sd else "AutoDiagonalNormal"
    return pairs, f"Pyro guide state dict ({'AutoLowRankMultivariateNormal' if 'cov_factor' in sd else flat})"


_BAYESIAN_TORCH_MU = {"mu_weight": "weight", "mu_kernel": "weight", "mu_bias": "bias"}


def _pairs_from_bayesian_torch(sd: Mapping, where: str, warnings: list[str]) -> tuple[dict, str]:
    """bayesian-torch layers: ``L.mu_weight`` / ``L.rho_weight`` (``mu_kernel`` for convolutions),
    scale = softplus(rho); named ``L.weight`` / ``L.bias`` like the deterministic layer they replace.
    The module's other tensors (a BatchNorm's weights and statistics) are not packed: said in a warning."""
    import torch.nn.functional as F

    pairs = _Pairs(where)
    ignored = []
    for key in sd:
        if not isinstance(key, str):
            continue
        prefix, _, leaf = key.rpartition(".")
        if leaf not in _BAYESIAN_TORCH_MU:
            if not leaf.startswith(("rho_", "eps_", "prior_")):
                ignored.append(key)
            continue
        rho_key = f"{prefix}.rho_{leaf[3:]}" if prefix else f"rho_{leaf[3:]}"
        if rho_key not in sd:
            raise PosteriorError(f"{where}: '{key}' has no matching '{rho_key}'")
        name = f"{prefix}.{_BAYESIAN_TORCH_MU[leaf]}" if prefix else _BAYESIAN_TORCH_MU[leaf]
        pairs.add(name, key, (sd[key], F.softplus(_as_tensor(sd[rho_key], where, rho_key))))
    if ignored:  # (load_into(strict=False) then kept their initial values, and nothing said so)
        warnings.append(ignored_warning(ignored).replace("guide loc/scale pairs", "Bayesian layers' mu/rho pairs"))
    return pairs, "bayesian-torch state dict"


def _pairs_from_mean_variance(means: Mapping, variances: Mapping, where: str) -> tuple[dict, str]:
    """Two state dicts with the same keys: posterior means and variances (scale = sqrt(variance))."""
    if set(means) != set(variances):
        diff = sorted(set(means) ^ set(variances))
        raise PosteriorError(f"{where}: 'mean' and 'variance' must have the same tensor names; differ in {diff[:5]}")
    pairs = _Pairs(where)
    for name in means:
        if not isinstance(name, str):
            raise PosteriorError(f"{where}: keys must be tensor names (strings), found {name!r}")
        var = _as_tensor(variances[name], where, f"variance.{name}")
        if var.is_floating_point() and bool((var < 0).any()):
            raise PosteriorError(f"{where}: variance of '{name}' has negative values; variances must be >= 0")
        pairs.add(name, f"mean.{name}", (means[name], var.sqrt() if var.is_floating_point() else var))
    return pairs, "mean/variance state dicts"


def _pairs_from_plain(obj: Mapping, where: str) -> tuple[dict, str]:
    pairs = _Pairs(where)
    for key, value in obj.items():
        if not isinstance(key, str):
            raise PosteriorError(f"{where}: keys must be tensor names (strings), found {key!r}")
        if isinstance(value, Mapping):
            if set(value) != {"loc", "scale"}:
                raise PosteriorError(
                    f"{where}: entry '{key}' must have exactly the keys 'loc' and 'scale', found {sorted(value)}"
                )
            pairs.add(key, key, (value["loc"], value["scale"]))
        elif isinstance(value, tuple) and len(value) == 2:
            pairs.add(key, key, value)
        elif key.endswith(".loc"):
            name = key[: -len(".loc")]
            if name + ".scale" not in obj:
                raise PosteriorError(f"{where}: '{key}' has no matching '{name}.scale'")
            pairs.add(name, key, (value, obj[name + ".scale"]))
        elif key.endswith(".scale"):
            if key[: -len(".scale")] + ".loc" not in obj:
                raise PosteriorError(f"{where}: '{key}' has no matching '{key[: -len('.scale')]}.loc'")
        else:
            raise NotAPosteriorError(
                f"{where}: cannot tell what '{key}' is; expected a Pyro param store, a guide state dict, "
                "{name: {'loc': T, 'scale': T}} or flat 'name.loc' / 'name.scale' keys"
            )
    if not pairs:
        raise PosteriorError(f"{where} contains no posterior tensors")
    return pairs, "loc/scale dict"


def _as_tensor(x: Any, where: str = "", key: str = "") -> Any:
    import torch

    if isinstance(x, torch.Tensor):
        return x
    try:
        a = np.asarray(x)
        if a.dtype.byteorder not in "=|":  # (torch takes neither big-endian arrays nor negative strides)
            a = a.astype(a.dtype.newbyteorder("="))
        return torch.as_tensor(a if a.flags.c_contiguous else a.copy())  # (not ascontiguousarray: 0-d stays 0-d)
    except (TypeError, ValueError, RuntimeError):  # (a dict, a string, ragged lists: raw errors before)
        raise PosteriorError(f"{where}: '{key}' is a {type(x).__name__}, not an array of numbers") from None


def _is_ivon_state(value: Any) -> bool:
    """An IVON-style ``mean`` / ``variance`` state dict, not a plain posterior's ``{"loc", "scale"}`` entry
    (tensors named ``mean`` and ``variance`` were read as one another's variance)."""
    return isinstance(value, Mapping) and set(value) != {"loc", "scale"}


def _multivariate(prefix: str, params: Mapping) -> bool:
    """``<prefix>.loc`` is a continuous guide's flat vector: it has a ``scale_tril`` or ``cov_factor``
    (a guide nested in PyroModules, ``outer.inner.guide.loc``, was read as a TyXe site ``inner.guide``)."""
    return f"{prefix}.scale_tril" in params or f"{prefix}.cov_factor" in params

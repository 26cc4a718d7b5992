"""Posterior sources: everything that yields a mean-field Gaussian N(loc, scale²) per weight.

A :class:`Posterior` maps tensor names (the model's sample-site names, e.g.
``word_vectors``) to a :class:`TensorPosterior` holding ``loc`` and ``scale`` arrays,
plus an optional vocabulary. :func:`read_posterior` builds one from any supported source,
detected by content, never by file name:

- a file written by ``pyro.get_param_store().save(path)`` (AutoNormal pairs
  ``<guide>.locs.X`` / ``<guide>.scales.X``; AutoDiagonalNormal's flat ``<guide>.loc`` /
  ``<guide>.scale``), values unconstrained and mapped through their stored constraints;
- ``torch.save(guide.state_dict())`` of an AutoNormal or AutoDiagonalNormal guide;
- AutoLowRankMultivariateNormal (marginal standard deviations; a warning says that the
  correlations are dropped) and TyXe's guides (suffix names ``<guide>.<site>.loc``);
- a bayesian-torch model's state dict (``L.mu_weight`` / ``L.rho_weight``, scale =
  softplus(rho), named ``L.weight`` like the layer it replaces);
- ``{"mean": state_dict, "variance": state_dict}`` (e.g. from IVON; see :func:`ivon_posterior`);
- a plain dict in .pt / .npz / .safetensors, ``{name: {"loc": T, "scale": T}}`` or flat
  ``name.loc`` / ``name.scale`` keys, with an optional ``"vocab"`` list of words;
- in Python: a live AutoNormal / AutoDiagonalNormal / AutoLowRankMultivariateNormal guide
  (continuous guides are split into their sample sites), or ``{name: (loc, scale)}``.

Pickled .pt files are read with ``torch.load(weights_only=True)`` and an allow-list of
exactly the constraint classes Pyro stores; anything else pickled is refused before it runs.
"""

from __future__ import annotations

import json
import os
import pickle
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import PosteriorError
from .vocabulary import read_vocab, validate_words

#: Name given to the single flat tensor of an AutoDiagonalNormal guide read without its model.
FLAT_LATENT_NAME = "latent"

_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_ZIP_MAGIC = b"PK\x03\x04"
_FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")


@dataclass(frozen=True)
class TensorPosterior:
    """The Gaussian posterior of one tensor: ``N(loc, scale**2)`` elementwise.

    ``loc`` and ``scale`` are float32 numpy arrays of the same shape; ``dtype`` is the
    floating-point type the tensor had in its source (restored when it is loaded back).
    """

    loc: np.ndarray
    scale: np.ndarray
    dtype: str = "float32"

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.loc.shape)

    @property
    def size(self) -> int:
        return int(self.loc.size)


@dataclass
class Posterior:
    """Named Gaussian posteriors plus an optional vocabulary (row labels of 2-D tensors).

    Example:
        >>> import numpy as np
        >>> p = read_posterior({"w": (np.zeros((3, 2)), np.ones((3, 2)))}, vocab=["a", "b", "c"])
        >>> p.names, p.vocab_tensors, p.num_weights
        (['w'], ['w'], 6)
    """

    tensors: dict[str, TensorPosterior]
    vocab: list[str] | None = None
    source: str = "python objects"
    warnings: list[str] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        return list(self.tensors)

    @property
    def num_weights(self) -> int:
        return sum(t.size for t in self.tensors.values())

    @property
    def vocab_tensors(self) -> list[str]:
        """Names of the 2-D tensors whose rows the vocabulary labels."""
        if self.vocab is None:
            return []
        return [n for n, t in self.tensors.items() if len(t.shape) == 2 and t.shape[0] == len(self.vocab)]

    def select(self, names: Iterable[str], require_vocab: bool = False) -> Posterior:
        """The same posterior restricted to ``names`` (in that order). A vocabulary that labels
        none of them is dropped with a warning, or refused if ``require_vocab`` (it was asked for)."""
        names = list(names)
        unknown = [n for n in names if n not in self.tensors]
        if unknown:
            raise PosteriorError(
                f"no tensor named {', '.join(map(repr, unknown))} in {self.source}; available: {', '.join(self.names)}"
            )
        vocab, warnings = self.vocab, list(self.warnings)
        if vocab is not None and not any(
            len(self.tensors[n].shape) == 2 and self.tensors[n].shape[0] == len(vocab) for n in names
        ):
            if require_vocab:
                raise PosteriorError(
                    f"the vocabulary ({len(vocab)} words) labels none of the selected tensors "
                    f"({', '.join(names)}); select a tensor it labels or drop the vocabulary"
                )
            warnings.append("the stored vocabulary labels none of the selected tensors; it is not packed")
            vocab = None
        return Posterior({n: self.tensors[n] for n in names}, vocab, self.source, warnings)


def read_posterior(source: Any, vocab: str | os.PathLike | Iterable[str] | None = None) -> Posterior:
    """Read a posterior from a file path, a live Pyro guide, a mapping, or a :class:`Posterior`.

    ``vocab`` is a file with one word per line (row order) or a list of words; it overrides
    a vocabulary stored in the source. It must match the first dimension of at least one
    2-D tensor.

    Example:
        >>> import numpy as np
        >>> p = read_posterior({"w": (np.zeros(4), np.full(4, 0.1))})
        >>> p.tensors["w"].scale.tolist()
        [0.10000000149011612, 0.10000000149011612, 0.10000000149011612, 0.10000000149011612]
    """
    if isinstance(source, Posterior):
        posterior = Posterior(dict(source.tensors), source.vocab, source.source, list(source.warnings))
    elif isinstance(source, (str, os.PathLike)):
        posterior = _read_file(Path(source))
    elif _is_pyro_guide(source):
        posterior = _from_live_guide(source)
    elif isinstance(source, Mapping):
        posterior = _from_mapping(source, "python dict")
    else:
        raise PosteriorError(
            f"cannot read a posterior from a {type(source).__name__}; pass a file path, "
            "a Pyro AutoNormal/AutoDiagonalNormal guide, or a dict {name: (loc, scale)}"
        )
    if vocab is not None:
        posterior.vocab = read_vocab(vocab)
    if posterior.vocab is not None:
        _check_vocab(posterior)
    return posterior


def _check_vocab(posterior: Posterior) -> None:
    if not posterior.vocab_tensors:
        shapes = ", ".join(f"{n} {t.shape}" for n, t in posterior.tensors.items())
        raise PosteriorError(
            f"vocabulary has {len(posterior.vocab or [])} words but no 2-D tensor has that many rows "
            f"({shapes}); pass the vocabulary the model was trained with"
        )


# --------------------------------------------------------------------------- files


def _read_file(path: Path) -> Posterior:
    if not path.exists():
        raise PosteriorError(f"posterior file '{path}' does not exist")
    if path.is_dir() and any(path.glob("*.loc.npy")):  # NAME.loc.npy / NAME.scale.npy pairs
        from .streaming import read_in_memory

        return read_in_memory(path)
    if not path.is_file():
        raise PosteriorError(f"'{path}' is not a file; pass a posterior file (.pt, .npz or .safetensors)")
    with open(path, "rb") as fh:
        head = fh.read(16)
    size = path.stat().st_size
    if head.startswith(_HDF5_MAGIC):  # loc/scale datasets; a bnncompress archive is refused there
        from .streaming import read_in_memory

        return read_in_memory(path)
    if head.startswith(_ZIP_MAGIC):
        try:
            with zipfile.ZipFile(path) as zf:
                members = zf.namelist()
        except Exception:  # zipfile raises many kinds on damaged input
            raise PosteriorError(f"'{path}' looks like a zip archive but is corrupt or truncated") from None
        if any(m.endswith("data.pkl") for m in members):
            return _from_mapping(_torch_load(path), f"'{path.name}'")
        if members and all(m.endswith(".npy") for m in members):
            return _read_npz(path)
        raise PosteriorError(f"'{path}' is a zip archive but neither a torch .pt file nor a numpy .npz file")
    # safetensors first: a header of 128 + 256k bytes starts with 0x80, like a legacy pickle
    if len(head) >= 9 and head[8:9] == b"{" and 0 < int.from_bytes(head[:8], "little") <= size - 8:
        return _read_safetensors(path)
    if head[:1] == b"\x80":  # a legacy (non-zip) torch.save pickle
        return _from_mapping(_torch_load(path), f"'{path.name}'")
    raise PosteriorError(
        f"'{path}' is not a known posterior format; expected a Pyro param store or state dict (.pt), "
        "a .npz or a .safetensors file"
    )


def _allowed_constraint_classes() -> list[type]:
    """The constraint classes of torch and Pyro: what Pyro's param store pickles beside tensors.
    They hold only numbers and other constraints, so unpickling them runs no user code."""
    import pyro.distributions.constraints as pc
    import torch.distributions.constraints as tc

    classes = []
    for module in (tc, pc):
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, tc.Constraint):
                classes.append(value)
    return classes


def _torch_load(path: Path) -> Any:
    import torch

    try:
        with torch.serialization.safe_globals(_allowed_constraint_classes()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()
        detail = next((ln.strip() for ln in first if "GLOBAL" in ln or "Unsupported" in ln), "")
        raise PosteriorError(
            f"'{path}' contains pickled objects that are not allowed ({detail or 'refused by the safe loader'}); "
            "bnncompress only reads tensors, plain containers and Pyro constraints — re-save the "
            "posterior with pyro.get_param_store().save() or as a dict of tensors"
        ) from None
    except Exception as exc:  # a damaged file makes torch raise almost anything
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PosteriorError(f"cannot read '{path}' as a torch file ({msg}); is it truncated or corrupt?") from None


def _read_npz(path: Path) -> Posterior:
    try:
        with np.load(path, allow_pickle=False) as npz:
            data = {k: npz[k] for k in npz.files}
    except ValueError as exc:
        raise PosteriorError(f"cannot read '{path}' as .npz without pickle ({exc}); store plain arrays") from None
    except Exception as exc:  # a damaged archive makes numpy/zipfile raise almost anything
        raise PosteriorError(f"cannot read '{path}' as .npz ({exc}); is it truncated or corrupt?") from None
    if "vocab" in data:
        data["vocab"] = [str(w) for w in data["vocab"].tolist()]
    return _from_mapping(data, f"'{path.name}' (npz)")


def _read_safetensors(path: Path) -> Posterior:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="np") as st:
            meta = st.metadata() or {}
            data: dict[str, Any] = {k: st.get_tensor(k) for k in st.keys()}
    except (SafetensorError, OSError, ValueError, TypeError) as exc:
        raise PosteriorError(f"cannot read '{path}' as safetensors ({exc})") from None
    if "vocab" in meta:
        raw = meta["vocab"]
        try:
            words = json.loads(raw) if raw.lstrip().startswith("[") else raw.split("\n")
        except json.JSONDecodeError:
            raise PosteriorError(f"'{path}': metadata 'vocab' is not a JSON list of words") from None
        data["vocab"] = words
    return _from_mapping(data, f"'{path.name}' (safetensors)")


# ----------------------------------------------------------------------- structures


def _from_mapping(obj: Any, where: str) -> Posterior:
    """Interpret a loaded container: param store, guide state dict, or plain loc/scale dict."""
    if not isinstance(obj, Mapping):
        raise PosteriorError(f"{where} holds a {type(obj).__name__}, not a dict of posterior tensors")
    obj = dict(obj)
    vocab = obj.pop("vocab", None)
    if vocab is not None:
        if not isinstance(vocab, (list, tuple)) or not all(isinstance(w, str) for w in vocab):
            raise PosteriorError(f"{where}: 'vocab' must be a list of strings, found {type(vocab).__name__}")
        vocab = validate_words(list(vocab), f"vocabulary in {where}")
    warnings: list[str] = []
    if "params" in obj and "constraints" in obj and isinstance(obj["params"], Mapping):
        pairs, kind = _pairs_from_param_store(obj["params"], obj["constraints"], where, warnings)
    elif any(_is_state_dict_key(k) for k in obj):
        pairs, kind = _pairs_from_guide_state_dict(obj, where, warnings)
    elif any(isinstance(k, str) and k.rsplit(".", 1)[-1] in _BAYESIAN_TORCH_MU for k in obj):
        pairs, kind = _pairs_from_bayesian_torch(obj, where)
    elif set(obj) == {"mean", "variance"} and all(isinstance(v, Mapping) for v in obj.values()):
        pairs, kind = _pairs_from_mean_variance(obj["mean"], obj["variance"], where)
    else:
        pairs, kind = _pairs_from_plain(obj, where)
    if FLAT_LATENT_NAME in pairs and kind.startswith("Pyro"):
        warnings.append(
            "AutoDiagonalNormal posterior read without its model: packed as one flat tensor "
            f"'{FLAT_LATENT_NAME}' (all sample sites concatenated)"
        )
    tensors = {name: _make_tensor(name, loc, scale, where) for name, (loc, scale) in pairs.items()}
    return Posterior(tensors, vocab, f"{kind}: {where}", warnings)


def _is_state_dict_key(key: Any) -> bool:
    return isinstance(key, str) and (
        (key.startswith(("locs.", "scales.")) and key.endswith("_unconstrained")) or key == "scale_unconstrained"
    )


def _pairs_from_param_store(params: Mapping, constraints: Any, where: str, warnings: list[str]) -> tuple[dict, str]:
    """AutoNormal (``G.locs.X`` / ``G.scales.X``), TyXe-style suffixes (``G.X.loc`` / ``G.X.scale``),
    and the flat ``G.loc`` / ``G.scale`` of continuous guides (AutoDiagonalNormal; low-rank
    ``cov_factor`` and full ``scale_tril`` give marginal scales), also inside AutoGuideList
    (``AutoGuideList.1.loc``). Parameters that fit none of these are ignored with a warning."""
    from torch.distributions import transform_to

    constraints = constraints if isinstance(constraints, Mapping) else {}

    def constrained(key: str) -> Any:  # as Pyro's param store does: transform_to(constraint)
        value = params[key]
        if key in constraints:
            try:
                value = transform_to(constraints[key])(_as_tensor(value))
            except NotImplementedError:
                raise PosteriorError(f"{where}: parameter '{key}' has an unsupported constraint") from None
        return value

    pairs: dict[str, tuple[Any, Any]] = {}
    flat: dict[str, tuple[Any, Any]] = {}
    guides: set[str] = set()
    used: set[str] = set()
    for key in params:
        if not isinstance(key, str):
            continue
        if ".locs." in key:  # AutoNormal: <guide>.locs.<site>; site names may contain dots
            prefix, site = key.split(".locs.", 1)
            scale_key = f"{prefix}.scales.{site}"
            if scale_key not in params:
                raise PosteriorError(f"{where}: '{key}' has no matching '{scale_key}'")
            pairs[site] = (constrained(key), constrained(scale_key))
            guides.add(prefix)
            used |= {key, scale_key}
            continue
        if not (key.endswith(".loc") and key[: -len(".loc")] + ".scale" in params):
            continue
        prefix = key[: -len(".loc")]
        guide, _, rest = prefix.partition(".")
        loc, scale = constrained(key), _as_tensor(constrained(prefix + ".scale"))
        if rest and not rest.isdigit():  # TyXe: <guide>.<site>.loc
            pairs[rest] = (loc, scale)
            guides.add(guide)
            used |= {key, prefix + ".scale"}
            continue
        if _as_tensor(loc).dim() != 1 or tuple(scale.shape) != tuple(_as_tensor(loc).shape):
            continue  # not a continuous guide's flat vector (e.g. a user's pyro.param); reported below
        if f"{prefix}.scale_tril" in params:  # AutoMultivariateNormal: scale[:, None] * scale_tril
            tril = _as_tensor(constrained(f"{prefix}.scale_tril"))
            scale = scale * (tril**2).sum(-1).sqrt()
            warnings.append(f"'{prefix}' {_NOT_MEAN_FIELD}")
            used.add(f"{prefix}.scale_tril")
        elif f"{prefix}.cov_factor" in params:  # AutoLowRankMultivariateNormal
            cov_factor = _as_tensor(constrained(f"{prefix}.cov_factor"))
            scale = scale * (1 + (cov_factor**2).sum(-1)).sqrt()
            warnings.append(f"'{prefix}' {_NOT_MEAN_FIELD}")
            used.add(f"{prefix}.cov_factor")
        flat[prefix] = (loc, scale)
        guides.add(prefix)
        used |= {key, prefix + ".scale"}
    for prefix, pair in flat.items():  # one flat guide is "latent"; several are "<guide>.latent"
        pairs[FLAT_LATENT_NAME if len(flat) == 1 else f"{prefix}.{FLAT_LATENT_NAME}"] = pair
    if not pairs:
        sample = ", ".join(list(map(str, params))[:5])
        raise PosteriorError(
            f"{where} is a Pyro param store without guide loc/scale parameters "
            f"(found: {sample}); save the guide's parameters after training"
        )
    ignored = [k for k in params if k not in used]
    if ignored:
        warnings.append(
            f"ignored {len(ignored)} parameter(s) that are not guide loc/scale pairs: "
            f"{', '.join(map(str, ignored[:5]))}{' ...' if len(ignored) > 5 else ''}"
        )
    return pairs, f"Pyro param store ({', '.join(sorted(guides))})"


_NOT_MEAN_FIELD = "is not mean-field: packing its marginal standard deviations drops the correlations between weights"


def _pairs_from_guide_state_dict(sd: Mapping, where: str, warnings: list[str]) -> tuple[dict, str]:
    """``torch.save(guide.state_dict())`` of AutoNormal (``locs.X_unconstrained``), or of a
    continuous guide: AutoDiagonalNormal, AutoLowRankMultivariateNormal (``cov_factor``) and
    AutoMultivariateNormal (``scale_tril_unconstrained``), read as one flat tensor."""
    import torch.nn.functional as F
    from pyro.distributions import constraints
    from torch.distributions import transform_to

    pairs: dict[str, tuple[Any, Any]] = {}
    for key in sd:
        if isinstance(key, str) and key.startswith("locs.") and key.endswith("_unconstrained"):
            site = key[len("locs.") : -len("_unconstrained")]
            scale_key = f"scales.{site}_unconstrained"
            if scale_key not in sd:
                raise PosteriorError(f"{where}: '{key}' has no matching '{scale_key}'")
            pairs[site] = (sd[key], F.softplus(_as_tensor(sd[scale_key])))
    if "loc" in sd and "scale_unconstrained" in sd:
        # AutoDiagonalNormal / AutoLowRank / AutoMultivariateNormal all store a softplus-positive scale
        scale = F.softplus(_as_tensor(sd["scale_unconstrained"]))
        if "scale_tril_unconstrained" in sd:  # AutoMultivariateNormal: scale[:, None] * unit lower Cholesky
            tril = transform_to(constraints.unit_lower_cholesky)(_as_tensor(sd["scale_tril_unconstrained"]))
            scale = scale * (tril**2).sum(-1).sqrt()
            warnings.append(f"the multivariate normal guide {_NOT_MEAN_FIELD}")
        elif "cov_factor" in sd:
            scale = scale * (1 + (_as_tensor(sd["cov_factor"]) ** 2).sum(-1)).sqrt()
            warnings.append(f"the low-rank multivariate normal guide {_NOT_MEAN_FIELD}")
        pairs[FLAT_LATENT_NAME] = (sd["loc"], scale)
    if not pairs:
        raise PosteriorError(f"{where}: found guide state-dict keys but no loc/scale pairs")
    return pairs, "Pyro guide state dict"


_BAYESIAN_TORCH_MU = {"mu_weight": "weight", "mu_kernel": "weight", "mu_bias": "bias"}


def _pairs_from_bayesian_torch(sd: Mapping, where: str) -> tuple[dict, str]:
    """bayesian-torch layers: ``L.mu_weight`` / ``L.rho_weight`` (``mu_kernel`` for convolutions),
    scale = softplus(rho); named ``L.weight`` / ``L.bias`` like the deterministic layer they replace."""
    import torch.nn.functional as F

    pairs: dict[str, tuple[Any, Any]] = {}
    for key in sd:
        if not isinstance(key, str):
            continue
        prefix, _, leaf = key.rpartition(".")
        if leaf not in _BAYESIAN_TORCH_MU:
            continue
        rho_key = f"{prefix}.rho_{leaf[3:]}" if prefix else f"rho_{leaf[3:]}"
        if rho_key not in sd:
            raise PosteriorError(f"{where}: '{key}' has no matching '{rho_key}'")
        name = f"{prefix}.{_BAYESIAN_TORCH_MU[leaf]}" if prefix else _BAYESIAN_TORCH_MU[leaf]
        pairs[name] = (sd[key], F.softplus(_as_tensor(sd[rho_key])))
    return pairs, "bayesian-torch state dict"


def _pairs_from_mean_variance(means: Mapping, variances: Mapping, where: str) -> tuple[dict, str]:
    """Two state dicts with the same keys: posterior means and variances (scale = sqrt(variance))."""
    if set(means) != set(variances):
        diff = sorted(set(means) ^ set(variances))
        raise PosteriorError(f"{where}: 'mean' and 'variance' must have the same tensor names; differ in {diff[:5]}")
    pairs = {}
    for name in means:
        var = _as_tensor(variances[name])
        if var.is_floating_point() and bool((var < 0).any()):
            raise PosteriorError(f"{where}: variance of '{name}' has negative values; variances must be >= 0")
        pairs[name] = (means[name], var.sqrt() if var.is_floating_point() else var)
    return pairs, "mean/variance state dicts"


def _pairs_from_plain(obj: Mapping, where: str) -> tuple[dict, str]:
    pairs: dict[str, tuple[Any, Any]] = {}
    for key, value in obj.items():
        if not isinstance(key, str):
            raise PosteriorError(f"{where}: keys must be tensor names (strings), found {key!r}")
        if isinstance(value, Mapping):
            if set(value) != {"loc", "scale"}:
                raise PosteriorError(
                    f"{where}: entry '{key}' must have exactly the keys 'loc' and 'scale', found {sorted(value)}"
                )
            pairs[key] = (value["loc"], value["scale"])
        elif isinstance(value, tuple) and len(value) == 2:
            pairs[key] = value
        elif key.endswith(".loc"):
            name = key[: -len(".loc")]
            if name + ".scale" not in obj:
                raise PosteriorError(f"{where}: '{key}' has no matching '{name}.scale'")
            pairs[name] = (value, obj[name + ".scale"])
        elif key.endswith(".scale"):
            if key[: -len(".scale")] + ".loc" not in obj:
                raise PosteriorError(f"{where}: '{key}' has no matching '{key[: -len('.scale')]}.loc'")
        else:
            raise PosteriorError(
                f"{where}: cannot tell what '{key}' is; expected a Pyro param store, a guide state dict, "
                "{name: {'loc': T, 'scale': T}} or flat 'name.loc' / 'name.scale' keys"
            )
    if not pairs:
        raise PosteriorError(f"{where} contains no posterior tensors")
    return pairs, "loc/scale dict"


def _as_tensor(x: Any) -> Any:
    import torch

    return x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))


def _to_numpy(name: str, what: str, value: Any, where: str) -> tuple[np.ndarray, str]:
    try:
        import torch

        if isinstance(value, torch.Tensor):
            value = value.detach()
            dtype = str(value.dtype).removeprefix("torch.")
            if dtype not in _FLOAT_DTYPES:
                raise PosteriorError(f"{where}: {what} of '{name}' has dtype {dtype}; it must be floating point")
            return value.to(dtype=torch.float32, device="cpu").numpy(), dtype
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError) as exc:
        raise PosteriorError(f"{where}: {what} of '{name}' is not an array ({exc})") from None
    if arr.dtype.kind != "f" or arr.dtype.itemsize not in (2, 4, 8):
        raise PosteriorError(f"{where}: {what} of '{name}' has dtype {arr.dtype}; it must be floating point")
    dtype = arr.dtype.newbyteorder("=").name
    return np.asarray(arr, dtype=np.float32, order="C").reshape(arr.shape), dtype


def _make_tensor(name: str, loc: Any, scale: Any, where: str) -> TensorPosterior:
    loc_arr, dtype = _to_numpy(name, "loc", loc, where)
    scale_arr, _ = _to_numpy(name, "scale", scale, where)
    if loc_arr.shape != scale_arr.shape:
        raise PosteriorError(
            f"{where}: loc of '{name}' has shape {loc_arr.shape} but scale has {scale_arr.shape}; they must match"
        )
    if loc_arr.size == 0:
        raise PosteriorError(f"{where}: tensor '{name}' is empty (shape {loc_arr.shape})")
    bad = int(np.count_nonzero(~np.isfinite(loc_arr)))
    if bad:
        raise PosteriorError(f"{where}: loc of '{name}' has {bad} NaN/inf values; means must be finite")
    bad = int(np.count_nonzero(~(np.isfinite(scale_arr) & (scale_arr > 0))))
    if bad:
        raise PosteriorError(
            f"{where}: scale of '{name}' has {bad} NaN/inf or non-positive values; scales must be finite and > 0"
        )
    return TensorPosterior(loc_arr, scale_arr, dtype)


# ---------------------------------------------------------------------- live guides


def _is_pyro_guide(obj: Any) -> bool:
    try:
        from pyro.infer.autoguide import AutoGuide
    except ImportError:  # pragma: no cover
        return False
    return isinstance(obj, AutoGuide)


def _from_live_guide(guide: Any) -> Posterior:
    import torch
    from pyro.infer.autoguide import AutoContinuous, AutoDiagonalNormal, AutoNormal

    name = type(guide).__name__
    warnings: list[str] = []
    if getattr(guide, "prototype_trace", None) is None:
        raise PosteriorError(f"the {name} guide has no parameters yet; run it (or train it) once before packing")
    with torch.no_grad():
        if isinstance(guide, AutoNormal):
            sites = [site for site, _ in guide.prototype_trace.iter_stochastic_nodes()]
            pairs = {site: guide._get_loc_and_scale(site) for site in sites}
        elif isinstance(guide, AutoContinuous) and hasattr(guide, "get_posterior"):
            posterior = guide.get_posterior()
            if not hasattr(posterior, "variance") or posterior.mean.dim() != 1:
                raise PosteriorError(f"cannot read a diagonal from the {name} guide's posterior")
            loc, scale = posterior.mean, posterior.variance.sqrt()
            if not isinstance(guide, AutoDiagonalNormal):
                warnings.append(f"the {name} guide {_NOT_MEAN_FIELD}")
            locs = {site["name"]: value for site, value in guide._unpack_latent(loc)}
            scales = {site["name"]: value for site, value in guide._unpack_latent(scale)}
            pairs = {site: (locs[site], scales[site]) for site in locs}
        elif hasattr(guide, "get_loc") and hasattr(guide, "get_scale"):  # TyXe's AutoNormal
            sites = [site for site, _ in guide.prototype_trace.iter_stochastic_nodes()]
            pairs = {site: (guide.get_loc(site), guide.get_scale(site)) for site in sites}
        else:
            raise PosteriorError(
                f"cannot pack a {name} guide; use AutoNormal, AutoDiagonalNormal or AutoLowRankMultivariateNormal"
            )
    tensors = {n: _make_tensor(n, loc, scale, f"{name} guide") for n, (loc, scale) in pairs.items()}
    return Posterior(tensors, None, f"live {name} guide", warnings)


def ivon_posterior(model: Any, optimizer: Any) -> Posterior:
    """The Gaussian posterior an IVON optimizer (ivon-opt) holds for ``model``'s parameters.

    Means are the parameters; scale = 1 / sqrt(ess * (hess + weight_decay)) per weight, as
    defined by IVON (Shen et al., 2024). Names are ``model.named_parameters()`` names.

    Example:
        >>> import torch, ivon                                          # doctest: +SKIP
        >>> opt = ivon.IVON(model.parameters(), lr=0.1, ess=len(data))  # doctest: +SKIP
        >>> bnncompress.pack(ivon_posterior(model, opt), "model.bnc")   # doctest: +SKIP
    """
    import torch

    names = {id(p): n for n, p in model.named_parameters()}
    pairs = {}
    with torch.no_grad():
        for group in optimizer.param_groups:
            if "hess" not in group or "ess" not in group:
                raise PosteriorError("the optimizer is not IVON: its parameter groups have no 'hess' and 'ess'")
            scale = 1.0 / torch.sqrt(group["ess"] * (group["hess"] + group["weight_decay"]))
            offset = 0
            for p in group["params"]:
                if id(p) not in names:
                    raise PosteriorError("the IVON optimizer holds a parameter that is not in the model")
                pairs[names[id(p)]] = (p.detach(), scale[offset : offset + p.numel()].view_as(p))
                offset += p.numel()
    tensors = {n: _make_tensor(n, loc, scale, "IVON optimizer") for n, (loc, scale) in pairs.items()}
    return Posterior(tensors, None, "IVON optimizer state")

"""Quantization methods, one module each, behind one interface (:mod:`.base`), in a registry.

``get_quantizer(name, **options)`` builds a method; ``get_config(q)`` is its name and options;
``from_config(config)`` rebuilds it — also from the ``method`` and ``params`` an archive stores
for each tensor (extra fitted values there, such as the prior, are ignored).

Example:
    >>> q = get_quantizer("vbq-direction", trust=0.5)
    >>> from_config(get_config(q)).options() == q.options()
    True
"""

from __future__ import annotations

import inspect
from typing import Any

from ..errors import OptionError
from .base import (
    Block,
    FittedQuantizer,
    InMemoryFit,
    QuantizedTensor,
    Quantizer,
    Rows,
    SampleRows,
    compact,
    fit_in_memory,
    narrow_counts,
    used_grid,
)
from .entropy_constrained import EntropyConstrainedVBQ, VBQDirection
from .float16 import Float16
from .kmeans import KMeans, WeightedKMeans
from .pq import ProductQuantization
from .transform import TransformVBQ
from .uniform import Uniform
from .vbq import VBQ

#: Method name -> quantizer class; the first is the default.
METHODS: dict[str, type[Quantizer]] = {}
#: Options every method accepts and uses where it can; they are not stored in archives.
COMMON_OPTIONS = ("device",)


def register_quantizer(cls: type[Quantizer]) -> type[Quantizer]:
    """Add a method to :data:`METHODS` under ``cls.name`` (usable as a class decorator)."""
    if cls.name in METHODS and METHODS[cls.name] is not cls:
        raise ValueError(f"a quantizer named {cls.name!r} is already registered")
    METHODS[cls.name] = cls
    return cls


for _cls in (
    TransformVBQ,
    VBQDirection,
    VBQ,
    EntropyConstrainedVBQ,
    Uniform,
    KMeans,
    WeightedKMeans,
    ProductQuantization,
    Float16,
):
    register_quantizer(_cls)
DEFAULT_METHOD = TransformVBQ.name


def option_names(method: str) -> list[str]:
    """The options a method takes (its constructor keywords)."""
    cls = _method_class(method)
    return [k for k in inspect.signature(cls.__init__).parameters if k != "self"]


def get_quantizer(method: str = DEFAULT_METHOD, *, device: str = "auto", **options: Any) -> Quantizer:
    """Instantiate a quantization method by name, e.g. ``get_quantizer("vbq", device="cpu")``.

    ``device`` goes to the methods that use it; ``options`` are the method's own (an unknown
    one, or a value out of range, is an :class:`~bnncompress.OptionError`).
    """
    accepted = option_names(method)
    unknown = [k for k in options if k not in accepted or k in COMMON_OPTIONS]
    if unknown:
        known = [k for k in accepted if k not in COMMON_OPTIONS]
        raise OptionError(
            f"method {method!r} does not take option {unknown[0]!r}; its options: {', '.join(known) or 'none'}"
        )
    if "device" in accepted:
        options["device"] = device
    try:
        return METHODS[method](**options)
    except (TypeError, ValueError) as exc:
        raise OptionError(f"bad option for method {method!r}: {exc}") from None


def get_config(quantizer: Quantizer) -> dict[str, Any]:
    """``{"method": name, **options}``: everything :func:`from_config` needs."""
    return {"method": quantizer.name, **quantizer.options()}


def from_config(config: dict[str, Any], device: str = "auto") -> Quantizer:
    """The quantizer a config (or an archive record's ``{"method": ..., **params}``) describes."""
    method = config.get("method")
    accepted = set(option_names(str(method))) - set(COMMON_OPTIONS)
    return get_quantizer(str(method), device=device, **{k: v for k, v in config.items() if k in accepted})


def _method_class(method: str) -> type[Quantizer]:
    try:
        return METHODS[method]
    except (KeyError, TypeError):
        raise OptionError(f"unknown method {method!r}; choose one of: {', '.join(METHODS)}") from None


__all__ = [
    "METHODS",
    "DEFAULT_METHOD",
    "Block",
    "FittedQuantizer",
    "InMemoryFit",
    "QuantizedTensor",
    "Quantizer",
    "Rows",
    "SampleRows",
    "VBQ",
    "VBQDirection",
    "EntropyConstrainedVBQ",
    "TransformVBQ",
    "Uniform",
    "KMeans",
    "WeightedKMeans",
    "Float16",
    "ProductQuantization",
    "compact",
    "fit_in_memory",
    "from_config",
    "get_config",
    "get_quantizer",
    "narrow_counts",
    "option_names",
    "register_quantizer",
    "used_grid",
]

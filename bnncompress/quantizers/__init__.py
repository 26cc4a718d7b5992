"""Quantization methods, one module each, behind one interface (:mod:`.base`)."""

from __future__ import annotations

from ..errors import OptionError
from .base import FittedQuantizer, QuantizedTensor, Quantizer, compact
from .entropy_constrained import EntropyConstrainedVBQ, VBQDirection
from .float16 import Float16
from .kmeans import KMeans, WeightedKMeans
from .pq import ProductQuantization
from .uniform import Uniform
from .vbq import VBQ

#: Method name -> quantizer class; the first is the default.
METHODS: dict[str, type[Quantizer]] = {
    cls.name: cls
    for cls in (VBQDirection, VBQ, EntropyConstrainedVBQ, Uniform, KMeans, WeightedKMeans, ProductQuantization, Float16)
}
DEFAULT_METHOD = VBQDirection.name


def get_quantizer(
    method: str = DEFAULT_METHOD, *, device: str = "auto", max_level: int | None = None, **options
) -> Quantizer:
    """Instantiate a quantization method by name, e.g. ``get_quantizer("vbq", device="cpu")``.

    ``device`` and ``max_level`` go to the methods that use them; ``options`` are the method's own
    (an unknown one is an error).
    """
    import inspect

    try:
        cls = METHODS[method]
    except KeyError:
        raise OptionError(f"unknown method {method!r}; choose one of: {', '.join(METHODS)}") from None
    accepted = inspect.signature(cls.__init__).parameters
    unknown = [k for k in options if k not in accepted or k == "self"]
    if unknown:
        known = [k for k in accepted if k not in ("self", "device", "max_level")]
        raise OptionError(
            f"method {method!r} does not take option {unknown[0]!r}; its options: {', '.join(known) or 'none'}"
        )
    common = {"device": device, "max_level": max_level}
    options.update({k: v for k, v in common.items() if k in accepted and v is not None})
    try:
        return cls(**options)
    except TypeError as exc:
        raise OptionError(f"bad option for method {method!r}: {exc}") from None


__all__ = [
    "METHODS",
    "DEFAULT_METHOD",
    "FittedQuantizer",
    "QuantizedTensor",
    "Quantizer",
    "VBQ",
    "VBQDirection",
    "EntropyConstrainedVBQ",
    "Uniform",
    "KMeans",
    "WeightedKMeans",
    "Float16",
    "ProductQuantization",
    "compact",
    "get_quantizer",
]

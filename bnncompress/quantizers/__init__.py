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
    cls.name: cls for cls in (VBQDirection, VBQ, EntropyConstrainedVBQ, Uniform, KMeans, WeightedKMeans, ProductQuantization, Float16)
}
DEFAULT_METHOD = VBQDirection.name


def get_quantizer(method: str = DEFAULT_METHOD, **options) -> Quantizer:
    """Instantiate a quantization method by name, e.g. ``get_quantizer("vbq", device="cpu")``."""
    try:
        cls = METHODS[method]
    except KeyError:
        raise OptionError(f"unknown method {method!r}; choose one of: {', '.join(METHODS)}") from None
    try:
        return cls(**options)
    except TypeError as exc:
        raise OptionError(f"method {method!r} does not take these options: {exc}") from None


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

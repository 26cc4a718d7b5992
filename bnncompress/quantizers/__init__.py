"""Quantization methods, one module each, behind one interface (:mod:`.base`)."""

from __future__ import annotations

from ..errors import OptionError
from .base import FittedQuantizer, QuantizedTensor, Quantizer, compact
from .vbq import VBQ

#: Method name -> quantizer class. ``vbq`` is the default.
METHODS: dict[str, type[Quantizer]] = {VBQ.name: VBQ}
DEFAULT_METHOD = VBQ.name


def get_quantizer(method: str = DEFAULT_METHOD, **options) -> Quantizer:
    """Instantiate a quantization method by name, e.g. ``get_quantizer("vbq", device="cpu")``."""
    try:
        cls = METHODS[method]
    except KeyError:
        raise OptionError(f"unknown method {method!r}; choose one of: {', '.join(METHODS)}") from None
    return cls(**options)


__all__ = [
    "METHODS",
    "DEFAULT_METHOD",
    "FittedQuantizer",
    "QuantizedTensor",
    "Quantizer",
    "VBQ",
    "compact",
    "get_quantizer",
]

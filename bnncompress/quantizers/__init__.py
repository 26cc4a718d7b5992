"""Quantization methods, one module each, behind one interface (:mod:`.base`), in a registry (:mod:`.registry`).

``get_quantizer(name, **options)`` builds a method; ``get_config(q)`` is its name and options;
``from_config(config)`` rebuilds it — also from the ``method`` and ``params`` an archive stores
for each tensor (the fitted values stored there, such as the prior, are ignored). A method is
one module whose class is decorated with ``@register_quantizer``; importing this package
imports the package's own.

Example:
    >>> q = get_quantizer("vbq-direction", trust=0.5)
    >>> from_config(get_config(q)) == q
    True
    >>> q  # doctest: +NORMALIZE_WHITESPACE
    VBQDirection(max_level=10, trust=0.5, row_weight=0.75, iterations=3, centroids=True, cap=0.0,
                 table_cost=0.5, levelled=False)
"""

from __future__ import annotations

from .base import (
    Block,
    Fallback,
    FittedQuantizer,
    QuantizedTensor,
    Quantizer,
    Rows,
    SampleRows,
    compact,
    narrow_counts,
    used_grid,
)
from .column_grids import ClassValues
from .entropy_constrained import EntropyConstrainedVBQ, VBQDirection
from .float16 import Float16
from .kmeans import KMeans, WeightedKMeans
from .pq import ProductQuantization
from .registry import (
    COMMON_OPTIONS,
    DEFAULT_METHOD,
    METHODS,
    check_requirements,
    from_config,
    get_config,
    get_quantizer,
    list_first,
    method_class,
    option_names,
    register_quantizer,
)
from .transform import TransformVBQ
from .uniform import Uniform
from .vbq import VBQ

# How the package's methods are listed (CLI choices, sweeps): the default first, then by family.
list_first(
    (DEFAULT_METHOD, "vbq-direction", "vbq", "vbq-empirical", "uniform", "kmeans", "weighted-kmeans", "pq", "float16")
)

__all__ = [
    "ClassValues",
    "COMMON_OPTIONS",
    "check_requirements",
    "METHODS",
    "DEFAULT_METHOD",
    "Block",
    "Fallback",
    "FittedQuantizer",
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
    "from_config",
    "get_config",
    "get_quantizer",
    "method_class",
    "narrow_counts",
    "option_names",
    "register_quantizer",
    "used_grid",
]

"""The registry of quantization methods: a plain dict filled by :func:`register_quantizer`.

Each method's module registers its class where it is defined (``@register_quantizer``); a
method outside the package does the same, or is named in the entry-point group
``bnncompress.quantizers`` of its distribution and loaded when first asked for. A method is
rebuilt from its config, ``{"method": name, **options}`` (:func:`get_config` /
:func:`from_config`) — also from the ``method`` and ``params`` an archive stores for each
tensor, which hold the options besides what was fitted (ignored here).

Example:
    >>> from bnncompress.quantizers import VBQDirection
    >>> q = get_quantizer("vbq-direction", trust=0.5)
    >>> from_config(get_config(q)) == q, q == VBQDirection()
    (True, False)
"""

from __future__ import annotations

from importlib import metadata
from typing import TYPE_CHECKING, Any, TypeVar

from ..errors import OptionError

if TYPE_CHECKING:
    from .base import Quantizer

Q = TypeVar("Q", bound="type[Quantizer]")

#: Method name -> quantizer class, in registration order (see :func:`list_first`).
METHODS: dict[str, type[Quantizer]] = {}
#: The method used when none is named.
DEFAULT_METHOD = "vbq-transform"
#: Options every method accepts and uses where it can; they are not part of a config.
COMMON_OPTIONS = ("device",)
#: Entry-point group naming methods of other distributions (``name = "module:Class"``).
ENTRY_POINT_GROUP = "bnncompress.quantizers"


def register_quantizer(cls: Q) -> Q:
    """Add a method to :data:`METHODS` under ``cls.name`` (a class decorator)."""
    if cls.name in METHODS and METHODS[cls.name] is not cls:
        raise ValueError(f"a quantizer named {cls.name!r} is already registered")
    METHODS[cls.name] = cls
    return cls


def list_first(names: tuple[str, ...]) -> None:
    """List the registered methods ``names`` first, in that order (CLI choices, sweeps); others follow."""
    for name in names:
        METHODS[name] = METHODS.pop(name)
    for name in [n for n in METHODS if n not in names]:
        METHODS[name] = METHODS.pop(name)


def method_class(method: str) -> type[Quantizer]:
    """The class registered as ``method`` (loaded from its entry point if another distribution names it)."""
    if isinstance(method, str) and method not in METHODS:
        for entry in metadata.entry_points(group=ENTRY_POINT_GROUP):
            if entry.name == method:
                register_quantizer(entry.load())
    try:
        return METHODS[method]
    except (KeyError, TypeError):
        raise OptionError(f"unknown method {method!r}; choose one of: {', '.join(METHODS)}") from None


def option_names(method: str) -> list[str]:
    """The options a method takes (``device`` included where the method uses one)."""
    return method_class(method).option_names()


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

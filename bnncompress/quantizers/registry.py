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

import importlib
import json
import os
import sys
import threading
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
#: Names a record's params give a meaning of their own (``support``: a Pyro constraint applied on load):
#: no method's option or fitted param may take them (the package's fallback fits write ``fallback``).
RESERVED_PARAMS = ("support", "stored", "lam", "fallback", "method")


def _same_class(a: type, b: type) -> bool:
    """The same class, or the same one defined again (a reloaded module, a notebook cell run twice)."""
    return a is b or (a.__module__, a.__qualname__) == (b.__module__, b.__qualname__)


def register_quantizer(cls: Q) -> Q:
    """Add a method to :data:`METHODS` under ``cls.name`` (a class decorator)."""
    if cls.name in METHODS and not _same_class(METHODS[cls.name], cls):
        raise ValueError(f"a quantizer named {cls.name!r} is already registered")
    clash = [name for name in cls.option_names() if name in RESERVED_PARAMS]
    if clash:
        raise ValueError(f"quantizer {cls.name!r}: an option cannot be named {clash[0]!r} (archives read it)")
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
                _load_entry_point(entry)
    try:
        return METHODS[method]
    except (KeyError, TypeError):
        raise OptionError(f"unknown method {method!r}; choose one of: {', '.join(METHODS)}") from None


def check_requirements(method: str) -> None:
    """OptionError if a module that ``method`` imports to run (:attr:`Quantizer.requires`) cannot be imported:
    said before any work (a sweep packed every other method first, then stopped at pq without FAISS).

    Example:
        >>> check_requirements("uniform")
    """
    cls = method_class(method)
    for module, package in cls.requires.items():
        try:
            _import_spinning_briefly(module)
        except ImportError as exc:  # (not installed, or installed and broken: its own reason said, in one line)
            why = " ".join(str(exc).split())
            raise OptionError(f"method {cls.name!r} needs {module}: pip install {package}; {why}") from None


#: libgomp's spin before an idle thread sleeps, while a method's own OpenMP runtime loads (see below).
SHORT_SPIN = "1000"
_SPIN_SETTINGS = ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")
_SPIN_IMPORT = threading.Lock()


def _import_spinning_briefly(module: str) -> None:
    """Import ``module``; a libgomp of its own that it loads (faiss's, which its OpenBLAS uses too) spins an idle
    thread 1,000 times, not 300,000, before it sleeps, unless the user set ``GOMP_SPINCOUNT`` or
    ``OMP_WAIT_POLICY``. libgomp reads them once, as it is loaded: runtimes loaded before or after keep theirs.
    Beside one busy process on 2 cores, faiss's spinning threads made ``--method pq`` 4-5x slower; the short
    spin is as fast as the long one on a quiet machine (benchmarks/bench_pq_threads.py)."""
    if sys.modules.get(module) is not None:  # (loaded: the environment is not touched while a pack's threads run)
        return
    with _SPIN_IMPORT:
        ours = not any(name in os.environ for name in _SPIN_SETTINGS)
        if ours:
            os.environ["GOMP_SPINCOUNT"] = SHORT_SPIN
        try:
            importlib.import_module(module)
        finally:
            if ours:
                os.environ.pop("GOMP_SPINCOUNT", None)


def _load_entry_point(entry: Any) -> None:
    """Register the method an entry point names, or say in one line what is wrong with it."""
    where = f"entry point {entry.name!r} ({entry.value})"
    dist = getattr(getattr(entry, "dist", None), "name", None)
    where += f" of {dist}" if dist else ""
    try:
        cls = entry.load()
    except Exception as exc:  # (an import error of the plug-in's own module: its name, in one line)
        raise OptionError(f"{where} cannot be loaded ({type(exc).__name__}: {exc})") from None
    if getattr(cls, "name", None) != entry.name:
        raise OptionError(f"{where} names a class whose method name is {getattr(cls, 'name', None)!r}, not its own")
    try:
        register_quantizer(cls)
    except ValueError as exc:
        raise OptionError(f"{where}: {exc}") from None


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
        quantizer = METHODS[method](**options)
    except (TypeError, ValueError) as exc:
        raise OptionError(f"bad option for method {method!r}: {exc}") from None
    try:  # (a plug-in's options as given; the package's are checked to plain types)
        json.dumps(quantizer.stored_options())
    except (TypeError, ValueError) as exc:
        raise OptionError(
            f"method {method!r}: an option JSON cannot store ({exc}); give plain numbers and strings"
        ) from None
    return quantizer


def get_config(quantizer: Quantizer) -> dict[str, Any]:
    """``{"method": name, **options}``: everything :func:`from_config` needs."""
    return {"method": quantizer.name, **quantizer.options()}


def from_config(config: dict[str, Any], device: str = "auto") -> Quantizer:
    """The quantizer a config (or an archive record's ``{"method": ..., **params}``) describes."""
    method = config.get("method")
    accepted = set(option_names(str(method))) - set(COMMON_OPTIONS)
    return get_quantizer(str(method), device=device, **{k: v for k, v in config.items() if k in accepted})

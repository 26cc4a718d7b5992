"""The buffers of a user's torch modules, put back as they were after bnncompress runs the model (to find
its sample sites, :mod:`bnncompress.modelsites`): a module in training mode updates them when called
(BatchNorm's running statistics), which would silently change the model the user trained.

Two ways to find the modules: those the model holds (:func:`reachable_modules`: the model itself, its
method's object, a ``functools.partial``'s arguments, the arguments it is called with, the globals and
closure variables its code names, a callable object's attributes), whose buffer tensors are put back by
identity and value; and those it calls in this thread (a global forward pre-hook for the run), whose
buffers are put back by value only (a ``functional_call`` gives a module other tensors for one call).
torch is imported on first use, like the rest of bnncompress's Pyro support.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import threading
import types
from collections.abc import Iterator
from typing import Any

#: How many steps from the model :func:`reachable_modules` follows (a global's attributes, their items ...).
REACH_DEPTH = 3
#: Items of a list, tuple or dict it looks at (a global holding a dataset is not walked).
REACH_ITEMS = 256


def reachable_modules(*roots: Any) -> list[Any]:
    """The torch modules ``roots`` are or hold, a few steps away (:data:`REACH_DEPTH`).

    Example:
        >>> import torch
        >>> net = torch.nn.BatchNorm1d(2)
        >>> [type(m).__name__ for m in reachable_modules(functools.partial(lambda x, n: n(x), n=net))]
        ['BatchNorm1d']
    """
    import torch

    found: dict[int, Any] = {}
    seen: set[int] = set()
    level = list(roots)
    for _ in range(REACH_DEPTH + 1):
        following: list[Any] = []
        for value in level:
            if id(value) in seen or value is None or isinstance(value, (types.ModuleType, type, str, bytes)):
                continue
            seen.add(id(value))
            if isinstance(value, torch.nn.Module):
                found[id(value)] = value
            elif not isinstance(value, torch.Tensor):
                following += _held(value)
        level = following
    return list(found.values())


def _held(value: Any) -> list[Any]:
    """What ``value`` holds that may be or hold a module: a partial's function and arguments, a bound
    method's object, a function's named globals and closure, a container's items, a callable's attributes."""
    if isinstance(value, functools.partial):
        return [value.func, *value.args, *value.keywords.values()]
    if isinstance(value, types.MethodType):
        return [value.__self__, value.__func__]
    if isinstance(value, types.FunctionType):
        names = value.__globals__
        return [names.get(n) for n in value.__code__.co_names] + [_cell(c) for c in value.__closure__ or ()]
    if isinstance(value, (list, tuple, set, frozenset)):
        return list(itertools.islice(value, REACH_ITEMS))
    if isinstance(value, dict):
        return list(itertools.islice(value.values(), REACH_ITEMS))
    if callable(value) and isinstance(getattr(value, "__dict__", None), dict):
        return list(itertools.islice(vars(value).values(), REACH_ITEMS))
    return []


def _cell(cell: Any) -> Any:
    try:
        return cell.cell_contents
    except ValueError:  # (an empty cell)
        return None


@contextlib.contextmanager
def buffers_kept(*roots: Any) -> Iterator[None]:
    """Puts back, when the block ends, the buffers of the modules ``roots`` hold (:func:`reachable_modules`)
    and of every module called in this thread meanwhile, where they changed.

    Example:
        >>> import torch
        >>> bn = torch.nn.BatchNorm1d(2)
        >>> with buffers_kept(bn):
        ...     _ = bn(torch.randn(4, 2) + 5)
        >>> bn.running_mean.tolist(), int(bn.num_batches_tracked)
        ([0.0, 0.0], 0)
    """
    import torch

    me, kept = threading.get_ident(), {}
    for module in reachable_modules(*roots):
        for sub in module.modules():
            _keep(kept, sub, held=True)

    def called(module: Any, args: Any) -> None:  # (before the module's own hooks: a lazy one's are not made yet)
        if threading.get_ident() == me:
            _keep(kept, module, held=False)

    handle = torch.nn.modules.module.register_module_forward_pre_hook(called)
    try:
        yield
    finally:
        handle.remove()
        _put_back(kept)


def _keep(kept: dict, module: Any, held: bool) -> None:
    """A copy of ``module``'s own plain buffers (not yet made ones of a lazy module, meta tensors, a vmap's
    wrapped ones: they hold no values to keep)."""
    if id(module) in kept:
        return
    import torch
    from torch.nn.parameter import is_lazy

    functorch = getattr(torch._C, "_functorch", None)
    wrapped = getattr(functorch, "is_functorch_wrapped_tensor", lambda tensor: False)
    entries, lazy = [], False
    for name, buffer in module.named_buffers(recurse=False):
        if is_lazy(buffer):
            lazy = True
        elif type(buffer) is torch.Tensor and not buffer.is_meta and not wrapped(buffer):
            entries.append((name, buffer, buffer.detach().clone()))
    kept[id(module)] = (module, entries, lazy, held)


def _put_back(kept: dict) -> None:
    import torch
    from torch.nn.parameter import is_lazy

    with torch.no_grad():
        for module, entries, lazy, held in kept.values():
            for name, buffer, copy in entries:
                if held and getattr(module, name, None) is not buffer:  # (a module that assigns a new tensor)
                    setattr(module, name, buffer)
                with torch.inference_mode(buffer.is_inference()):  # (an inference tensor changes only there)
                    if buffer.shape != copy.shape:  # (a module that resized it in place)
                        buffer.resize_(copy.shape)
                    if not torch.equal(buffer, copy):
                        buffer.copy_(copy)
            made = lazy and not any(is_lazy(b) for b in module.buffers(recurse=False))
            if made and hasattr(module, "reset_running_stats"):  # a lazy norm layer the run made: as if never run
                module.reset_running_stats()

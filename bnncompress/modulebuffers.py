"""The buffers of a user's torch modules, put back as they were after bnncompress runs the model (to find
its sample sites, :mod:`bnncompress.modelsites`): a module in training mode updates them in place when
called (BatchNorm's running statistics), which would silently change the model the user trained.

Copied before the run: the buffers of the model's own modules (the model, or a bound method's module, and
their submodules, whichever way the model then runs them: ``forward`` called directly, TorchScript). Copied
as they are first seen during the run: the buffers of every module called in this thread (a global forward
pre-hook), each tensor once (a ``functional_call`` first runs a module with other tensors). Values are put
back where they changed; the model's other objects are not searched (a search reads attributes, which can
run the user's code). A buffer a module replaces by another tensor (``self.avg = ...``) keeps the new one.
torch is imported on first use, like the rest of bnncompress's Pyro support.
"""

from __future__ import annotations

import contextlib
import threading
import types
from collections.abc import Callable, Iterator
from typing import Any


@contextlib.contextmanager
def buffers_kept(model: Any = None) -> Iterator[None]:
    """Puts back, when the block ends, the values of the buffers of ``model``'s own modules and of every
    module called in this thread meanwhile, where they changed.

    Example:
        >>> import torch
        >>> bn = torch.nn.BatchNorm1d(2)
        >>> with buffers_kept():
        ...     _ = bn(torch.randn(4, 2) + 5)
        >>> bn.running_mean.tolist(), int(bn.num_batches_tracked)
        ([0.0, 0.0], 0)
    """
    import torch

    me, kept, lazy, keeps = threading.get_ident(), {}, {}, _keepable()
    owner = model.__self__ if type(model) is types.MethodType else model  # (type(): no attribute of the model read)
    if issubclass(type(owner), torch.nn.Module):
        for module in owner.modules():
            _copy(module, kept, lazy, keeps)

    def called(module: Any, args: Any) -> None:  # (before the module's own hooks: a lazy one's are not made yet)
        if threading.get_ident() == me:
            _copy(module, kept, lazy, keeps)

    handle = torch.nn.modules.module.register_module_forward_pre_hook(called)
    try:
        yield
    finally:
        handle.remove()
        _put_back(kept.values(), lazy.values())


def _keepable() -> Callable[[Any], bool]:
    """Whether a buffer holds values to keep: a dense tensor (not a lazy module's unmade one, a meta tensor, a
    vmap's wrapped one). Made once per run: the hook asks at every module call."""
    import torch

    functorch = getattr(torch._C, "_functorch", None)
    wrapped = getattr(functorch, "is_functorch_wrapped_tensor", lambda tensor: False)
    return lambda buffer: (
        type(buffer) is torch.Tensor and buffer.layout == torch.strided and not buffer.is_meta and not wrapped(buffer)
    )


def _copy(module: Any, kept: dict, lazy: dict, keeps: Callable[[Any], bool]) -> None:
    """A copy of each of ``module``'s own buffers not copied yet that ``keeps``; a buffer a lazy module has not
    made yet marks the module in ``lazy``."""
    from torch.nn.parameter import is_lazy

    for buffer in module.buffers(recurse=False):
        if id(buffer) in kept:
            continue
        if is_lazy(buffer):
            lazy[id(module)] = module
        elif keeps(buffer):
            kept[id(buffer)] = (buffer, buffer.detach().clone())  # (the tensor is held: its id is not reused)


def _put_back(kept: Any, lazy: Any) -> None:
    import torch
    from torch.nn.parameter import is_lazy

    with torch.no_grad():
        for buffer, copy in kept:
            inference = torch.inference_mode() if buffer.is_inference() else contextlib.nullcontext()
            try:
                with inference:  # (an inference tensor changes only there)
                    if buffer.shape != copy.shape:  # (a module that resized it in place)
                        buffer.resize_(copy.shape)
                    if not torch.equal(buffer, copy) and not _same_with_nans(buffer, copy):
                        buffer.copy_(copy)
            except RuntimeError:  # (one that cannot be written to, e.g. expanded): left as the model made it
                pass
        for module in lazy:  # a lazy norm layer the run made: as if never run
            if not any(is_lazy(b) for b in module.buffers(recurse=False)) and hasattr(module, "reset_running_stats"):
                module.reset_running_stats()


def _same_with_nans(buffer: Any, copy: Any) -> bool:
    """Equal where NaNs count as equal (an unchanged buffer holding NaNs is not written to)."""
    import torch

    return bool(buffer.is_floating_point() and torch.allclose(buffer, copy, rtol=0.0, atol=0.0, equal_nan=True))

"""The buffers of a user's torch modules, put back as they were after bnncompress runs the model (to find
its sample sites, :mod:`bnncompress.modelsites`): a module in training mode updates them in place when
called (BatchNorm's running statistics), which would silently change the model the user trained.

Each module the model calls in this thread (a global forward pre-hook for the run) has its buffers copied
before its first call and their values put back afterwards where they changed. Only modules that run are
copied; the model's objects are not searched (a search reads attributes, which can run the user's code). A
buffer the module replaces by another tensor (``self.avg = ...``) keeps the new one. torch is imported on
first use, like the rest of bnncompress's Pyro support.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def buffers_kept() -> Iterator[None]:
    """Puts back, when the block ends, the values of the buffers of every module called in this thread
    meanwhile, where they changed.

    Example:
        >>> import torch
        >>> bn = torch.nn.BatchNorm1d(2)
        >>> with buffers_kept():
        ...     _ = bn(torch.randn(4, 2) + 5)
        >>> bn.running_mean.tolist(), int(bn.num_batches_tracked)
        ([0.0, 0.0], 0)
    """
    import torch

    me, kept = threading.get_ident(), {}

    def called(module: Any, args: Any) -> None:  # (before the module's own hooks: a lazy one's are not made yet)
        if threading.get_ident() == me and id(module) not in kept:
            kept[id(module)] = (module, *_copies(module))

    handle = torch.nn.modules.module.register_module_forward_pre_hook(called)
    try:
        yield
    finally:
        handle.remove()
        _put_back(kept.values())


def _copies(module: Any) -> tuple[list, bool]:
    """``([(buffer, its copy)], whether a buffer is not made yet)`` for ``module``'s own buffers that hold
    values to keep: dense tensors (not a lazy module's unmade ones, meta tensors, a vmap's wrapped ones)."""
    import torch
    from torch.nn.parameter import is_lazy

    functorch = getattr(torch._C, "_functorch", None)
    wrapped = getattr(functorch, "is_functorch_wrapped_tensor", lambda tensor: False)
    copies, lazy = [], False
    for buffer in module.buffers(recurse=False):
        if is_lazy(buffer):
            lazy = True
        elif (
            type(buffer) is torch.Tensor
            and buffer.layout == torch.strided
            and not buffer.is_meta
            and not wrapped(buffer)
        ):
            copies.append((buffer, buffer.detach().clone()))
    return copies, lazy


def _put_back(kept: Any) -> None:
    import torch
    from torch.nn.parameter import is_lazy

    with torch.no_grad():
        for module, copies, lazy in kept:
            for buffer, copy in copies:
                inference = torch.inference_mode() if buffer.is_inference() else contextlib.nullcontext()
                try:
                    with inference:  # (an inference tensor changes only there)
                        if buffer.shape != copy.shape:  # (a module that resized it in place)
                            buffer.resize_(copy.shape)
                        if not torch.equal(buffer, copy) and not _same_with_nans(buffer, copy):
                            buffer.copy_(copy)
                except RuntimeError:  # (one that cannot be written to, e.g. expanded): left as the model made it
                    continue
            made = lazy and not any(is_lazy(b) for b in module.buffers(recurse=False))
            if made and hasattr(module, "reset_running_stats"):  # a lazy norm layer the run made: as if never run
                module.reset_running_stats()


def _same_with_nans(buffer: Any, copy: Any) -> bool:
    """Equal where NaNs count as equal (an unchanged buffer holding NaNs is not written to)."""
    import torch

    return bool(buffer.is_floating_point() and torch.allclose(buffer, copy, rtol=0.0, atol=0.0, equal_nan=True))

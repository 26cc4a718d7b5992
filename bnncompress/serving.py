""":class:`CompressedEmbedding`: a ``torch.nn.Module`` embedding whose table stays compressed.

Made by ``Archive.embedding(name)``. ``forward(ids)`` decodes only the rows a batch needs that
are not in the tensor's bounded row cache (:mod:`bnncompress.servedrows`,
:mod:`bnncompress.rowcache`) and returns them as ``archive[name]`` has them. This module imports
torch and nothing else of the package, so ``import bnncompress`` stays free of torch.
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
import torch


class CompressedEmbedding(torch.nn.Module):
    """``nn.Embedding``'s lookup over rows that stay entropy-coded in memory.

    ``forward(ids)``: ``ids`` an integer tensor (int64 or int32) of any shape; returns
    ``archive[name][ids]`` as a tensor of shape ``ids.shape + (dim,)`` (float32 for float32 and
    bfloat16 tensors, else the tensor's dtype), bit for bit, on the device and in the dtype the module
    was moved to, as ``nn.Embedding`` (``.to(device)``, ``.half()``, ``.double()``, ``.to(dtype)``).
    An id outside ``[0, rows)`` raises ``IndexError``; ids on the meta device give a meta tensor of
    that shape. Under ``torch.compile`` the lookup runs eagerly (a graph break). It has no parameters
    (nothing to train; ``state_dict()`` is empty) and pickles by the archive's path (workers of a
    ``DataLoader`` reopen the file; a changed file is refused).

    Example:
        >>> emb = bnncompress.load("small.bnc").embedding()        # doctest: +SKIP
        >>> emb(torch.tensor([[3, 17], [17, 0]])).shape            # doctest: +SKIP
        torch.Size([2, 2, 50])
        >>> model = torch.nn.Sequential(emb, torch.nn.Linear(50, 2))   # doctest: +SKIP
    """

    def __init__(self, rows: Any):
        super().__init__()
        self.rows = rows  # a ServedRows: the record, its reader, the row cache
        # follows .to(device) and .half() / .to(dtype) as a weight would, and tells forward where to put its
        # output and in which dtype; not part of the state_dict
        natural = torch.from_numpy(np.empty(0, rows.dtype)).dtype
        self.register_buffer("device_marker", torch.empty(0, dtype=natural), persistent=False)

    @property
    def num_embeddings(self) -> int:
        return self.rows.shape[0]

    @property
    def embedding_dim(self) -> int:
        return self.rows.shape[1]

    def __prepare_scriptable__(self) -> CompressedEmbedding:  # torch.jit.script: said as jit.trace says it
        self.rows.refuse("torch.jit.script cannot compile the compressed lookup; use torch.compile or eager mode")
        return self

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_tracing():  # a trace would keep the rows of its example ids as constants
            self.rows.refuse("torch.jit.trace cannot trace the compressed lookup; use torch.compile or eager mode")
        if torch.compiler.is_compiling():  # torch.compile traced the numpy lookup into torch ops that fail
            return torch.compiler.disable(self._lookup)(ids)
        return self._lookup(ids)

    def _lookup(self, ids: Any) -> torch.Tensor:
        marker = self.device_marker
        if isinstance(ids, torch.fx.Proxy) or (isinstance(ids, torch.Tensor) and _traced(ids)):
            self.rows.refuse(
                f"{type(ids).__name__} ids: the compressed lookup takes plain tensors (FX, vmap and torch.export "
                "cannot trace it: it decodes rows in numpy); call it eagerly or under torch.compile"
            )
        if not isinstance(ids, torch.Tensor):  # lists, numpy arrays: checked as Archive.vectors checks them
            return torch.from_numpy(self.rows.lookup(ids)).to(device=marker.device, dtype=marker.dtype)
        if ids.layout != torch.strided:
            self.rows.refuse(f"row ids must be a dense tensor, not {ids.layout}; pass ids.to_dense()")
        if ids.is_meta:  # shape inference: no values to look up
            if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
                self.rows.refuse(f"row ids must be integers, not {ids.dtype}; pass a LongTensor")
            return torch.empty((*ids.shape, self.embedding_dim), dtype=marker.dtype, device="meta")
        with getattr(torch._C, "_DisableFuncTorch", contextlib.nullcontext)():  # (under torch.func.grad/jacrev the
            plain = ids.detach().cpu().numpy()  # ids are plain, but .numpy() failed: "doesn't have storage")
        values = torch.from_numpy(self.rows.lookup(plain))  # refuses non-integer ids
        return values.to(device=marker.device, dtype=marker.dtype)

    def memory_bytes(self) -> int:
        """Bytes of numpy arrays held to serve: the record, its reader, the row cache and (once a
        similarity query computed them) the row norms."""
        return self.rows.memory_bytes()

    def extra_repr(self) -> str:
        return self.rows.describe()


def _traced(ids: torch.Tensor) -> bool:
    """A tensor subclass (torch.export's fake tensors) or functorch's wrapper (vmap, grad): no values to read."""
    wrapped = getattr(torch._C._functorch, "is_functorch_wrapped_tensor", None)
    return type(ids) not in (torch.Tensor, torch.nn.Parameter) or bool(wrapped and wrapped(ids))

""":class:`CompressedEmbedding`: a ``torch.nn.Module`` embedding whose table stays compressed.

Made by ``Archive.embedding(name)``. ``forward(ids)`` decodes only the rows a batch needs that
are not in the tensor's bounded row cache (:mod:`bnncompress.servedrows`,
:mod:`bnncompress.rowcache`) and returns them as ``archive[name]`` has them. This module imports
torch and nothing else of the package, so ``import bnncompress`` stays free of torch.
"""

from __future__ import annotations

from typing import Any

import torch


class CompressedEmbedding(torch.nn.Module):
    """``nn.Embedding``'s lookup over rows that stay entropy-coded in memory.

    ``forward(ids)``: ``ids`` an integer tensor (int64 or int32) of any shape; returns
    ``archive[name][ids]`` as a tensor of shape ``ids.shape + (dim,)`` (float32 for float32 and
    bfloat16 tensors, else the tensor's dtype), bit for bit, on the device the module was moved to
    with ``.to(device)``. An id outside ``[0, rows)`` raises ``IndexError``. It has no parameters
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
        # follows .to(device) and tells forward where to put its output; not part of the state_dict
        self.register_buffer("device_marker", torch.empty(0), persistent=False)

    @property
    def num_embeddings(self) -> int:
        return self.rows.shape[0]

    @property
    def embedding_dim(self) -> int:
        return self.rows.shape[1]

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if not isinstance(ids, torch.Tensor):
            ids = torch.as_tensor(ids)
        values = self.rows.lookup(ids.detach().cpu().numpy())  # refuses non-integer ids (ArgumentTypeError)
        return torch.from_numpy(values).to(self.device_marker.device)

    def memory_bytes(self) -> int:
        """Bytes of numpy arrays held to serve: the record, its reader, the row cache and (once a
        similarity query computed them) the row norms."""
        return self.rows.memory_bytes()

    def extra_repr(self) -> str:
        return self.rows.describe()

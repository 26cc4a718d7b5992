"""A transform-coded tensor's blocks in its rotated basis (:mod:`.transform`): ``y = (x - mean) F``, each row's
RMS about the means and each column's range, computed by the fit's row pass and kept (within the fit's
:class:`~.passdata.PassData` allowance) for the first pass at a rate, which adds the distortion weights.

What is kept was rotated about the means and basis of the fit's row pass: :func:`kept_rows` hands it out only while
the fit still has those (a method derived from ``vbq-transform`` may change them after the fit), and an unpickled
copy of the fit (a Dask task's) keeps none, as nothing of it would reach a later pass.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from .base import Block
from .passdata import PassData

#: The key of a digest of the means and basis the kept rows were rotated about (then of whether the fit still has
#: them): 16 bytes in the allowance, where a copy of a 2048 x 2048 basis would take 32 MiB of it.
_BASIS = "rotated about"


def block_key(block: Block) -> tuple | None:
    """A block's key among the kept values (:attr:`Block.key`), or None: its values are not kept."""
    return block.key


def rotated_means(block: Block, mean: np.ndarray, forward: np.ndarray) -> tuple:
    """The block's rotated coordinates y (float64), its rows' RMS about the means, its columns' min and max of y."""
    from ._transform_cpu import rotate_means  # numba: imported on first use

    d = len(mean)
    y = np.empty(len(block.loc), np.float64)
    low, high = np.full(d, np.inf), np.full(d, -np.inf)
    rotate_means(block.loc, mean.astype(np.float64), np.asarray(forward, np.float64), y, low, high)
    rows = block.loc.reshape(-1, d).astype(np.float64)
    return y, np.sqrt(np.mean((rows - mean) ** 2, axis=1)), low, high


def _digest(mean: np.ndarray, forward: np.ndarray) -> np.ndarray:
    digest = hashlib.blake2b(digest_size=16)
    for a in (mean, forward):
        a = np.ascontiguousarray(a)
        digest.update(f"{a.dtype.str}{a.shape}".encode())
        digest.update(a.tobytes())
    return np.frombuffer(digest.digest(), np.uint8)


def keep_basis(kept: PassData, mean: np.ndarray, forward: np.ndarray) -> None:
    """Before the row pass: the digest of the means and basis its rows are rotated about, kept first."""
    kept.take(_BASIS)
    if kept.lasting:
        kept.put(_BASIS, _digest(mean, forward))


def keep_rows(kept: PassData, block: Block, found: tuple) -> None:
    """In the row pass: keep a block's :func:`rotated_means` for the first pass at a rate (not in a task's copy, nor
    without the digest they would be checked against)."""
    if kept.lasting and kept.get(_BASIS) is not None and block_key(block) is not None:
        kept.put(("means",) + block_key(block), found)


def kept_rows(kept: PassData, block: Block, mean: np.ndarray, forward: np.ndarray) -> Any:
    """The block's kept :func:`rotated_means`, taken (its bytes freed), if the fit still has the means and basis
    they were rotated about (compared once); else None."""
    basis = kept.get(_BASIS)
    if basis is not None and basis.dtype == np.uint8:  # (two threads may both compare: the same answer)
        basis = np.array(np.array_equal(basis, _digest(mean, forward)))
        kept.take(_BASIS)
        kept.put(_BASIS, basis)
    key = block_key(block)
    found = None if key is None else kept.take(("means",) + key)  # (freed either way: rows of other means are no use)
    return found if basis is not None and bool(basis) else None

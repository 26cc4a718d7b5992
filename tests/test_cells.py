"""Cell statistics of refinement passes: kept at the touched cells of a block when mostly zeros, and summed
one block at a time in block order (a pass holds the blocks in flight, not every block of the tensor)."""

from __future__ import annotations

import weakref

import numpy as np
import pytest

import bnncompress
from bnncompress.inmemory import fit_in_memory
from bnncompress.posterior import TensorPosterior
from bnncompress.quantizers import cells, get_quantizer, transform
from bnncompress.quantizers.cells import TouchedCells, add_cells, compact_cells, reduce_cells


def _block_stats(rng, classes: int, d: int, width: int, weights: int):
    """A block's dense statistics with ``weights`` weights in random cells (so most cells are zero)."""
    counts = np.zeros((classes * d, width), np.int64)
    total, moment = np.zeros((d, width)), np.zeros((d, width))
    for _ in range(weights):
        c, j, k = rng.integers(classes), rng.integers(d), rng.integers(width)
        w, y = rng.random(), rng.normal()
        counts[c * d + j, k] += 1
        total[j, k] += w
        moment[j, k] += w * y
    return counts, total, moment


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


@pytest.mark.parametrize("classes", [1, 3])
def test_touched_cells_sum_to_the_same_bits_as_dense_arrays(classes):
    rng = np.random.default_rng(5)
    dense = [_block_stats(rng, classes, 6, 40, 30) for _ in range(7)]
    compact = [compact_cells(*part, weights=30) for part in dense]
    assert all(isinstance(p, TouchedCells) for p in compact)  # 240 cells for 30 weights: kept sparse
    assert sum(p.cells.nbytes + p.counts.nbytes + p.total.nbytes + p.moment.nbytes for p in compact) < sum(
        sum(a.nbytes for a in part) for part in dense
    )
    expected = reduce_cells(iter(dense))
    alternating = [c if i % 2 else d for i, (c, d) in enumerate(zip(compact, dense))]
    for mixed in (compact, [compact[0]] + dense[1:], dense[:1] + compact[1:], alternating):
        got = reduce_cells(iter(mixed))
        assert all(_same_bits(g, e) for g, e in zip(got, expected))
    total, moment = np.zeros((6, 40)), np.zeros((6, 40))
    for part in compact:
        add_cells(total, moment, part)
    assert _same_bits(total, expected[1]) and _same_bits(moment, expected[2])
    assert compact_cells(*dense[0], weights=200)[1] is dense[0][1]  # as many weights as cells / 2: kept dense
    with pytest.raises(ValueError, match="no blocks"):
        reduce_cells(iter([]))


class _CountingRows:
    """A tensor's coding blocks as Rows that can stream their results, counting how many of a pass's block
    results are alive at once."""

    def __init__(self, blocks, shape):
        self.blocks, self.shape, self.representative = blocks, shape, self
        self.alive = self.most = 0

    def _gone(self) -> None:
        self.alive -= 1

    def imap(self, fn, *args):
        for block in self.blocks:
            out = fn(block, *args)
            weakref.finalize(_an_array(out), self._gone)
            self.alive += 1
            self.most = max(self.most, self.alive)
            yield out
            del out

    def map(self, fn, *args):
        return list(self.imap(fn, *args))


def _an_array(out):
    """An array only this block's result holds."""
    while not isinstance(out, np.ndarray):
        out = out.moment if isinstance(out, TouchedCells) else out[-1]
    return out


def test_a_refinement_pass_holds_the_blocks_in_flight_not_every_block():
    """The rate search's refinements and the class values' sums add each block's statistics as it comes
    (a 20,000 x 512 tensor at 2 bits held 1.6 GB of them at once)."""
    rng = np.random.default_rng(2)
    loc = (rng.normal(size=(6000, 4)) @ rng.normal(size=(4, 64))).astype(np.float32)
    job = fit_in_memory(get_quantizer("vbq-transform"), TensorPosterior(loc, np.full_like(loc, 0.05)))
    blocks = job.rows.blocks()
    assert len(blocks) >= 4
    rows = _CountingRows(blocks, loc.shape)
    state = job.fitted.at(0.01, rows)
    assert rows.most <= 2, rows.most
    rows.most = 0
    job.fitted.class_moments(state, rows)
    assert rows.most <= 2, rows.most


def test_a_pack_with_touched_cells_writes_the_archive_of_dense_sums(tmp_path, monkeypatch):
    """Few columns carrying the variance at a high rate: thousands of cells a column, kept sparse; the archive
    is the bytes dense sums give."""
    rng = np.random.default_rng(4)
    loc = (rng.normal(size=(3000, 2)) @ rng.normal(size=(2, 64))).astype(np.float32)
    posterior = {"w": (loc, np.full_like(loc, 0.1))}
    seen = []
    compact = cells.compact_cells
    monkeypatch.setattr(transform, "compact_cells", lambda *a, **k: seen.append(compact(*a, **k)) or seen[-1])
    sparse = bnncompress.pack(posterior, tmp_path / "sparse.bnc", bits=4.0, options={"transform": "pca"})
    assert any(isinstance(p, TouchedCells) for p in seen)
    monkeypatch.setattr(cells, "SPARSE_CELLS_PER_WEIGHT", 1 << 40)
    dense = bnncompress.pack(posterior, tmp_path / "dense.bnc", bits=4.0, options={"transform": "pca"})
    assert (tmp_path / "sparse.bnc").read_bytes() == (tmp_path / "dense.bnc").read_bytes()
    assert sparse.lam == dense.lam

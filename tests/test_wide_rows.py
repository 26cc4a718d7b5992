"""Wide rows (hundreds of columns) at high rates: what the fit's statistics pass and the rate search's states hold
(a 10,000 x 1,024 tensor peaked at 1.5 GB in the statistics pass; the same bytes either way)."""

from __future__ import annotations

import numpy as np

import bnncompress
from bnncompress import tensorjob
from bnncompress.quantizers import transform
from bnncompress.quantizers.column_grids import refine


def _pack(tmp_path, name, posterior, **kw):
    bnncompress.pack(posterior, tmp_path / name, bits=2.0, options={"transform": "pca"}, **kw)
    return (tmp_path / name).read_bytes()


def test_the_statistics_pass_adds_up_gram_matrices_as_they_come(tmp_path, monkeypatch):
    """A transform's fit gets one total of the blocks' Gram matrices, summed in block order as the tasks finish,
    and the pass's tasks return a bounded number of them: the archive is the one of every block's kept."""
    rng = np.random.default_rng(8)
    loc = (rng.normal(size=(6000, 8)) @ rng.normal(size=(8, 64))).astype(np.float32)
    posterior = {"w": (loc, np.full_like(loc, 0.1))}
    seen, tasks = [], []
    fit, statistics_task = transform.TransformVBQ.fit, tensorjob.statistics_task
    monkeypatch.setattr(transform.TransformVBQ, "fit", lambda self, shape, stats, rows: seen.append(len(stats)) or fit(
        self, shape, stats, rows))  # fmt: skip
    monkeypatch.setattr(tensorjob, "statistics_task", lambda *a: tasks.append(a[2] - a[1]) or statistics_task(*a))
    monkeypatch.setattr(tensorjob, "STATISTICS_BYTES", 2 * 8 * 64 * 65)  # two blocks' Gram matrices a task
    folded = _pack(tmp_path, "folded.bnc", posterior)
    block_rows = bnncompress.geometry.block_rows_for(loc.shape)
    assert seen == [1] and max(tasks) <= 2 * block_rows and len(tasks) >= 6000 // block_rows // 2
    monkeypatch.setattr(transform.TransformVBQ, "folds_statistics", False)
    monkeypatch.setattr(tensorjob, "STATISTICS_BYTES", 1 << 40)
    seen.clear()
    assert _pack(tmp_path, "listed.bnc", posterior) == folded and seen[0] > 1


def test_a_refined_state_holds_the_values_its_columns_use_not_every_cell():
    """At a high rate a column has thousands of cells and uses a few: the state's arrays are as wide as the most
    values a column uses; the grid (every cell's value) is the same."""
    rng = np.random.default_rng(3)
    d, width = 4, 3000
    counts = np.zeros((d, width), np.int64)
    for j, used in enumerate((5, 17, 1, 9)):
        counts[j, rng.choice(width, used, replace=False)] = rng.integers(1, 50, used)
    total = counts.astype(np.float64)
    state = refine(None, np.zeros(d * width), counts, total, total * rng.normal(size=(d, width)), 1, True)
    assert state.values.shape == state.costs.shape == state.cell_ids.shape == (d, 17) and state.width == width
    fitted = transform.FittedTransform.__new__(transform.FittedTransform)
    fitted.d = d
    grid = fitted.grid(state).reshape(d, width)
    for j in range(d):
        used = np.flatnonzero(counts[j])
        np.testing.assert_array_equal(np.sort(grid[j, used]), state.values[j, : state.sizes[j]].astype(np.float32))
        assert not grid[j, np.setdiff1d(np.arange(width), used)].any()


def test_a_tensor_with_too_few_rows_for_column_models_computes_no_gram_matrices(tmp_path, monkeypatch):
    """Fewer rows than 32 a column: the transform's fit takes one model whatever the statistics say, so the pass
    computes none (10,000 x 1,024 spent 2 s on Gram matrices it dropped); the same archive either way."""
    rng = np.random.default_rng(5)
    loc = rng.normal(size=(1500, 64)).astype(np.float32)  # 1,500 < 32 x 64 rows
    posterior = {"w": (loc, np.full_like(loc, 0.1))}
    calls = []
    statistics = transform.TransformVBQ.statistics
    monkeypatch.setattr(transform.TransformVBQ, "statistics", lambda self, b: calls.append(1) or statistics(self, b))
    lean = _pack(tmp_path, "lean.bnc", posterior)
    assert not calls and bnncompress.load(tmp_path / "lean.bnc").info()["tensors"][0]["method"] == "vbq-transform"
    monkeypatch.setattr(transform.TransformVBQ, "needs_statistics", lambda self, shape: True)
    assert _pack(tmp_path, "full.bnc", posterior) == lean and calls


def test_a_plug_in_that_changes_the_transforms_statistics_or_fit_gets_every_blocks_statistics(tmp_path):
    """The fold and the skipped statistics hold for the transform's own passes: a subclass that adds a value to
    its statistics, or whose fit reads each block's, gets every block's as before (and any shape's)."""
    import dataclasses
    from typing import ClassVar

    from bnncompress.quantizers import METHODS, register_quantizer

    seen = {}

    @register_quantizer
    @dataclasses.dataclass(frozen=True, eq=False, repr=False, kw_only=True)
    class Counted(transform.TransformVBQ):
        name: ClassVar[str] = "x-counted"

        def statistics(self, block):
            return (*super().statistics(block), len(block.loc))

        def fit(self, shape, stats, rows):
            seen[shape] = (len(stats), sum(s[4] for s in stats))
            return super().fit(shape, [s[:4] for s in stats], rows)

    try:
        loc = np.random.default_rng(0).normal(size=(20000, 16)).astype(np.float32)
        for rows in (20000, 300):  # per-column models, and one model (no statistics for the package's own fit)
            part = loc[:rows]
            bnncompress.pack({"w": (part, np.full_like(part, 0.05))}, tmp_path / "c.bnc", method="x-counted", lam=0.1)
            blocks = bnncompress.geometry.num_blocks(part.shape, bnncompress.geometry.block_rows_for(part.shape))
            assert seen[part.shape] == (blocks, part.size)
    finally:
        METHODS.pop("x-counted")


def test_a_mixin_may_set_the_fold_and_a_plain_subclass_keeps_every_blocks_statistics():
    """passes_agree: the class that set a statistics setting may be a mixin before the method (its statistics and
    fit come after it); a subclass that overrides fit below the transform gets every block's statistics."""

    class Fold:
        folds_statistics = True

    class Mixed(Fold, transform.TransformVBQ):
        pass

    class Logged(transform.TransformVBQ):
        def fit(self, shape, stats, rows):
            return super().fit(shape, stats, rows)

    assert Mixed().passes_agree("folds_statistics") and transform.TransformVBQ().passes_agree("needs_statistics")
    assert not Logged().passes_agree("folds_statistics") and not Logged().passes_agree("needs_statistics")

"""Transform coding (vbq-transform): rotation, per-column entropy models, exact decoding, format versions 3-6."""

from __future__ import annotations

import sys

import numpy as np
import pytest

import bnncompress
from bnncompress import OptionError
from bnncompress._rows_kernels import reflect_into
from bnncompress.inmemory import fit_in_memory
from bnncompress.posterior import TensorPosterior
from bnncompress.quantizers import METHODS, Block, SampleRows, from_config, get_config, get_quantizer


@pytest.fixture(scope="module")
def correlated():
    """2,000 x 8 means with strongly correlated columns (one dominant direction), frequent rows sharp."""
    rng = np.random.default_rng(11)
    mixing = rng.normal(size=(8, 8)) * np.array([3.0, 1.0, 0.5, 0.3, 0.2, 0.1, 0.1, 0.05])[:, None]
    loc = (rng.normal(size=(2000, 8)) @ mixing).astype(np.float32)
    scale = (np.geomspace(0.01, 0.5, 2000)[:, None] * np.ones((1, 8))).astype(np.float32)
    return loc, scale


def test_archive_decodes_to_exactly_what_the_quantizer_chose(tmp_path, correlated):
    loc, scale = correlated
    result = bnncompress.pack({"w": (loc, scale)}, tmp_path / "t.bnc", method="vbq-transform", lam=0.05)
    a = bnncompress.load(tmp_path / "t.bnc")
    expected = fit_in_memory(get_quantizer("vbq-transform"), TensorPosterior(loc, scale)).quantize(result.lam)
    np.testing.assert_array_equal(a["w"].reshape(-1), expected.values())
    rec = a.record("w")
    assert rec.classes == 1 and rec.params["rotated"] and rec.rotation8.dtype == np.int8  # 2 blocks: 1 class
    assert a.info()["format_version"] == 4  # one class: no class values (they would not pay)
    np.testing.assert_array_equal(a.rows("w", [5, 1999, 0]), a["w"][[5, 1999, 0]])


def test_the_rotation_decorrelates_and_pays_for_itself(tmp_path, correlated):
    loc, scale = correlated
    sizes = {}
    for transform in ("pca", "none"):
        r = bnncompress.pack(
            {"w": (loc, scale)},
            tmp_path / f"{transform}.bnc",
            method="vbq-transform",
            bits=2.0,
            options={"transform": transform},
        )
        values = bnncompress.load(r.path)["w"]
        sizes[transform] = (r.payload_bits_per_weight, float(np.mean((values - loc) ** 2)))
        assert abs(r.payload_bits_per_weight - 2.0) < 0.04
    # same rate, less error with the rotation (its float16 matrix is counted in the payload)
    assert sizes["pca"][1] < 0.8 * sizes["none"][1], sizes
    auto = fit_in_memory(get_quantizer("vbq-transform"), TensorPosterior(loc, scale)).fitted
    assert auto.rotated  # 2,000 rows >= 160 per column, and the gain is large
    middle = fit_in_memory(get_quantizer("vbq-transform"), TensorPosterior(loc[:1100], scale[:1100])).fitted
    assert not middle.rotated and middle.models(None) == 8  # per-column models, too few rows for the matrix
    small = fit_in_memory(get_quantizer("vbq-transform"), TensorPosterior(loc[:100], scale[:100])).fitted
    assert small.params(("vbq", 1.0))["fallback"] == "one model"  # too few rows for per-column tables


def test_payload_counts_the_means_and_the_rotation(tmp_path, correlated):
    loc, scale = correlated
    bnncompress.pack({"w": (loc, scale)}, tmp_path / "t.bnc", method="vbq-transform", bits=1.0)
    rec = bnncompress.load(tmp_path / "t.bnc").record("w")
    side = rec.levels.nbytes + rec.widths.nbytes + rec.block_class.nbytes
    rotation = 8 * 8 + 8 * 4  # int8 entries and a float32 scale per column
    assert rec.table_bytes == rec.grid.nbytes + 8 * 4 + rotation + side and len(rec.counts) == 0
    assert len(rec.grid) == rec.widths.sum() and len(rec.levels) == rec.classes * len(rec.grid)


@pytest.mark.parametrize(
    "shape", [(), (1,), (7,), (1, 5), (3, 2, 2), (50, 1)], ids=lambda s: "x".join(map(str, s)) or "scalar"
)
def test_any_shape_round_trips(tmp_path, shape):
    rng = np.random.default_rng(len(shape))
    loc = rng.normal(size=shape)
    r = bnncompress.pack({"t": (loc, np.full(shape, 0.05))}, tmp_path / "t.bnc", method="vbq-transform", lam=0.01)
    values = bnncompress.load(r.path)["t"]
    assert values.shape == shape and np.all(np.isfinite(values))
    assert np.abs(values - loc).max() < 0.5


def test_every_method_rebuilds_from_its_archive_parameters(tmp_path, correlated):
    loc, scale = correlated
    for method in METHODS:
        q = get_quantizer(method)
        assert from_config(get_config(q)).options() == q.options(), method
        bnncompress.pack({"w": (loc[:300], scale[:300])}, tmp_path / "m.bnc", method=method)
        rec = bnncompress.load(tmp_path / "m.bnc").record("w")
        rebuilt = from_config({"method": rec.method, **rec.params})
        assert rebuilt.options() == q.options(), method


def test_transform_options_are_checked():
    for bad in ({"transform": "dct"}, {"trust": 2}, {"iterations": 1.5}, {"step": 0}):
        with pytest.raises(OptionError):
            get_quantizer("vbq-transform", **bad)


def test_column_assignment_is_the_argmin_over_each_columns_values():
    """The assignment finds, for every coordinate, the value of least ``w (value - y)² + lam * cost``
    among its column's values, with the costs of its row's set, and of equal ones the lowest: inside,
    between and far outside the values, in columns of one value, of a few (scanned for all rows at
    once) and of many (searched weight by weight from the start table), with one set of costs or two."""
    from bnncompress.quantizers._transform_cpu import SCAN_VALUES, assign_columns
    from bnncompress.quantizers.column_grids import refine

    rng = np.random.default_rng(5)
    d, width, rows = 6, 3 * SCAN_VALUES, 300
    for sets in (1, 2):
        counts = rng.poisson(20, size=(sets * d, width)) * (rng.random((sets * d, width)) < 0.5)
        counts[:, 0] += 1
        counts[[j + c * d for c in range(sets) for j in (2, 3)], 1:] = 0  # column 2: one value
        counts[[j + c * d for c in range(sets) for j in (3,)], 1:40] = 5  # column 3: a few values
        counts[[j + c * d for c in range(sets) for j in (0, 1)], : SCAN_VALUES // 2] = 0  # 0, 1: wide, from half way
        total = counts.reshape(sets, d, width).sum(axis=0) * rng.uniform(0.5, 2.0, (d, width))
        moment = total * np.cumsum(rng.exponential(0.3, (d, width)), axis=1)  # centroids spread over 0..~80
        counts[:, 7] = counts[:, 6]  # two cells of equal counts and centroids: every choice between them ties
        total[:, 7], moment[:, 7] = total[:, 6], moment[:, 6]
        state = refine(None, np.zeros(d * width), counts, total, moment, sets, True)
        assert (state.sizes[[0, 1, 4, 5]] > SCAN_VALUES).all() and 1 < state.sizes[3] <= SCAN_VALUES
        assert state.sizes[2] == 1
        top = state.values.max()
        y = rng.uniform(-0.2 * top, 1.2 * top, rows * d)
        w = np.exp(rng.normal(0.0, 2.0, rows * d))
        row_set = rng.integers(0, sets, rows)
        for lam in (0.01, 0.5, 20.0, 500.0):
            out = np.empty(rows * d, np.int32)
            tables = (state.values, state.costs, state.below, state.above, state.sizes, state.cell_ids, lam, row_set)
            assign_columns(y, w, *tables, state.starts, state.start_low, state.start_scale, out)
            for i in range(rows * d):
                r, j = divmod(i, d)
                n = state.sizes[j]
                cost = w[i] * (state.values[j, :n] - y[i]) ** 2 + lam * state.costs[row_set[r] * d + j, :n]
                chosen = int(np.flatnonzero(state.cell_ids[j, :n] == out[i])[0])
                assert chosen == int(np.flatnonzero(cost == cost.min())[0]), (sets, lam, i)


def test_the_gram_kernel_sums_every_row_in_any_count():
    """Column sums row after row (the same bits as a sequential float64 sum) and the upper triangle
    of XᵀX, for row counts below, at and past the kernel's 8-row groups."""
    from bnncompress.quantizers._transform_cpu import GRAM_ROWS, gram

    rng = np.random.default_rng(11)
    for rows, d in ((0, 3), (1, 5), (GRAM_ROWS - 1, 4), (GRAM_ROWS, 7), (3 * GRAM_ROWS + 5, 6), (200, 100)):
        x = rng.normal(size=(rows, d)).astype(np.float32)
        sums, products = np.zeros(d), np.zeros((d, d))
        gram(x.reshape(-1), d, sums, products)
        expected_sums = np.zeros(d)
        for row in x.astype(np.float64):
            expected_sums += row
        assert np.array_equal(sums, expected_sums)
        x64 = x.astype(np.float64)
        np.testing.assert_allclose(np.triu(products), np.triu(x64.T @ x64), rtol=1e-12, atol=1e-12)
        assert not np.tril(products, -1).any()


def test_the_rotation_kernels_sum_each_coordinate_in_order_for_any_row_count():
    """y = (x - mean) @ R and v = scale² @ R² with every sum over i ascending in float64 (bit for bit
    a sequential sum, whether a row falls in one of the kernels' 4-row groups or after them),
    w = 0.5 / (v^trust sd^(2 (1 - trust)) row_factor), and each column's range of exactly those y."""
    from bnncompress.quantizers._transform_cpu import ROTATE_ROWS, rotate_means, rotated_weights

    rng = np.random.default_rng(12)
    for rows, d, trust in ((1, 3, 1.0), (ROTATE_ROWS, 5, 0.75), (2 * ROTATE_ROWS + 3, 8, 1.0), (41, 20, 0.5)):
        loc = rng.normal(size=(rows, d)).astype(np.float32)
        scale = rng.uniform(0.01, 1.0, (rows, d)).astype(np.float32)
        mean, rotation = rng.normal(size=d), np.linalg.qr(rng.normal(size=(d, d)))[0]
        factor = rng.uniform(0.5, 2.0, rows)
        y, w = np.empty(rows * d), np.empty(rows * d)
        low, high = np.full(d, np.inf), np.full(d, -np.inf)
        rotate_means(loc.reshape(-1), mean, rotation, y, low, high)
        rotated_weights(scale.reshape(-1), rotation, trust, 0.3, factor, w)
        centered = loc.astype(np.float64) - mean
        expected_y = np.cumsum(centered[:, :, None] * rotation[None], axis=1)[:, -1]  # sums over i in order
        variance = np.cumsum(scale.astype(np.float64)[:, :, None] ** 2 * rotation[None] ** 2, axis=1)[:, -1]
        assert np.array_equal(y.reshape(rows, d), expected_y)
        assert np.array_equal(low, expected_y.min(axis=0)) and np.array_equal(high, expected_y.max(axis=0))
        expected_w = 0.5 / (variance**trust * 0.3 ** (2 * (1 - trust)) * factor[:, None])
        np.testing.assert_allclose(w.reshape(rows, d), expected_w, rtol=1e-12)


def test_the_fits_row_pass_keeps_the_coordinates_the_first_weighting_pass_takes():
    """The fit's second pass rotates every block once and keeps y and the rows' RMS; the first pass that
    needs the weights takes them (freeing their bytes) and gets what rotating again gives, bit for bit."""
    from bnncompress.quantizers.transform import FittedTransform

    rng = np.random.default_rng(5)
    loc = (rng.normal(size=(6000, 16)) @ rng.normal(size=(16, 16))).astype(np.float32)
    scale = rng.uniform(0.05, 0.5, (6000, 16)).astype(np.float32)
    job = fit_in_memory(get_quantizer("vbq-transform"), TensorPosterior(loc, scale))
    fitted, blocks = job.fitted, job.rows.blocks()
    assert isinstance(fitted, FittedTransform) and fitted.rotated and len(blocks) > 1
    kept = [fitted.kept.get(("means", b.first_row, len(b.loc))) for b in blocks]
    assert all(k is not None for k in kept)
    got = [fitted.coordinates(b) for b in blocks]
    assert all(fitted.kept.get(("means", b.first_row, len(b.loc))) is None for b in blocks)
    flag = fitted.kept.get("rotated about")  # (whether the fit still has the means and basis they were rotated about)
    assert flag.dtype == bool and flag and fitted.kept._bytes == sum(y.nbytes + w.nbytes for y, w in got) + flag.nbytes
    fitted.keep_pass_data(0)  # nothing kept: rotated again
    again = [fitted.coordinates(b) for b in blocks]
    assert all(np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) for a, b in zip(got, again))
    assert all(np.array_equal(k[0], g[0]) for k, g in zip(kept, got))


def test_a_raised_allowance_keeps_every_blocks_coordinates():
    """keep_pass_data sets what a fit may keep (CACHE_BYTES until it is called; 0 drops them); with a larger
    allowance, a tensor larger than the method's keeps every block's rotated coordinates, so passes reuse them."""
    from bnncompress.quantizers.base import PassData
    from bnncompress.quantizers.transform import CACHE_BYTES

    rng = np.random.default_rng(3)
    loc = (rng.normal(size=(4000, 8)) @ rng.normal(size=(8, 8))).astype(np.float32)
    job = fit_in_memory(get_quantizer("vbq-transform"), TensorPosterior(loc, np.full((4000, 8), 0.1, np.float32)))
    fitted, blocks = job.fitted, job.rows.blocks()
    assert fitted.kept.limit == CACHE_BYTES
    fitted.kept = PassData(16 * 8 * 1000)  # room for 1,000 of the 4,000 rows
    first = [fitted.coordinates(b) for b in blocks]
    assert sum(fitted.kept.get((b.first_row, len(b.loc))) is not None for b in blocks) < len(blocks)
    fitted.keep_pass_data(16 * loc.size)
    again = [fitted.coordinates(b) for b in blocks]
    assert all(fitted.kept.get((b.first_row, len(b.loc))) is not None for b in blocks)
    assert all(np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) for a, b in zip(first, again))


def test_pass_data_counts_a_replaced_value_once():
    """Putting a key again replaces its value and its bytes; taking it frees them."""
    from bnncompress.quantizers.passdata import PassData

    kept = PassData(limit=40)
    assert kept.put("a", np.zeros(2)) and kept.put("a", np.zeros(3)) and kept._bytes == 24
    assert not kept.put("a", np.zeros(6)) and kept._bytes == 24 and len(kept.get("a")) == 3
    assert kept.put("a", np.zeros(5)) and kept.take("a") is not None and kept._bytes == 0


def test_pass_data_is_not_sent_to_workers():
    """A fit pickled for a worker carries the allowance, not this process's arrays."""
    import pickle

    from bnncompress.quantizers.base import PassData

    kept = PassData(1 << 20)
    assert kept.put("a", (np.zeros(10), np.ones(10)))
    copy = pickle.loads(pickle.dumps(kept))
    assert copy.limit == 1 << 20 and copy.get("a") is None and kept.get("a") is not None
    assert copy.put("b", np.zeros(1 << 17)) and not copy.put("c", np.zeros(1))  # 1 MiB: full


def test_start_tables_stay_within_each_columns_values():
    """The start table only tells the assignment where to begin: every start is a count of the
    column's values, also for a column whose values span less than a float's smallest step (its
    scale is infinite), one of equal values, and an empty one."""
    from bnncompress.quantizers.column_grids import START_BUCKETS, start_table

    values = np.array([[0.0, 5e-324, 1e-323, 0.0], [1.0, 1.0, 0, 0], [-1e300, 1e300, 0, 0], [0, 0, 0, 0]])
    sizes = np.array([3, 2, 2, 0])
    starts, low, scale = start_table(values, sizes)
    assert starts.shape == (4, START_BUCKETS) and np.all(starts >= 0) and np.all(starts <= sizes[:, None])
    assert np.all(np.diff(starts.astype(int), axis=1) >= 0) and scale[0] == np.inf and scale[1] == 0


def test_class_values_code_the_same_symbols_closer_to_the_posterior(tmp_path):
    """Each class's own values (format version 5) change no symbol: the coded words are those of the
    version 4 record, and the decoded rows are nearer their means wherever the rows' uncertainty
    grows along the tensor (word vectors in frequency order)."""
    rng = np.random.default_rng(5)
    rows, d = 6144, 32  # 3 coding blocks of 2,048 rows, a class each
    loc = rng.normal(size=(rows, d)) @ rng.normal(size=(d, d)) / np.sqrt(d)
    scale = np.repeat(np.geomspace(0.02, 1.0, rows)[:, None], d, axis=1)
    errors, words = {}, {}
    for on in (False, True):
        path = tmp_path / f"{on}.bnc"
        options = {"classes": 3, "class_values": on}
        bnncompress.pack({"w": (loc, scale)}, path, lam=0.3, options=options)
        a = bnncompress.load(path)
        rec = a.record("w")
        assert (rec.class_values if on else rec.classes) == 3 and a.info()["format_version"] == (5 if on else 4)
        words[on] = rec.words
        errors[on] = [float(np.mean((a["w"][b * 2048 : (b + 1) * 2048] - loc[b * 2048 : (b + 1) * 2048]) ** 2))
                      for b in range(3)]  # fmt: skip
    np.testing.assert_array_equal(words[True], words[False])
    assert all(new < old for new, old in zip(errors[True], errors[False])), errors


def test_class_values_from_the_kept_indices_are_those_assigned_again(tmp_path, monkeypatch):
    """The class values' pass reuses the grid indices the count pass kept (a posterior in memory);
    with nothing kept it assigns them again: the same archive bytes."""
    from bnncompress import executors
    from bnncompress.quantizers import transform

    rng = np.random.default_rng(6)
    loc = rng.normal(size=(6144, 32)) @ rng.normal(size=(32, 32)) / 6
    post = {"w": (loc, np.repeat(np.geomspace(0.02, 1.0, 6144)[:, None], 32, axis=1))}
    assigned = []  # blocks whose indices the class values' pass assigned again
    stats = transform._class_stats
    monkeypatch.setattr(transform, "_class_stats", lambda *a: assigned.append(1) or stats(*a))
    bnncompress.pack(post, tmp_path / "kept.bnc", bits=1.5, options={"classes": 3})
    assert not assigned
    monkeypatch.setattr(executors, "KEEP_BYTES", 0)
    bnncompress.pack(post, tmp_path / "again.bnc", bits=1.5, options={"classes": 3})
    assert len(assigned) == 3
    assert (tmp_path / "kept.bnc").read_bytes() == (tmp_path / "again.bnc").read_bytes()
    assert bnncompress.load(tmp_path / "kept.bnc").record("w").class_values == 3


def test_rows_kept_by_the_fit_are_not_used_once_a_derived_method_changed_its_means(tmp_path):
    """A method derived from vbq-transform may change the fit's means (or basis) after the package's fit: the rows
    its row pass rotated about the old ones are then not used (they would decode 3.0 off, silently), and nothing
    is kept in an unpickled copy of the fit (a Dask task's: it would not outlive the task)."""
    import dataclasses
    import pickle
    from typing import ClassVar

    from bnncompress.quantizers import register_quantizer
    from bnncompress.quantizers.transform import FittedTransform, TransformVBQ, _row_pass

    @register_quantizer
    @dataclasses.dataclass(frozen=True, eq=False, repr=False, kw_only=True)
    class AboutZero(TransformVBQ):
        name: ClassVar[str] = "x-about-zero"

        def fit(self, shape, stats, rows):
            fitted = super().fit(shape, stats, rows)
            if isinstance(fitted, FittedTransform):
                fitted.mean = np.zeros_like(fitted.mean)  # the record stores (the decoder adds) this mean
            return fitted

    rng = np.random.default_rng(0)
    loc = (rng.normal(size=(20000, 16)) + 3.0).astype(np.float32)  # column means about 3
    try:
        bnncompress.pack({"w": (loc, np.full_like(loc, 0.05))}, tmp_path / "z.bnc", method="x-about-zero", lam=0.1)
    finally:
        METHODS.pop("x-about-zero")
    assert float(np.abs(bnncompress.load(tmp_path / "z.bnc")["w"] - loc).mean()) < 0.2
    scale = np.full((6000, 16), 0.05, np.float32)
    job = fit_in_memory(get_quantizer("vbq-transform"), TensorPosterior(loc[:6000], scale))
    copy = pickle.loads(pickle.dumps(job.fitted))
    assert not copy.kept.lasting and job.fitted.kept.lasting
    for block in job.rows.blocks():
        _row_pass(block, copy)
    assert copy.kept._bytes == 0


def test_a_derived_methods_own_rows_need_not_tell_an_allowance(tmp_path):
    """Rows as the Rows protocol had them before ``pass_bytes`` (shape, representative, map) still fit."""
    import dataclasses
    from typing import ClassVar

    from bnncompress.quantizers import register_quantizer
    from bnncompress.quantizers.transform import TransformVBQ

    class Counted:
        def __init__(self, rows):
            self.rows, self.shape, self.passes = rows, rows.shape, 0

        @property
        def representative(self):
            return Counted(self.rows.representative)

        def map(self, fn, *args):
            self.passes += 1
            return self.rows.map(fn, *args)

    @register_quantizer
    @dataclasses.dataclass(frozen=True, eq=False, repr=False, kw_only=True)
    class Counting(TransformVBQ):
        name: ClassVar[str] = "x-counting-rows"

        def fit(self, shape, stats, rows):
            return super().fit(shape, stats, Counted(rows))

    loc = np.random.default_rng(0).normal(size=(20000, 16)).astype(np.float32)
    try:
        bnncompress.pack({"w": (loc, np.full_like(loc, 0.05))}, tmp_path / "a.bnc", method="x-counting-rows", lam=0.1)
    finally:
        METHODS.pop("x-counting-rows")
    bnncompress.pack({"w": (loc, np.full_like(loc, 0.05))}, tmp_path / "b.bnc", lam=0.1)
    a, b = bnncompress.load(tmp_path / "a.bnc"), bnncompress.load(tmp_path / "b.bnc")
    np.testing.assert_array_equal(a["w"], b["w"])


@pytest.mark.parametrize("options", [{"classes": 3}, {"classes": 3, "class_values": False}, {"transform": "none"}])
def test_the_packs_reconstruction_is_what_the_archive_decodes(tmp_path, options):
    """What the pack's check pass reconstructs from grid indices (``reconstruct``: the values its quality notes
    judge) is, bit for bit, what the archive decodes: for each coding block (one class), and for one block of
    rows spanning all three classes (each row takes its own class's values)."""
    from bnncompress.quantizers import Block

    rng = np.random.default_rng(8)
    loc = (rng.normal(size=(6144, 32)) @ rng.normal(size=(32, 32)) / 6).astype(np.float32)
    scale = np.repeat(np.geomspace(0.02, 1.0, 6144)[:, None], 32, axis=1).astype(np.float32)
    bnncompress.pack({"w": (loc, scale)}, tmp_path / "w.bnc", lam=0.3, options=options)
    decoded = bnncompress.load(tmp_path / "w.bnc")["w"].reshape(-1)
    job = fit_in_memory(get_quantizer("vbq-transform", **options), TensorPosterior(loc, scale))
    indices, state = job.assign(0.3), job.tables(0.3)[-1]
    for b in job.rows.blocks():
        at = slice(b.first_row * 32, b.first_row * 32 + len(b.loc))
        np.testing.assert_array_equal(job.fitted.reconstruct(b, indices[at], state), decoded[at])
    rows = np.arange(2000, 4200)  # coding blocks of 2,048 rows: classes 0, 1 and 2
    spanning = Block(loc[rows].reshape(-1), scale[rows].reshape(-1), 32, first_row=2000)
    at = slice(2000 * 32, 4200 * 32)
    np.testing.assert_array_equal(job.fitted.reconstruct(spanning, indices[at], state), decoded[at])


@pytest.mark.parametrize("d", [2, 3, 17, 100, 161])
def test_reflectors_decode_to_an_orthogonal_matrix_alike_in_numpy_and_numba(d, monkeypatch):
    """The stored reflectors rebuild the rotation up to column signs, exactly orthogonal; numpy's loop
    (a first lookup's) and numba's kernel (wide rows, a pack) give the same bits."""
    from bnncompress.records import classed

    vectors = np.linalg.qr(np.random.default_rng(d).normal(size=(d, d)))[0]
    stored = classed.stored_rotation(vectors, "reflectors")
    assert stored["reflectors"].dtype == np.int8 and len(stored["reflectors"]) == d * (d - 1) // 2
    monkeypatch.setattr(classed, "_KERNEL_WIDTH", 1 << 30)
    monkeypatch.delitem(sys.modules, "bnncompress._rows_kernels", raising=False)
    in_numpy = classed.decoded_rotation(stored, d)
    q = np.eye(d)
    reflect_into(stored["reflectors"], stored["reflector_scales"], q)
    np.testing.assert_array_equal(q, in_numpy)
    assert np.abs(in_numpy.T @ in_numpy - np.eye(d)).max() < 1e-13
    assert np.abs(np.abs(np.sum(in_numpy * vectors, axis=0)) - 1).max() < 1e-3  # each column ±its vector


def test_the_rotation_as_reflectors_costs_half_the_bytes_for_the_same_error(tmp_path):
    """``reflectors=true`` stores D (D - 1) / 2 int8 reflector entries (version 6) instead of D x D
    entries (version 5, the default); at one lambda the error is within 1% of the int8 matrix's."""
    rng = np.random.default_rng(3)
    rows, d = 6144, 32
    loc = rng.normal(size=(rows, d)) @ rng.normal(size=(d, d)) / np.sqrt(d)
    scale = np.repeat(np.geomspace(0.02, 1.0, rows)[:, None], d, axis=1)
    found = {}
    for on in (True, False):
        path = tmp_path / f"{on}.bnc"
        bnncompress.pack({"w": (loc, scale)}, path, lam=0.3, options={"classes": 3, "reflectors": on})
        a = bnncompress.load(path)
        rec = a.record("w")
        rotation = {k: v for k, v in rec.side.items() if k.startswith(("rotation", "reflector"))}
        found[on] = (a.info()["format_version"], rotation, float(np.mean((a["w"] - loc) ** 2)))
    assert found[True][0] == 6 and sorted(found[True][1]) == ["reflector_scales", "reflectors"]
    assert found[False][0] == 5 and sorted(found[False][1]) == ["rotation8", "rotation_scale"]
    side_bytes = {on: sum(v.nbytes for v in found[on][1].values()) for on in found}
    assert side_bytes == {True: 31 * 32 // 2 + 31 * 4, False: 32 * 32 + 32 * 4}
    assert abs(found[True][2] / found[False][2] - 1) < 0.01, found


@pytest.mark.parametrize("outlier", [1e4, -5e3])
def test_a_far_value_does_not_make_its_column_coarse(tmp_path, outlier):
    """One mean of 1e4 among N(0, 1) means with sd 0.05: a column grid of at most 4,096 cells over its range
    would be coarser than the posterior at every rate (8.5 sd RMS in that column at 6 bits); such a tensor
    gets one entropy model, as info says, and that column is as close as the others."""
    rng = np.random.default_rng(0)
    loc = rng.normal(size=(4096, 16)).astype(np.float32)
    scale = np.full_like(loc, 0.05)
    loc[7, 3] = outlier
    result = bnncompress.pack({"t": (loc, scale)}, tmp_path / "o.bnc", bits=6)
    z = (bnncompress.load(result.path)["t"] - loc) / scale
    assert abs(z[7, 3]) < 1
    assert np.sqrt(np.mean(z[:, 3] ** 2)) < 1.5 * np.sqrt(np.mean(z[:, [0, 1, 2, 4]] ** 2)) < 1
    assert bnncompress.load(result.path).info()["tensors"][0]["method_used"].endswith("(vbq-direction fallback)")
    loc[7, 3] = 100.0  # far, but a 4,096-cell grid still resolves the posterior: per-column models as before
    result = bnncompress.pack({"t": (loc, scale)}, tmp_path / "n.bnc", bits=6)
    assert bnncompress.load(result.path).info()["tensors"][0]["method_used"] == "vbq-transform"
    loc[: len(loc) * 6 // 10] = 0.0  # most rows unused (their median RMS is 0), the posterior confident
    result = bnncompress.pack({"t": (loc, np.full_like(loc, 0.001))}, tmp_path / "z.bnc", bits=6)
    assert bnncompress.load(result.path).info()["tensors"][0]["method_used"] == "vbq-transform"


def _block(rng, rows, d, first_row=0, key=None):
    loc = rng.normal(size=rows * d).astype(np.float32)
    scale = rng.uniform(0.05, 0.5, rows * d).astype(np.float32)
    return Block(loc, scale, d, first_row) if key is None else Block(loc, scale, d, first_row, key=key)


def test_a_fit_keeps_no_values_of_a_callers_blocks():
    """A fit's per-block cache (rotated coordinates and weights) holds only the pipeline's keyed blocks: two of the
    caller's blocks of the same rows, or two temporary samples that Python gives the same id, each get their own
    (the second got the first one's coordinates, so its indices, and reconstructions 88 sd away)."""
    rng = np.random.default_rng(5)
    n, d = 3000, 16
    a, b = _block(rng, n, d), _block(rng, n, d)  # (both first_row 0, Block's default)
    q = get_quantizer("vbq-transform")
    fit = q.fit((n, d), [q.statistics(a)], SampleRows((n, d), a))
    state = fit.at(0.5, SampleRows((n, d), a))
    fresh = q.fit((n, d), [q.statistics(a)], SampleRows((n, d), a))
    fit.assign(a, state)
    assert np.array_equal(fit.assign(b, state), fresh.assign(b, state))
    for _ in range(20):  # temporary samples: freed after each call
        rows = np.sort(rng.choice(n, 100, replace=False))
        pos = (rows[:, None] * d + np.arange(d)).reshape(-1)
        got = fit.assign(Block(b.loc[pos], b.scale[pos], d, positions=pos), state)
        assert np.array_equal(got, fresh.assign(Block(b.loc[pos], b.scale[pos], d, positions=pos), state))
    vbq_direction = get_quantizer("vbq-direction")
    direction = vbq_direction.fit((n, d), [vbq_direction.statistics(a)], SampleRows((n, d), a))
    assert not np.array_equal(direction.effective(a)[1], direction.effective(b)[1])


def test_the_pipelines_blocks_are_kept_once():
    """Keyed blocks (the pipeline's) are rotated once per fit, whichever pass asks first."""
    rng = np.random.default_rng(6)
    n, d = 3000, 16
    a = _block(rng, n, d, key=(0, n * d))
    q = get_quantizer("vbq-transform")
    fit = q.fit((n, d), [q.statistics(a)], SampleRows((n, d), a))
    first = fit.coordinates(a)
    assert fit.coordinates(a)[0] is first[0]

"""Encoder paths at their edges, each one a change the rest of the suite let through (mutation hunt):
ANS's flush on a skewed model, a column of exactly 97 values, VBQ's tail range, the kind a one-class
tensor gets, grid indices beyond uint16 and a counts width set by a later tensor."""

from __future__ import annotations

import numpy as np
import pytest

import bnncompress
from bnncompress import _ans, coding
from bnncompress.quantizers._transform_cpu import SCAN_VALUES, assign_columns
from bnncompress.quantizers.column_grids import refine


@pytest.fixture(scope="module")
def example():
    return bnncompress.read_posterior("data/example.pt").tensors


def test_the_ans_kernel_flushes_as_constriction_on_a_skewed_model():
    rng = np.random.default_rng(0)
    counts = np.array([1_000_000, 3, 1])  # rare symbols of CDF width 1-16: the state's flush bound is met exactly
    for _ in range(60):
        symbols = rng.choice(3, size=4000, p=counts / counts.sum()).astype(np.int32)
        symbols[rng.integers(0, 4000, 40)] = rng.integers(1, 3, 40)
        words, _ = _ans.encode_blocks(symbols, counts, 4000)
        np.testing.assert_array_equal(words, coding.encode(symbols, counts))


def test_a_column_of_exactly_97_values_gets_every_coordinates_argmin():
    rng = np.random.default_rng(1)
    d, width, rows = 3, 2 * SCAN_VALUES, 200
    counts = np.zeros((d, width), np.int64)
    counts[0, : SCAN_VALUES + 1], counts[1, :50], counts[2, :5] = 10, 10, 10  # the scanned and walked columns' edge
    state = refine(None, np.zeros(d * width), counts, counts * 1.0, counts * np.arange(width) * 0.1, 1, True)
    y, w = rng.uniform(0, 10, rows * d), np.ones(rows * d)
    out = np.full(rows * d, -1, np.int32)
    tables = (state.values, state.costs, state.below, state.above, state.sizes, state.cell_ids, 0.01)
    assign_columns(y, w, *tables, np.zeros(rows, np.int64), state.starts, state.start_low, state.start_scale, out)
    for i in range(rows * d):
        j, n = i % d, state.sizes[i % d]
        best = np.argmin(w[i] * (state.values[j, :n] - y[i]) ** 2 + 0.01 * state.costs[j, :n])
        assert out[i] == state.cell_ids[j, best], (i, out[i])


def test_vbq_keeps_outliers_above_its_prior_grid_within_a_few_sd(tmp_path, example):
    bnncompress.pack("data/example.pt", tmp_path / "v.bnc", method="vbq", bits=3)
    a = bnncompress.load(tmp_path / "v.bnc")
    for name, t in example.items():
        loc, scale = np.asarray(t.loc).reshape(t.shape), np.asarray(t.scale).reshape(t.shape)
        assert np.abs(a[name] - loc).max() <= 4 * scale.max()  # (the tail's range cut at its low end: 12.7 sd)
        assert (np.abs(a[name] - loc) / scale).max() < 5


def test_a_tensor_coded_as_one_class_is_a_version_4_record(tmp_path):
    bnncompress.pack("data/example.pt", tmp_path / "e.bnc")
    a = bnncompress.load(tmp_path / "e.bnc")
    for name in a.names:  # 4,000 rows in 4 blocks: one class each, whose values would not pay
        rec = a.record(name)
        assert rec.kind.name == "classed" and len(np.unique(rec.block_classes)) == 1, (name, rec.kind.name)
    assert a.info()["format_version"] == 4


def test_grid_indices_beyond_uint16_pack_to_an_archive_that_loads(tmp_path, example):
    bnncompress.pack("data/example.pt", tmp_path / "f.bnc", method="vbq", lam=0.001, options={"max_level": 15})
    a = bnncompress.load(tmp_path / "f.bnc")
    for name, t in example.items():  # (it was written, checksummed, and then read as corrupt)
        loc, scale = np.asarray(t.loc).reshape(t.shape), np.asarray(t.scale).reshape(t.shape)
        assert (np.abs(a[name] - loc) / scale).max() < 5


def test_the_counts_are_as_wide_as_the_widest_tensors_not_the_first(tmp_path):
    rng = np.random.default_rng(0)
    posterior = {
        "a_bias": (rng.normal(size=3).astype(np.float32), np.full(3, 0.1, np.float32)),  # raw: no counts
        "b_weight": (rng.normal(size=(3000, 20)).astype(np.float32), np.full((3000, 20), 0.3, np.float32)),
    }
    bnncompress.pack(posterior, tmp_path / "w.bnc", method="vbq", lam=0.5)
    a = bnncompress.load(tmp_path / "w.bnc")
    for name, (loc, scale) in posterior.items():
        assert np.abs(a[name] - loc).max() < 10 * scale.max()

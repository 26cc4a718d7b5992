"""Issue 22 (round 3), quantizers: extreme finite inputs, outliers beyond the prior's grid, and
rows that collapse at very low rates."""

import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
import torch

import bnncompress
from bnncompress import QualityWarning
from bnncompress.inmemory import fit_in_memory
from bnncompress.posterior import TensorPosterior
from bnncompress.priors import GaussianPrior
from bnncompress.quantizers import get_quantizer
from bnncompress.quantizers._transform_cpu import round_to_cells
from bnncompress.quantizers.vbq import assign_torch, core_size, tail_bits, vbq_grid
from bnncompress.tasks import DISTINCT_FRACTION, SKETCH, distinct, sketch

EXAMPLE = "data/example.pt"

# Every method on extreme finite posteriors, in a child process (a segfault fails the test instead of
# killing pytest). Each case packs and decodes to finite values near the means, or is refused with one
# of our errors; any other warning (numpy's overflow RuntimeWarnings) is an error. The case
# crashed in about half the runs: it is packed several times.
_EXTREME = textwrap.dedent(
    """
    import sys, warnings
    import numpy as np
    import bnncompress
    from bnncompress import QualityWarning
    from bnncompress.quantizers import METHODS
    from bnncompress.quantizers._vbq_cpu import assign_cpu

    out = sys.argv[1]
    rng = np.random.default_rng(1)
    big = float(np.finfo(np.float32).max)
    normal = rng.normal(size=(2048, 4))
    cases = {
        "issue: ±3e38, scale 1e37": (rng.choice([-3e38, 3e38], (300, 8)), np.full((300, 8), 1e37), None),
        "±3e38 in 2048 rows": (rng.choice([-3e38, 3e38], (2048, 4)), np.full((2048, 4), 1e37), None),
        "±3.4e38 and 0, scale 1e-38": (rng.choice([-big, 0.0, big], (2048, 4)), np.full((2048, 4), 1e-38), None),
        "±3.4e38 at lam 0.15": (rng.choice([-big, big], (300, 8)), np.full((300, 8), 1e30), 0.15),
        "1% of ±3e38 among N(0, 1)": (
            np.where(rng.random((2048, 4)) < 0.01, rng.choice([-3e38, 3e38], (2048, 4)), normal),
            rng.choice([1e-38, 1e37, 0.1], (2048, 4)),
            None,
        ),
        "N(0, 1), scales 1e-38 and 1e37": (normal, rng.choice([1e-38, 1e37], (2048, 4)), None),
    }
    warnings.simplefilter("error")
    warnings.simplefilter("ignore", QualityWarning)
    for method in METHODS:
        for name, (loc, scale, lam) in cases.items():
            print(method, name, flush=True)  # the last line names the case if the process dies
            loc, scale = loc.astype(np.float32), scale.astype(np.float32)
            try:
                bnncompress.pack({"w": (loc, scale)}, out, method=method, lam=lam)
            except bnncompress.BnnCompressError as e:
                assert "\\n" not in str(e), str(e)
                continue
            got = bnncompress.load(out).arrays()["w"]
            assert np.isfinite(got).all(), (method, name)
            span = float(loc.max()) - float(loc.min())
            sure = scale < 0.05 * span
            assert sure.any() and np.abs(got - loc)[sure].max() <= 0.25 * span, (method, name)
    loc, scale, _ = cases["issue: ±3e38, scale 1e37"]
    for method in ("vbq-transform", "vbq-direction", "vbq", "vbq-empirical"):
        for _ in range(4):
            print(method, "again", flush=True)
            bnncompress.pack({"w": (loc.astype(np.float32), scale.astype(np.float32))}, out, method=method)
    # the kernel itself: NaN means and infinite grid ends never index outside the grid
    grid = np.concatenate([[-np.inf], np.linspace(-1.0, 1.0, 2045), [np.inf]]).astype(np.float32)
    loc = np.array([np.nan, 3e38, -3e38, 0.5, np.inf] * 200, np.float32)
    idx = np.empty(len(loc), np.int32)
    assign_cpu(loc, np.ones_like(loc), grid, 0, 10, 0.1, idx)
    assert 0 <= idx.min() and idx.max() < len(grid)
    print("done", flush=True)
    """
)


def test_every_method_survives_extreme_finite_inputs(tmp_path):
    p = subprocess.run(
        [sys.executable, "-c", _EXTREME, str(tmp_path / "x.bnc")], capture_output=True, text=True, timeout=300
    )
    last = (p.stdout.strip().splitlines() or ["(nothing)"])[-1]
    assert p.returncode == 0, f"exit {p.returncode} at {last!r}: {p.stderr[-2000:]}"
    assert last == "done" and not p.stderr.strip(), p.stderr[-2000:]


def test_the_prior_grid_of_huge_means_is_finite():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        grid = GaussianPrior(0.0, 3e38).binary_fractions(10)
    assert np.isfinite(grid).all() and np.all(np.diff(grid) >= 0)
    assert grid[0] == -np.finfo(np.float32).max and grid[-1] == np.finfo(np.float32).max


def test_pq_refuses_means_spanning_more_than_float32_kmeans_resolves():
    loc = np.random.default_rng(0).normal(size=(256, 4)).astype(np.float32)
    loc[3, 1] = 3e38
    with pytest.raises(bnncompress.OptionError, match="span more than"):
        fit_in_memory(get_quantizer("pq"), TensorPosterior(loc, np.ones_like(loc)))


def test_round_to_cells_clamps_huge_and_nan_coordinates_to_the_columns_cells():
    y = np.array([1e300, -1e300, np.nan, 0.4], np.float64)
    out = np.empty(4, np.int32)
    round_to_cells(y, np.array([0.5]), np.array([-3], np.int64), np.array([7], np.int64), out)
    assert out.tolist() == [6, 0, 0, 4]  # the top cell, the bottom cell, a cell, rint(0.8) + 3


# --- outliers beyond the prior's grid (silent clipping) ---------------------------------------


def _outlier():
    loc = np.random.default_rng(0).normal(size=(3000, 8)).astype(np.float32)
    loc[17, 3] = 30.0
    return TensorPosterior(loc, np.full(loc.shape, 0.05, np.float32))


@pytest.mark.parametrize("method", ["vbq-direction", "vbq", "vbq-empirical"])
def test_an_outlier_mean_is_kept_not_clipped_to_the_grid(method):
    t = _outlier()
    got = fit_in_memory(get_quantizer(method, device="cpu"), t).quantize(0.1).values().reshape(t.shape)
    assert abs(float(got[17, 3]) - 30.0) <= 3 * 0.05  # it was 4.2 (vbq-direction) / 3.35 (vbq)


@pytest.mark.parametrize(
    "method, options", [("vbq", {}), ("vbq-empirical", {}), ("vbq-direction", {"row_weight": 0.0})]
)
def test_heavy_tailed_means_stay_within_their_posterior(tmp_path, method, options):
    loc = np.random.default_rng(0).standard_t(2, size=(2000, 20)).astype(np.float32)
    scale = np.full(loc.shape, 0.02, np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", QualityWarning)
        bnncompress.pack({"w": (loc, scale)}, tmp_path / "t.bnc", method=method, options=options, bits=4)
    got = bnncompress.load(tmp_path / "t.bnc").arrays()["w"]
    assert np.abs(loc).max() > 100  # the tails are far beyond the prior's grid (about ±3.3 sd)
    assert int(np.sum(np.abs(got - loc) > 100 * scale)) == 0  # 174 to 242 were before


def test_tails_reach_the_extremes_and_leave_the_prior_grid_alone():
    prior = GaussianPrior(0.0, 1.0)
    core = prior.binary_fractions(10)
    grid, first = vbq_grid(prior, 10, -50.0, 4.0)
    assert grid[0] == -50.0 and grid[-1] == 4.0 and np.all(np.diff(grid) > 0)
    np.testing.assert_array_equal(grid[first : first + core_size(10)], core)
    assert first <= 1 << 11  # a tail point's index fits in max_level + 1 bits
    inside, none = vbq_grid(prior, 10, float(core[0]), float(core[-1]))
    assert none == 0 and np.array_equal(inside, core)


def test_torch_path_matches_the_cpu_kernel_on_tails():
    t = _outlier()
    t.loc[5, :4] = [-40.0, -7.0, 12.0, 5.5]
    f = fit_in_memory(get_quantizer("vbq", device="cpu"), t)
    grid, first = f.fitted.candidates_and_first()
    assert first > 0 and len(grid) > first + core_size(10)
    for lam in (1e-3, 0.1, 3.0):
        ref = f.assign(lam)
        got = assign_torch(torch.from_numpy(f.loc), torch.from_numpy(f.scale), torch.from_numpy(grid), 10, lam, first)
        np.testing.assert_array_equal(got.numpy(), ref)
    tails = (ref < first) | (ref >= first + core_size(10))
    assert tails.any() and np.all(tail_bits(10) > 10)


# --- rows collapsing to few distinct vectors -----------------------------------------------------


def _collapse_notes(tmp_path, **kw):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = bnncompress.pack(EXAMPLE, tmp_path / "e.bnc", **kw)
    notes = [str(w.message) for w in caught if issubclass(w.category, QualityWarning)]
    return r, [n for n in notes if "distinct vectors" in n]


def test_rows_collapsing_at_a_very_low_rate_warn(tmp_path):
    r, notes = _collapse_notes(tmp_path, bits=0.05)
    decoded = bnncompress.load(r.path).arrays()
    for name, values in decoded.items():
        rows = len(np.unique(values, axis=0))
        assert rows < DISTINCT_FRACTION * len(values)
        assert any(f"'{name}'" in n and f"only {rows:,} distinct" in n for n in notes), (name, rows, notes)
    assert all(n in r.warnings for n in notes)


@pytest.mark.parametrize("bits", [1.0, 2.0, 3.0, None])
def test_ordinary_rates_do_not_warn_of_collapsed_rows(tmp_path, bits):
    _, notes = _collapse_notes(tmp_path, bits=bits)
    assert notes == []


def test_streamed_pack_is_byte_identical_and_warns_alike(tmp_path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        a = bnncompress.pack(EXAMPLE, tmp_path / "a.bnc", bits=0.05, stream=False)
        b = bnncompress.pack(EXAMPLE, tmp_path / "b.bnc", bits=0.05, stream=True)
    assert (tmp_path / "a.bnc").read_bytes() == (tmp_path / "b.bnc").read_bytes()
    notes = [str(w.message) for w in caught if "distinct vectors" in str(w.message)]
    assert len(notes) == 4 and notes[:2] == notes[2:] and a.warnings == b.warnings


def test_a_collapse_note_says_when_its_count_of_distinct_rows_is_an_estimate():
    """Counts of distinct rows from SKETCH on are the sketch's estimate (about 2%): the note says "about"."""
    from bnncompress.tasks import Quality, quality_notes

    q = Quality(rows_distinct=12, means_distinct=SKETCH - 1, values_min=0.0, values_max=1.0, loc_min=0.0, loc_max=1.0)
    assert "its 4,095 distinct rows were quantized to only 12 distinct" in quality_notes("w", (5000, 8), q)[0]
    q = Quality(rows_distinct=2669, means_distinct=64683, values_min=0.0, values_max=1.0, loc_min=0.0, loc_max=1.0)
    note = quality_notes("w", (65535, 8), q)[0]
    assert "its about 64,683 distinct rows were quantized to only 2,669 distinct" in note


def test_the_distinct_row_sketch_is_exact_when_small_and_close_when_large():
    top = np.arange(2**64 - SKETCH, 2**64, dtype=np.uint64)  # SKETCH distinct hashes, all large: an estimate
    assert distinct(top, 10**9) == SKETCH  # (it saw SKETCH distinct rows: never fewer, so never read as exact)
    rng = np.random.default_rng(0)
    few = rng.integers(0, 2**63, 300, dtype=np.uint64)
    assert distinct(sketch(few, few[:100], np.zeros(0, np.uint64)), 10**9) == 300
    many = rng.integers(0, 2**64 - 1, 200_000, dtype=np.uint64, endpoint=True)
    parts = np.array_split(many, 7)
    merged = sketch(*(sketch(p) for p in parts))  # in any grouping, the same sketch
    np.testing.assert_array_equal(merged, sketch(many))
    assert len(merged) == SKETCH and abs(distinct(merged, 10**9) / len(np.unique(many)) - 1) < 0.05
    repeated = rng.integers(0, 50, 9000).astype(np.uint64)  # (sorted by hand, not np.unique: the same values)
    for hashes in (repeated, repeated[:1], repeated[:0], np.sort(repeated), few):
        np.testing.assert_array_equal(sketch(hashes, hashes[::3]), np.unique(hashes)[:SKETCH])


def test_weights_decoded_far_from_their_posterior_are_reported(tmp_path):
    # vbq-direction weighs errors by row length: in rows of heavy-tailed means some small weights are
    # decoded 100+ posterior sd away. That is its trade-off, but never a silent one.
    loc = np.random.default_rng(4).standard_t(2, size=(5000, 20))
    scale = np.full(loc.shape, 0.02)
    with pytest.warns(bnncompress.QualityWarning, match=r"more than 100 posterior standard deviations"):
        bnncompress.pack({"w": (loc, scale)}, tmp_path / "h.bnc", method="vbq-direction", bits=4)
    far = np.abs(np.asarray(bnncompress.load(tmp_path / "h.bnc")["w"]) - loc) > 100 * 0.02
    assert far.sum() > 0  # the case the warning is about is really there
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # per-weight methods keep every weight within 100 sd: no warning
        bnncompress.pack({"w": (loc, scale)}, tmp_path / "v.bnc", method="vbq", bits=4)


# The methods hunt's second pass (stop 37).


@pytest.mark.parametrize("method", ["kmeans", "weighted-kmeans"])
def test_one_outlier_does_not_cap_the_clusters_of_kmeans(tmp_path, method):
    """2^14 equal-width bins over [min, max]: one mean of 1e4 put the bulk into a few bins, so every lam
    gave the same 15 values (bulk RMS error 0.17 where 64 clusters give 0.037)."""
    loc = np.random.default_rng(0).normal(size=20000)
    loc[0] = 1e4
    bnncompress.pack({"w": (loc, np.full(20000, 0.5))}, tmp_path / "k.bnc", lam=1.0, method=method)
    v = bnncompress.load(tmp_path / "k.bnc")["w"]
    assert len(np.unique(v)) == 64 and np.sqrt(np.mean((v[1:] - loc[1:]) ** 2)) < 0.05


def test_options_that_need_classes_are_refused_without_them(tmp_path):
    """reflectors=true and class_costs=true with classes=0 wrote the version 3 record, and its params
    said they were used."""
    for option in ("reflectors", "class_costs"):
        with pytest.raises(bnncompress.OptionError, match=f"{option} need"):
            bnncompress.pack(
                {"w": (np.zeros((50, 4)), np.ones((50, 4)))}, tmp_path / "r.bnc", options={option: True, "classes": 0}
            )


def test_float16_takes_values_that_round_to_its_largest(tmp_path):
    loc = np.r_[65519.9, -65519.9, np.zeros(4998)]  # (refused: "beyond +-65504"; few values: coded, not raw)
    bnncompress.pack({"w": (loc, np.ones(5000))}, tmp_path / "f.bnc", method="float16")
    assert bnncompress.load(tmp_path / "f.bnc")["w"][:3].tolist() == [65504.0, -65504.0, 0.0]
    with pytest.raises(bnncompress.OptionError, match="cannot hold"):
        bnncompress.pack({"w": (np.array([65520.0]), np.ones(1))}, tmp_path / "g.bnc", method="float16")

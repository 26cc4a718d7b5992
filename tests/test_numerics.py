"""Every method on any finite posterior packs to finite values, within bounds, or says why not.

Property-based (hypothesis): shapes from 0-d to 2-D, constant and varied means from 1e-30 to
1e30, scales from the smallest normal float32 to 1e38, float16 / bfloat16 / float32 / float64
inputs. The long run is

    HYPOTHESIS_PROFILE=fuzz python -m pytest tests/test_numerics.py
"""

from __future__ import annotations

import os
import pickle
import warnings

import h5py
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import bnncompress
from bnncompress import BnnCompressError, QualityWarning
from bnncompress.quantizers import METHODS
from bnncompress.tasks import CERTAIN_FRACTION

settings.register_profile(
    "default-numerics", max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
settings.register_profile(
    "fuzz-numerics", max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
PROFILE = "fuzz-numerics" if os.environ.get("HYPOTHESIS_PROFILE") == "fuzz" else "default-numerics"

_TORCH_DTYPES = {
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float32": torch.float32,
    "float64": torch.float64,
}


@st.composite
def posteriors(draw):
    shape = draw(st.sampled_from([(), (1,), (1, 1), (7,), (3, 5), (40, 8), (64, 3)]))
    dtype = draw(st.sampled_from(list(_TORCH_DTYPES)))
    big = 6e4 if dtype == "float16" else 1e30
    small = 1e-4 if dtype == "float16" else 1e-30
    magnitude = draw(st.sampled_from([small, 1e-3, 1.0, 3.5, 1e4, big]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    kind = draw(st.sampled_from(["constant", "normal", "zeros", "two values"]))
    n = int(np.prod(shape))
    if kind == "constant":
        loc = np.full(n, magnitude * draw(st.sampled_from([1.0, -1.0])))
    elif kind == "zeros":
        loc = np.zeros(n)
    elif kind == "two values":
        loc = np.where(rng.random(n) < 0.5, -magnitude, magnitude)
    else:  # (clipped: a draw beyond 4.4 sd of 6e4 / 4 was float16's inf, a posterior refused as it should be)
        loc = np.clip(rng.normal(size=n) * magnitude / 4, -big, big)
    tiny = float(np.finfo(np.float16).tiny) if dtype == "float16" else 1.2e-38
    huge = 6e4 if dtype == "float16" else 1e38
    scale_kind = draw(st.sampled_from(["tiny", "huge", "small", "typical", "log-uniform"]))
    if scale_kind == "log-uniform":
        scale = np.exp(rng.uniform(np.log(tiny), np.log(huge), size=n))
    else:
        value = {"tiny": tiny, "huge": huge, "small": 1e-3 * magnitude, "typical": 0.1 * magnitude}[scale_kind]
        scale = np.full(n, max(value, tiny))
    t = _TORCH_DTYPES[dtype]
    loc_t = torch.tensor(loc.reshape(shape), dtype=t)
    scale_t = torch.tensor(scale.reshape(shape), dtype=t).clamp(min=tiny)
    return loc_t, scale_t, dtype


@pytest.mark.parametrize("method", sorted(METHODS))
@settings(settings.get_profile(PROFILE))
@given(data=posteriors(), use_bits=st.booleans())
def test_every_method_packs_any_finite_posterior_to_finite_values(tmp_path, method, data, use_bits):
    loc_t, scale_t, dtype = data
    out = tmp_path / "w.bnc"
    options = {"bits": 2.0} if use_bits and method != "float16" else {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = bnncompress.pack({"w": (loc_t, scale_t)}, out, method=method, device="cpu", **options)
        except BnnCompressError as exc:  # only a rate that cannot be reached, or float16's range, may refuse
            assert (use_bits and "bits" in str(exc)) or (method == "float16" and "beyond" in str(exc)), exc
            return
    assert not [w for w in caught if issubclass(w.category, RuntimeWarning)], [str(w.message) for w in caught]
    values = bnncompress.load(out)["w"]
    assert values.shape == tuple(loc_t.shape)
    restored = np.asarray(values, dtype=np.float64)
    assert np.all(np.isfinite(restored)), f"{method} produced non-finite values"
    loc = loc_t.to(torch.float64).numpy().reshape(-1)
    scale = scale_t.to(torch.float64).numpy().reshape(-1)
    # FAISS splits k-means clusters of identical points by moving centroids 1/1024 apart (relative)
    relative = 2.0**-9 if method == "pq" else 1e-3
    spread = 4 * float(loc.std()) + relative * float(np.abs(loc).max(initial=0)) + 1e-7
    assert restored.min() >= loc.min() - spread and restored.max() <= loc.max() + spread
    rms = float(np.sqrt(np.mean(loc**2)))
    certain = scale < CERTAIN_FRACTION * rms
    err = np.abs(restored.reshape(-1) - loc)
    kept = np.all(err[certain] <= scale[certain] + 2 * np.abs(loc[certain]) * _eps(dtype))
    warned = any("not kept within their scale" in m for m in result.warnings)
    assert kept or warned, f"{method}: certain weights lost precision without a warning"
    assert warned == any(issubclass(w.category, QualityWarning) and "within" in str(w.message) for w in caught)


def _eps(dtype: str) -> float:
    """Relative rounding of the source dtype (restoring the dtype may round once more)."""
    return {"float16": 2.0**-11, "bfloat16": 2.0**-8, "float32": 2.0**-24, "float64": 2.0**-24}[dtype]


def _runs_of_one_value():
    rng = np.random.default_rng(22)
    trailing = rng.normal(size=20000).astype(np.float32)
    trailing[-200:] = trailing.min() - 1  # a 1-D tensor ending in a run of its smallest value (symbol 0)
    last_row = rng.normal(size=(500, 40)).astype(np.float32)
    last_row[-1] = last_row.min() - 0.5
    half = np.concatenate([rng.normal(size=(200, 50)), np.full((200, 50), -3.0)]).astype(np.float32)  # a block of one
    return {"trailing": trailing, "last_row": last_row, "half_constant": half}


@pytest.mark.parametrize("method", ["vbq-transform", "vbq", "uniform", "kmeans", "float16"])
def test_blocks_ending_in_runs_of_one_value_load(tmp_path, method):
    # ANS codes a block's symbols last to first onto an empty state: its final run of symbol 0 costs no bits,
    # and another symbol costs next to nothing while the state is below its probability; the reader's check
    # that the words can hold the counts' information refused these archives (packed with exit 0) as corrupt.
    for name, loc in _runs_of_one_value().items():
        path = tmp_path / f"{name}.bnc"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", QualityWarning)
            bnncompress.pack({"w": (loc, np.full_like(loc, 0.05))}, path, method=method)
        a = bnncompress.load(path)
        assert np.abs(a["w"] - loc).max() < 3.0, name  # (k-means: an outlier is 1.03 off its cluster)
        assert np.array_equal(a.rows("w", [len(loc) - 1]), a["w"][[-1]]), name


def test_the_warnings_of_a_bfloat16_posterior_count_the_values_a_load_returns(tmp_path):
    """The pack checked its float32 values, the load rounds them to bfloat16: 12 weights decoded 125 sd
    from their means and no warning (the numerics hunt's second pass)."""
    import torch

    rng = np.random.default_rng(3)
    loc = rng.normal(size=65536)
    out = rng.choice(65536, 60, replace=False)
    loc[out] = rng.uniform(64, 128, 60)  # (bfloat16's step there is 0.5: 125 sd of 0.004)
    scale = np.full(65536, 0.5)
    scale[out] = 0.004
    loc_t, scale_t = (torch.tensor(a.reshape(256, 256)).to(torch.bfloat16) for a in (loc, scale))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        bnncompress.pack({"w": (loc_t, scale_t)}, tmp_path / "b.bnc", method="uniform", lam=0.2)
    values = bnncompress.load(tmp_path / "b.bnc")["w"].astype(np.float64)
    far = int((np.abs(values - loc_t.float().numpy()) > 100 * scale_t.float().numpy()).sum())
    said = [str(w.message) for w in caught if "posterior standard deviations" in str(w.message)]
    assert far > 0 and said and said[0].startswith(f"tensor 'w': {far:,} weights were decoded more than 100")


def test_float64_means_float32_cannot_hold_within_their_sds_are_said(tmp_path):
    """Scales of 1e-10 on means near 1 (below float32's spacing there): the archive's float32 values were up
    to 469 sds off, with no warning (a raw tensor's quality is not checked; coded ones compare with float32)."""
    loc = np.linspace(1.0, 2.0, 10)
    r = bnncompress.pack({"b": (loc, np.full(10, 1e-10))}, tmp_path / "f.bnc", lam=0.1)
    assert any("float64 means have posterior sds below float32's spacing" in w for w in r.warnings), r.warnings
    directory = tmp_path / "npy"  # read by rows from the files (in memory, or streamed), not through make_tensor
    directory.mkdir()
    np.save(directory / "b.loc.npy", np.linspace(1.0, 2.0, 4000).reshape(100, 40))
    np.save(directory / "b.scale.npy", np.full((100, 40), 1e-10))
    for stream in (False, True):
        r = bnncompress.pack(directory, tmp_path / "d.bnc", lam=0.1, stream=stream)
        said = [w for w in r.warnings if "float32's spacing" in w]
        assert len(said) == 1 and "3,328 float64 means" in said[0], (stream, r.warnings)  # (each row counted once)
    r = bnncompress.pack({"b": (loc, np.full(10, 1e-3))}, tmp_path / "g.bnc", lam=0.1)
    assert not any("float32's spacing" in w for w in r.warnings)


@pytest.mark.parametrize("shape", [(100, 40), (4000, 1)])
def test_float64_hdf5_posteriors_pack_and_are_counted_per_weight(tmp_path, shape):
    """HDF5 readers return rows as stored (2-D) against flat float32 values: every float64 HDF5 posterior of 2
    or more dimensions failed with a broadcasting ValueError traceback, and a (R, 1) one was compared R x R (a
    3,000-weight tensor said 8,489,890 means, in memory growing with rows squared)."""
    path = tmp_path / "p.h5"
    for scale, expected in ((1e-10, "3,328 float64 means"), (1e-3, None)):
        with h5py.File(path, "w") as f:  # h5py writes numpy's float64 unless told otherwise
            f["b/loc"] = np.linspace(1.0, 2.0, 4000).reshape(shape)
            f["b/scale"] = np.full(shape, scale)
        for stream in (False, True):
            r = bnncompress.pack(path, tmp_path / "h.bnc", lam=0.1, stream=stream, force=True)
            said = [w for w in r.warnings if "float32's spacing" in w]
            assert (said and expected in said[0]) if expected else not said, (stream, r.warnings)
            assert bnncompress.load(r.path)["b"].shape == shape


@pytest.mark.parametrize("method", ["kmeans", "weighted-kmeans"])
def test_kmeans_is_the_same_at_any_magnitude(tmp_path, method):
    """Lloyd's iterations stopped at an absolute tolerance of 1e-12: weights below about 1e-9 got other
    clusters (0.24 relative difference, sd-RMS error 0.76 -> 1.15 at 1e-12)."""
    rng = np.random.default_rng(0)
    loc, scale = rng.normal(size=(400, 10)), np.exp(rng.normal(-1, 0.3, size=(400, 10)))
    one = bnncompress.pack({"w": (loc, scale)}, tmp_path / "1.bnc", method=method, lam=4.0).path
    tiny = bnncompress.pack({"w": (loc * 1e-12, scale * 1e-12)}, tmp_path / "t.bnc", method=method, lam=4.0).path
    a, b = bnncompress.load(one)["w"], bnncompress.load(tiny)["w"] / 1e-12
    assert np.allclose(a, b, rtol=1e-5, atol=1e-6)


def test_rows_quantized_to_constants_are_said_only_where_a_direction_was_lost(tmp_path):
    """Rows whose means lie within their posterior sds (unused words) were called 'quantized to a constant
    vector (their direction is lost); use more bits' at every rate, even at 10 bits/weight."""
    rng = np.random.default_rng(0)
    loc = rng.normal(size=(64, 64))
    loc[:3] = rng.normal(0, 1e-4, size=(3, 64))  # three rows of means far inside their sds (0.5)
    scale = np.full((64, 64), 0.5)
    for method in ("uniform", "vbq-transform"):
        r = bnncompress.pack({"w": (loc, scale)}, tmp_path / "r.bnc", method=method, bits=6)
        assert not any("direction is lost" in w for w in r.warnings), (method, r.warnings)
    loc[:3] = rng.normal(0, 0.01, size=(3, 64))  # rows of means apart by more than their sds (1e-3), collapsed
    scale[:3] = 1e-3
    r = bnncompress.pack({"w": (loc, scale)}, tmp_path / "c.bnc", method="uniform", bits=2)
    assert any("direction is lost" in w for w in r.warnings), r.warnings


def test_the_float64_note_comes_back_from_workers_that_read_the_rows(tmp_path, monkeypatch):
    """On Dask the workers read a file's rows into their own copies of the tensor: the note counted this
    process's reads only, so --workers and --scheduler packs of .npy, HDF5 and safetensors files said nothing."""
    from bnncompress.executors import LocalExecutor

    original = LocalExecutor.map

    def in_copies(self, fn, tasks):  # as a worker gets them: pickled
        return original(self, fn, [pickle.loads(pickle.dumps(task)) for task in tasks])

    monkeypatch.setattr(LocalExecutor, "map", in_copies)
    with h5py.File(tmp_path / "p.h5", "w") as f:
        f["b/loc"], f["b/scale"] = np.linspace(1.0, 2.0, 4000).reshape(100, 40), np.full((100, 40), 1e-10)
    r = bnncompress.pack(tmp_path / "p.h5", tmp_path / "h.bnc", lam=0.1, stream=True)
    assert any("3,328 float64 means have posterior sds below float32's spacing" in w for w in r.warnings), r.warnings


def test_the_float64_note_counts_each_mean_once_however_often_its_rows_are_read(tmp_path, monkeypatch):
    """Refinements read runs of rows that start inside the statistics pass's ranges: each read was counted, so a
    200,000 x 16 posterior streamed said 4,234,744 of its 3.2 M means (2,662,573 are)."""
    import bnncompress.blockrows
    from bnncompress import geometry

    monkeypatch.setattr(geometry, "BLOCK_SYMBOLS", 512)  # 128 blocks of 128 rows; refined: 32 runs of one block
    monkeypatch.setattr(bnncompress.blockrows, "REFINE_ROWS", 4096)
    rng = np.random.default_rng(0)
    loc, scale = rng.uniform(1.0, 2.0, (16_384, 4)), np.full((16_384, 4), 1e-10)
    (tmp_path / "d").mkdir()
    np.save(tmp_path / "d" / "w.loc.npy", loc)
    np.save(tmp_path / "d" / "w.scale.npy", scale)
    true = int(np.count_nonzero(np.abs(loc - loc.astype(np.float32)) / scale > 100))
    r = bnncompress.pack(tmp_path / "d", tmp_path / "w.bnc", lam=0.3, stream=True)
    assert any(f"{true:,} float64 means have posterior sds" in w for w in r.warnings), (true, r.warnings)

"""One pipeline: in-memory, streamed (block by block) and Dask packs write the same bytes, for every method
that works block by block; the others refuse the streamed and Dask routes in one line."""

from __future__ import annotations

import sys
from fractions import Fraction

import numpy as np
import pytest
from typer.testing import CliRunner

import bnncompress
from bnncompress import OptionError, PosteriorError, executors
from bnncompress.exactsum import ExactSum
from bnncompress.quantizers import METHODS
from bnncompress.sources import open_posterior
from bnncompress.sources.stored import FileTensor as FileSource

BLOCKWISE = sorted(m for m, cls in METHODS.items() if cls.blockwise)
WHOLE_TENSOR = sorted(m for m, cls in METHODS.items() if not cls.blockwise)


@pytest.fixture()
def small_tasks(monkeypatch):
    """Tasks of ~64K weights, so that even a small posterior streams in many tasks."""
    monkeypatch.setattr(executors.LocalExecutor, "task_symbols", 1 << 16)


@pytest.fixture(scope="module")
def big(synthetic):
    """600,000 weights of the skip-gram-shaped posterior: more than rate control's subsample threshold."""
    loc, scale = synthetic
    return np.tile(loc, (6, 1)), np.tile(scale, (6, 1))


def write_npy_dir(path, tensors, vocab=None):
    path.mkdir()
    for name, (loc, scale) in tensors.items():
        np.save(path / f"{name}.loc.npy", loc)
        np.save(path / f"{name}.scale.npy", scale)
    if vocab is not None:
        (path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    return path


def write_hdf5(path, tensors, vocab=None):
    import h5py

    with h5py.File(path, "w") as f:
        for name, (loc, scale) in tensors.items():
            g = f.create_group(name)
            g.create_dataset("loc", data=loc, chunks=True, compression="gzip")  # chunked: read by slicing
            g.create_dataset("scale", data=scale)
        if vocab is not None:
            f.create_dataset("vocab", data=np.array(vocab, dtype="S"))
    return path


def write_safetensors(path, tensors, vocab=None):
    import json

    from safetensors.numpy import save_file

    flat = {
        f"{n}.{k}": np.ascontiguousarray(v)
        for n, (loc, scale) in tensors.items()
        for k, v in (("loc", loc), ("scale", scale))
    }
    save_file(flat, str(path), metadata={"vocab": json.dumps(vocab)} if vocab else None)
    return path


WRITERS = {"npy": (write_npy_dir, "post"), "hdf5": (write_hdf5, "post.h5"), "safetensors": (write_safetensors, "p.st")}


def test_the_blockwise_methods_include_the_default_and_the_anchors():
    assert {"vbq-transform", "vbq-direction", "vbq", "vbq-empirical", "uniform", "float16"} <= set(BLOCKWISE)
    assert set(WHOLE_TENSOR) == {"kmeans", "weighted-kmeans", "pq"}


def _stream_cases():
    """In the quick run, every method from HDF5 at 2 bits/weight and the default method from every
    format at both rates; the rest of the product with the slow tests."""
    for rate, rate_id in (({"bits": 2.0}, "bits2"), ({"lam": None}, "default-lam"), ({"size": 100_000}, "size")):
        for method in BLOCKWISE if "size" not in rate else ["vbq-transform"]:  # (a size: the default's only)
            for kind in sorted(WRITERS):
                quick = method == "vbq-transform" or (kind == "hdf5" and rate_id == "bits2")
                marks = () if quick else pytest.mark.slow
                yield pytest.param(kind, method, rate, marks=marks, id=f"{rate_id}-{method}-{kind}")


@pytest.mark.parametrize(("kind", "method", "rate"), list(_stream_cases()))
def test_streamed_pack_is_byte_identical_to_in_memory(tmp_path, big, small_tasks, kind, method, rate):
    loc, scale = big
    if "bits" in rate and method == "float16":
        rate = {}
    tensors = {
        "word_vectors": (loc, scale),
        "bias": (loc[:300, :3].astype(np.float16), scale[:300, :3].astype(np.float16)),  # one model (levelled)
    }
    vocab = [f"w{i}" for i in range(len(loc))]
    write, name = WRITERS[kind]
    src = write(tmp_path / name, tensors, vocab)
    a = bnncompress.pack(src, tmp_path / "memory.bnc", method=method, stream=False, **rate)
    b = bnncompress.pack(src, tmp_path / "stream.bnc", method=method, stream=True, **rate)
    assert (tmp_path / "memory.bnc").read_bytes() == (tmp_path / "stream.bnc").read_bytes()
    assert a.lam == b.lam
    archive = bnncompress.load(tmp_path / "stream.bnc")
    assert archive.vocab == vocab and archive["bias"].dtype == np.float16 and archive.names == ["bias", "word_vectors"]
    assert method != "vbq-transform" or archive.record("bias").kind.name == "levelled"
    if "bits" in rate:
        assert abs(b.payload_bits_per_weight - 2.0) < 0.04


def test_classed_routes_are_byte_identical_with_the_classes_code_lengths(tmp_path, big, small_tasks, client):
    loc, scale = big  # 10 blocks; 3 classes steer the assignment too (rate control's sample mixes them)
    src = write_npy_dir(tmp_path / "npy", {"word_vectors": (loc, scale)})
    options = {"classes": 3, "class_costs": True}
    routes = {"memory": {"stream": False}, "stream": {"stream": True}, "dask": {"scheduler": client}}
    for route, how in routes.items():
        bnncompress.pack(src, tmp_path / f"{route}.bnc", method="vbq-transform", bits=1.0, options=options, **how)
    data = {route: (tmp_path / f"{route}.bnc").read_bytes() for route in routes}
    assert data["memory"] == data["stream"] == data["dask"]
    rec = bnncompress.load(tmp_path / "memory.bnc").record("word_vectors")
    assert rec.class_values == 3 and rec.block_classes.tolist() == [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert rec.params["class_costs"] is True


@pytest.mark.parametrize("method", WHOLE_TENSOR)
def test_whole_tensor_methods_refuse_to_stream_in_one_line(tmp_path, synthetic, method):
    src = write_npy_dir(tmp_path / "post", {"w": synthetic})
    for route in ({"stream": True}, {"workers": 1}):
        with pytest.raises(OptionError, match="needs whole tensors in memory"):
            bnncompress.pack(src, tmp_path / "out.bnc", method=method, **route)
    assert not (tmp_path / "out.bnc").exists()


def test_streaming_reads_one_task_at_a_time(tmp_path, big, small_tasks, monkeypatch):
    loc, scale = big
    src = write_npy_dir(tmp_path / "post", {"w": (loc, scale)})
    reads = []
    real = FileSource._read

    def spy(self, start, stop):
        reads.append((stop - start) * self.row_size)
        return real(self, start, stop)

    monkeypatch.setattr(FileSource, "_read", spy)
    bnncompress.pack(src, tmp_path / "kept.bnc", stream=True, bits=2.0, method="vbq")
    assert max(reads) <= 2 * executors.LocalExecutor.task_symbols
    assert sum(reads) == 2 * loc.size  # the prior, the histogram at lambda (its indices are then coded)
    reads.clear()
    monkeypatch.setattr(executors, "KEEP_BYTES", 0)
    bnncompress.pack(src, tmp_path / "requantized.bnc", stream=True, bits=2.0, method="vbq")
    assert sum(reads) == 3 * loc.size  # without room to keep the indices, coding quantizes again
    assert (tmp_path / "kept.bnc").read_bytes() == (tmp_path / "requantized.bnc").read_bytes()


def test_in_memory_posterior_streams_and_reads_like_files(tmp_path, synthetic, small_tasks):
    loc, scale = synthetic
    bnncompress.pack({"w": (loc, scale)}, tmp_path / "a.bnc", bits=2.5)
    bnncompress.pack({"w": (loc, scale)}, tmp_path / "b.bnc", bits=2.5, stream=True)
    assert (tmp_path / "a.bnc").read_bytes() == (tmp_path / "b.bnc").read_bytes()
    for kind, (write, name) in WRITERS.items():
        p = bnncompress.read_posterior(write(tmp_path / name, {"w": (loc, scale)}))
        np.testing.assert_array_equal(p.tensors["w"].loc, loc, err_msg=kind)
        np.testing.assert_array_equal(p.tensors["w"].scale, scale, err_msg=kind)


def test_bad_values_in_a_streamed_file_name_the_tensor_and_write_nothing(tmp_path, synthetic, small_tasks):
    loc, scale = synthetic
    scale = scale.copy()
    scale[1500, 3] = 0.0
    src = write_npy_dir(tmp_path / "post", {"emb": (loc, scale)})
    with pytest.raises(PosteriorError, match="scale of 'emb' has 1 NaN/inf or non-positive"):
        bnncompress.pack(src, tmp_path / "out.bnc", stream=True)
    assert not (tmp_path / "out.bnc").exists()
    scale[:, :] = -1.0  # (every scale: a streamed pack counted the first rows read and said it of the tensor)
    src = write_npy_dir(tmp_path / "all", {"emb": (loc, scale)})
    with pytest.raises(
        PosteriorError, match=r"has \d+ NaN/inf or non-positive values in rows 0 to [\d,]+ \(checked as"
    ):
        bnncompress.pack(src, tmp_path / "out.bnc", stream=True)
    (tmp_path / "lonely").mkdir()
    np.save(tmp_path / "lonely" / "x.loc.npy", loc)
    with pytest.raises(PosteriorError, match="no matching 'x.scale.npy'"):
        bnncompress.pack(tmp_path / "lonely", tmp_path / "out.bnc", stream=True)
    bnncompress.pack({"w": (loc, np.abs(scale) + 0.1)}, tmp_path / "archive.bnc", lam=0.1)
    with pytest.raises(PosteriorError, match="is a bnncompress archive"):
        bnncompress.pack(tmp_path / "archive.bnc", tmp_path / "out.bnc")


def test_exact_sums_do_not_depend_on_the_split():
    rng = np.random.default_rng(0)
    x = (rng.standard_cauchy(size=10007) * 10.0 ** rng.integers(-30, 30, size=10007)).astype(np.float32)
    whole = ExactSum.of_float32(x)
    parts = ExactSum.of_float32(x[:5000]) + ExactSum.of_float32(x[5000:9999]) + ExactSum.of_float32(x[9999:])
    assert whole.exact() == parts.exact() == sum(Fraction(float(v)) for v in x)
    squares = ExactSum.of_squares(x[::-1])
    assert squares.exact() == (ExactSum.of_squares(x[:3]) + ExactSum.of_squares(x[3:])).exact()
    assert squares.exact() == sum(Fraction(float(v)) ** 2 for v in x)


def test_exact_sums_of_more_values_than_int64_buckets_hold_stay_exact():
    """Blocks' sums were added as int64 buckets: past about 7e10 weights (2**40 allowed) of means in [1, 2)
    the mean of squares wrapped to -4.8e-07 (the vbq prior's spread, uniform's rms). Simulated by adding
    one block's sum to itself, as folding 2**k equal blocks does."""
    block = np.full(1 << 20, 1.9999999, np.float32)
    squares, plain = ExactSum.of_squares(block), ExactSum.of_float32(block)
    for _ in range(20):  # 2**40 weights
        squares, plain = squares + squares, plain + plain
    assert squares.count == plain.count == 2**40
    assert squares.exact() == Fraction(float(block[0])) ** 2 * 2**40
    assert plain.exact() == Fraction(float(block[0])) * 2**40


# ------------------------------------------------------------------------------ Dask


@pytest.fixture(scope="module")
def client():
    distributed = pytest.importorskip("distributed")
    with (
        distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0") as cluster,
        distributed.Client(cluster) as c,
    ):
        yield c


@pytest.mark.parametrize(  # the default method and one anchor in the quick run
    "method", [m if m in ("vbq-transform", "uniform") else pytest.param(m, marks=pytest.mark.slow) for m in BLOCKWISE]
)
def test_dask_pack_is_byte_identical_to_local_pack(tmp_path, big, small_tasks, client, method):
    loc, scale = big
    rate = {} if method == "float16" else {"bits": 2.0}
    src = write_npy_dir(tmp_path / "post", {"word_vectors": (loc, scale), "b": (loc[:300, :5], scale[:300, :5])})
    bnncompress.pack(src, tmp_path / "local.bnc", method=method, stream=False, **rate)
    bnncompress.pack(src, tmp_path / "dask.bnc", method=method, scheduler=client, **rate)
    assert (tmp_path / "local.bnc").read_bytes() == (tmp_path / "dask.bnc").read_bytes()
    if method == "vbq-transform":  # a target size: the same passes, so the same bytes
        bnncompress.pack(src, tmp_path / "local_size.bnc", method=method, stream=False, size="80K")
        bnncompress.pack(src, tmp_path / "dask_size.bnc", method=method, scheduler=client, size="80K")
        assert (tmp_path / "local_size.bnc").read_bytes() == (tmp_path / "dask_size.bnc").read_bytes()
        assert 0.98 * 80 * 1024 <= (tmp_path / "dask_size.bnc").stat().st_size <= 80 * 1024
    # a posterior in memory is scattered to the workers once
    bnncompress.pack({"w": (loc, scale)}, tmp_path / "mem_local.bnc", method=method)
    bnncompress.pack({"w": (loc, scale)}, tmp_path / "mem_dask.bnc", method=method, scheduler=client)
    assert (tmp_path / "mem_local.bnc").read_bytes() == (tmp_path / "mem_dask.bnc").read_bytes()


@pytest.mark.slow  # starts a local Dask cluster of worker processes
def test_cli_workers_starts_a_local_cluster(tmp_path, synthetic):
    pytest.importorskip("distributed")
    from bnncompress.cli import app

    loc, scale = synthetic
    src = write_npy_dir(tmp_path / "emb", {"word_vectors": (loc, scale)})
    runner = CliRunner()
    r = runner.invoke(app, ["pack", str(src), "--bits", "2", "--workers", "1", "-q"])
    assert r.exit_code == 0, r.output
    bnncompress.pack(src, tmp_path / "local.bnc", bits=2.0)
    assert (tmp_path / "emb.bnc").read_bytes() == (tmp_path / "local.bnc").read_bytes()
    r = runner.invoke(app, ["pack", str(src), "--workers", "2", "--scheduler", "tcp://127.0.0.1:1", "-o", "x.bnc"])
    assert r.exit_code == 2 and "not both" in r.output
    r = runner.invoke(app, ["pack", str(src), "--workers", "1", "--method", "vbq", "--no-stream", "--lam", "-1", "-f"])
    assert r.exit_code == 2 and "lambda" in r.output


def test_the_tensors_of_a_pack_share_one_allowance_of_pass_data(tmp_path, big, monkeypatch):
    """The tensors of a posterior held in memory share PASS_DATA_BYTES of pass data (a transform's
    rotated coordinates and weights, recomputed at every pass otherwise), a streamed one's share 256 MiB
    (each kept up to 256 MiB until the pack ended: 1.2 GiB for 8 tensors); each keeps at most its share
    while it is fitted too (the fit's pass keeps the rotated rows), and drops it once coded."""
    from bnncompress.pipeline import PASS_DATA_BYTES, STREAMED_PASS_DATA_BYTES
    from bnncompress.quantizers.transform import CACHE_BYTES, FittedTransform

    allowed = []
    monkeypatch.setattr(FittedTransform, "keep_pass_data", lambda self, limit: allowed.append(limit))
    loc, scale = big
    tensors = {"a": (loc, scale), "b": (loc[: len(loc) // 4], scale[: len(loc) // 4])}
    bnncompress.pack(tensors, tmp_path / "memory.bnc", bits=2.0)
    a, b = PASS_DATA_BYTES * 4 // 5, PASS_DATA_BYTES // 5
    assert allowed == [min(CACHE_BYTES, a), a, min(CACHE_BYTES, b), b, 0, 0]
    allowed.clear()
    write_npy_dir(tmp_path / "src", tensors)
    bnncompress.pack(tmp_path / "src", tmp_path / "stream.bnc", bits=2.0, stream=True)
    a, b = STREAMED_PASS_DATA_BYTES * 4 // 5, STREAMED_PASS_DATA_BYTES // 5
    assert allowed == [min(CACHE_BYTES, a), a, min(CACHE_BYTES, b), b, 0, 0]


@pytest.mark.parametrize("stream", [False, True])
def test_what_the_fits_keep_stays_within_the_packs_allowance(tmp_path, big, monkeypatch, stream):
    """A tensor's fit keeps its rotated rows for the first pass at a rate within its share of the pack's
    allowance (here 1 MiB, a fifth of what the rows would take), also while the tensors are being fitted one
    after another, and the archive is the one packed with room for everything."""
    from bnncompress import pipeline
    from bnncompress.quantizers.transform import FittedTransform

    loc, scale = big
    src = write_npy_dir(tmp_path / "src", {"a": (loc, scale), "b": (loc[: len(loc) // 4], scale[: len(loc) // 4])})
    bnncompress.pack(src, tmp_path / "roomy.bnc", bits=2.0, stream=stream)
    kept = []  # (bytes, limit) after each fit's row pass
    fit_rows = FittedTransform.fit_rows
    record = lambda self, *a: fit_rows(self, *a) or kept.append((self.kept._bytes, self.kept.limit))  # noqa: E731
    monkeypatch.setattr(FittedTransform, "fit_rows", record)
    monkeypatch.setattr(pipeline, "STREAMED_PASS_DATA_BYTES" if stream else "PASS_DATA_BYTES", 1 << 20)
    bnncompress.pack(src, tmp_path / "tight.bnc", bits=2.0, stream=stream)
    assert [limit for _, limit in kept] == [(1 << 20) * 4 // 5, (1 << 20) // 5]
    assert kept[0][0] > 0 and all(size <= limit for size, limit in kept)  # (b's share holds no whole block)
    assert (tmp_path / "roomy.bnc").read_bytes() == (tmp_path / "tight.bnc").read_bytes()


def test_a_tight_allowance_keeps_no_rotated_rows_it_cannot_use(tmp_path, monkeypatch):
    """Where a wide tensor's share of the allowance holds a block's rotated rows but not much more, the rows are
    kept only with what checks them (a 16-byte digest of the means and basis, not a copy of the D x D basis: 720 kB
    at D = 300, which did not fit, so the rows were kept, never used, and crowded out the later passes' weights)."""
    from bnncompress import pipeline
    from bnncompress.quantizers import base, transform

    rng = np.random.default_rng(0)
    loc = rng.normal(size=(2048, 300)).astype(np.float32)
    monkeypatch.setattr(pipeline, "PASS_DATA_BYTES", 700_000)  # one block's rows (523 kB), not the basis as well
    monkeypatch.setattr(transform, "_MIN_ROWS_PER_COLUMN", 1)  # (per-column models for 2,048 rows of 300)
    left = []
    keep = base.FittedQuantizer.keep_pass_data

    def record(self, limit):
        if limit == 0 and self.kept is not None:  # (the pack is done with the tensor)
            left.append([k for k in self.kept._items if isinstance(k, tuple) and k[0] == "means"])
        return keep(self, limit)

    monkeypatch.setattr(base.FittedQuantizer, "keep_pass_data", record)
    bnncompress.pack({"w": (loc, np.full_like(loc, 0.3))}, tmp_path / "w.bnc", lam=0.5, options={"transform": "pca"})
    assert bnncompress.load(tmp_path / "w.bnc").record("w").params.get("rotated") and left == [[]]


def test_full_evaluations_refine_on_spread_blocks_and_every_route_writes_the_same(
    tmp_path, big, small_tasks, client, monkeypatch
):
    """Above blockrows.REFINE_ROWS rows, a lambda's refinement passes and the fit's pass for the grid's
    extent read runs of whole coding blocks evenly spread over the tensor (here 3 runs of one block of
    10, lowered for the test) and the counting and coding passes every block: in memory, streamed and
    on Dask alike, to the same bytes."""
    from bnncompress import blockrows, geometry
    from bnncompress.quantizers import transform
    from bnncompress.quantizers.transform import FittedTransform

    loc, scale = big
    block_rows = geometry.block_rows_for(loc.shape)
    monkeypatch.setattr(blockrows, "REFINE_ROWS", 3 * block_rows)
    monkeypatch.setattr(blockrows, "REFINE_RUNS", 3)  # of 1 block each
    refined = []
    at = FittedTransform.at

    def spy(self, lam, rows):
        refined.append(getattr(rows, "ranges", None))  # None: the rate-control subsample
        return at(self, lam, rows)

    monkeypatch.setattr(FittedTransform, "at", spy)
    extent_rows = []  # the first row of each block the fit's second pass reads (in this process)
    row_pass = transform._row_pass

    def spy_row_pass(block, *args):
        extent_rows.append(block.first_row)
        return row_pass(block, *args)

    monkeypatch.setattr(transform, "_row_pass", spy_row_pass)
    src = write_npy_dir(tmp_path / "npy", {"word_vectors": (loc, scale)})
    routes = {"memory": {"stream": False}, "stream": {"stream": True}, "dask": {"scheduler": client}}
    for route, how in routes.items():
        bnncompress.pack(src, tmp_path / f"{route}.bnc", bits=2.0, **how)
    data = {route: (tmp_path / f"{route}.bnc").read_bytes() for route in routes}
    assert data["memory"] == data["stream"] == data["dask"]
    last = geometry.num_blocks(loc.shape, block_rows) - 1
    picks = np.linspace(0, last, 3).round().astype(int)  # the first, middle and last blocks
    spread = [(b * block_rows, min((b + 1) * block_rows, len(loc))) for b in picks]
    full = [r for r in refined if r is not None]
    assert full and all(r == spread for r in full), full[:1]
    # in memory, then streamed (Dask's workers read their own); threads may read the blocks in any order
    assert sorted(extent_rows) == sorted([a for a, _ in spread] * 2)
    a = bnncompress.load(tmp_path / "memory.bnc")
    assert a.record("word_vectors").num_weights == loc.size and abs(8 * a.payload_bytes / loc.size - 2.0) < 0.04


def test_a_streamed_pack_warns_of_the_values_it_wrote(tmp_path):
    """A streamed pack checked the column values during its count pass, not a class-valued record's
    class values: its warnings numbered 2,932 far weights where the archive holds 2,892 (byte-identical
    to the in-memory pack, which said 2,892). The streaming hunt's example, smaller."""
    rng = np.random.default_rng(1)
    n, k = 3000, 40
    loc = (rng.normal(size=(n, k)) @ rng.normal(size=(k, k)) * 0.3).astype(np.float32)
    scale = (rng.uniform(0.05, 0.8, size=(n, k)) * np.linspace(0.5, 3, n)[:, None]).astype(np.float32)
    scale.reshape(-1)[rng.choice(n * k, 1500, replace=False)] = 1e-5
    np.save(tmp_path / "emb.loc.npy", loc)
    np.save(tmp_path / "emb.scale.npy", scale)
    results = {}
    for stream in (False, True):
        with pytest.warns(bnncompress.QualityWarning):
            options = {"classes": 4}  # (class values need classes: 4 of 5 blocks of 3,000 rows of 40)
            results[stream] = bnncompress.pack(
                tmp_path, tmp_path / f"{stream}.bnc", lam=1.0, stream=stream, options=options
            )
    assert (tmp_path / "False.bnc").read_bytes() == (tmp_path / "True.bnc").read_bytes()
    err = np.abs(bnncompress.load(tmp_path / "True.bnc")["emb"].astype(np.float64) - loc)
    far = f"tensor 'emb': {int((err > 100 * scale).sum()):,} weights were decoded more than 100"
    assert any(w.startswith(far) for w in results[True].warnings), results[True].warnings
    assert results[True].warnings == results[False].warnings


def test_float64_beyond_float32_in_a_streamed_file_is_one_error_without_numpys_warning(tmp_path):
    loc = np.zeros((50, 4))
    loc[3, 1] = 1e300
    np.save(tmp_path / "w.loc.npy", loc)
    np.save(tmp_path / "w.scale.npy", np.ones((50, 4)))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's "overflow encountered in cast" leaked (and on Dask, to stderr)
        with pytest.raises(PosteriorError, match="NaN/inf values"):
            bnncompress.pack(tmp_path, tmp_path / "o.bnc", lam=1.0, stream=True)


def test_a_selected_tensor_is_packed_as_if_it_were_alone(tmp_path, monkeypatch):
    # the other tensors were read and checked first: a NaN in one refused `--tensor good` in memory (not when
    # streamed), and a big one switched streaming on, so kmeans was refused for a 1,000-weight tensor
    packing = sys.modules["bnncompress.packing"]  # (bnncompress.pack is the function)
    monkeypatch.setattr(packing, "STREAM_WEIGHTS", 10_000)
    rng = np.random.default_rng(0)
    directory = tmp_path / "post"
    directory.mkdir()
    for name, rows in (("good", 100), ("big", 2_000)):
        np.save(directory / f"{name}.loc.npy", rng.normal(size=(rows, 10)).astype(np.float32))
        np.save(directory / f"{name}.scale.npy", np.full((rows, 10), 0.1, np.float32))
    alone = bnncompress.pack(directory, tmp_path / "k.bnc", method="kmeans", lam=1.0, tensors=["good"])
    loc = np.load(directory / "big.loc.npy")
    loc[5, 5] = np.nan
    np.save(directory / "big.loc.npy", loc)
    for stream in (None, False, True):
        if stream is True:  # (kmeans cannot stream: the default method can, whatever else the file holds)
            r = bnncompress.pack(directory, tmp_path / "s.bnc", lam=1.0, tensors=["good"], stream=True)
            assert bnncompress.load(r.path).names == ["good"]
            continue
        r = bnncompress.pack(directory, tmp_path / "g.bnc", method="kmeans", lam=1.0, tensors=["good"], stream=stream)
        assert r.payload_bytes == alone.payload_bytes
        np.testing.assert_array_equal(bnncompress.load(r.path)["good"], bnncompress.load(alone.path)["good"])


def write_column_chunked(path, loc, scale, columns=1):
    """loc and scale gzip-compressed in chunks of every row and ``columns`` columns (a column-major writer's)."""
    import h5py

    with h5py.File(path, "w") as f:
        for key, values in (("w/loc", loc), ("w/scale", scale)):
            f.create_dataset(key, data=values, chunks=(len(values), columns), compression="gzip")
    return path


@pytest.fixture()
def bands():
    """The process's cache of HDF5 bands, empty before and after the test."""
    from bnncompress.sources.hdf5bands import CACHE

    CACHE.clear()
    yield CACHE
    CACHE.clear()


def _count_decompressed_chunks(monkeypatch) -> list[int]:
    """Chunks each row-range read of a chunked h5py dataset decompresses (every chunk it overlaps, once)."""
    import h5py

    counted: list[int] = []
    real = h5py.Dataset.__getitem__

    def counting(self, args, *more, **named):
        if self.chunks and isinstance(args, slice):
            start, stop, _ = args.indices(self.shape[0])
            height = self.chunks[0]
            across = int(np.prod([-(-n // c) for n, c in zip(self.shape[1:], self.chunks[1:])]))
            counted.append(max(-(-stop // height) - start // height, 0) * across)
        return real(self, args, *more, **named)

    monkeypatch.setattr(h5py.Dataset, "__getitem__", counting)
    return counted


@pytest.mark.parametrize("columns", [1, 4])
def test_a_column_chunked_hdf5_file_is_decompressed_once_per_streamed_pack(
    tmp_path, synthetic, small_tasks, bands, monkeypatch, columns
):
    # Every read of a few rows decompressed every whole column chunk: (tasks x whole tensor) per pass, a
    # 100,000 x 100 file chunked (N, 1) took 66 s to pack streamed against 5.5 s chunked by rows.
    loc, scale = synthetic
    src = write_column_chunked(tmp_path / "cols.h5", loc, scale, columns)
    bnncompress.pack(src, tmp_path / "memory.bnc", bits=2.0, stream=False)
    counted = _count_decompressed_chunks(monkeypatch)
    bnncompress.pack(src, tmp_path / "stream.bnc", bits=2.0, stream=True)
    assert sum(counted) == 2 * -(-loc.shape[1] // columns)  # loc's and scale's chunks, each once
    assert (tmp_path / "memory.bnc").read_bytes() == (tmp_path / "stream.bnc").read_bytes()
    assert bands.nbytes == 0  # the pack's bands are not kept for the process


def test_a_band_over_the_budget_is_read_as_before_and_packs_the_same(
    tmp_path, synthetic, small_tasks, bands, monkeypatch
):
    loc, scale = synthetic
    src = write_column_chunked(tmp_path / "cols.h5", loc, scale)
    bnncompress.pack(src, tmp_path / "cached.bnc", bits=2.0, stream=True)
    monkeypatch.setattr(bands, "budget", loc.nbytes)  # loc's and scale's bands do not fit together
    counted, reads = _count_decompressed_chunks(monkeypatch), bands.reads
    bnncompress.pack(src, tmp_path / "uncached.bnc", bits=2.0, stream=True)
    assert sum(counted) > 10 * 2 * loc.shape[1] and bands.nbytes == 0 and bands.reads == reads
    assert (tmp_path / "cached.bnc").read_bytes() == (tmp_path / "uncached.bnc").read_bytes()


def test_hdf5_bands_are_never_served_from_a_file_written_since(tmp_path, synthetic, bands):
    import os

    loc, scale = synthetic
    path = write_column_chunked(tmp_path / "cols.h5", loc, scale)
    old = open_posterior(path).tensors["w"]
    np.testing.assert_array_equal(old.read(10, 20)[0], loc[10:20].reshape(-1))
    assert bands.nbytes == loc.nbytes + scale.nbytes  # kept: rows 10:20 of every column chunk
    for how in ("in place", "replaced"):
        loc, scale = loc + 1, scale * 2
        if how == "in place":  # the same inode and size: its times differ (set apart: the clock ticks coarsely)
            stamp = os.stat(path)
            write_column_chunked(path, loc, scale)
            os.utime(path, ns=(stamp.st_atime_ns, stamp.st_mtime_ns + 10**9))
        else:
            os.replace(write_column_chunked(tmp_path / "new.h5", loc, scale), path)
        with pytest.raises(PosteriorError, match="was changed while"):
            old.read(10, 20)
        new = open_posterior(path).tensors["w"]
        got = new.read(10, 20)
        np.testing.assert_array_equal(got[0], loc[10:20].reshape(-1))
        np.testing.assert_array_equal(got[1], scale[10:20].reshape(-1))
        old = new


def test_a_file_rewritten_between_two_streamed_packs_packs_its_new_values(tmp_path, synthetic, small_tasks, bands):
    loc, scale = synthetic
    path = write_column_chunked(tmp_path / "cols.h5", loc, scale)
    bnncompress.pack(path, tmp_path / "first.bnc", lam=0.5, stream=True)
    write_column_chunked(path, loc[::-1], scale[::-1])
    bnncompress.pack(path, tmp_path / "second.bnc", lam=0.5, stream=True)
    bnncompress.pack(path, tmp_path / "memory.bnc", lam=0.5, stream=False)
    assert (tmp_path / "second.bnc").read_bytes() == (tmp_path / "memory.bnc").read_bytes()
    assert (tmp_path / "second.bnc").read_bytes() != (tmp_path / "first.bnc").read_bytes()


def test_two_threads_reading_a_column_chunked_file_read_each_band_once(tmp_path, synthetic, bands):
    import threading

    loc, scale = synthetic
    tensor = open_posterior(write_column_chunked(tmp_path / "cols.h5", loc, scale)).tensors["w"]
    got: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
    ranges = [(a, min(a + 70, len(loc))) for a in range(0, len(loc), 70)]

    def read(part):
        for a, b in part:
            got[a, b] = tensor.read(a, b)

    threads = [threading.Thread(target=read, args=(ranges[i::2],)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert bands.reads == 2  # loc's band and scale's (the whole of each): the other thread waited for it
    for (a, b), (read_loc, s) in got.items():
        np.testing.assert_array_equal(read_loc, loc[a:b].reshape(-1))
        np.testing.assert_array_equal(s, scale[a:b].reshape(-1))

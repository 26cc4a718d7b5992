"""Serving compressed embeddings: CompressedEmbedding, the row cache, word lookups and gensim-equal queries."""

from __future__ import annotations

import os
import pickle
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

import bnncompress
from bnncompress.decoded import record_bytes
from bnncompress.posterior import Posterior, TensorPosterior
from bnncompress.rowaccess import RowReader
from bnncompress.rowcache import DECAY, RowCache


def _small(path, seed=0, dtype="float32", support=None, shape=(300, 6)):
    rng = np.random.default_rng(seed)
    loc = rng.normal(size=shape).astype(np.float32)
    tensor = TensorPosterior(loc, np.full(shape, 0.05, np.float32), dtype)
    supports = {"w": support} if support else {}
    bnncompress.pack(Posterior({"w": tensor}, supports=supports), path, lam=0.1)
    return bnncompress.load(path)


def test_forward_is_bit_identical_for_any_shape_and_int32(example):
    path, full = example
    emb = bnncompress.load(path).embedding()
    ids = torch.randint(0, 4000, (3, 5, 7))
    for batch in (ids, ids.to(torch.int32), ids):  # the third: served (partly) from the cache
        out = emb(batch)
        assert out.dtype == torch.float32 and out.shape == (3, 5, 7, 50)
        assert np.array_equal(out.numpy(), full[ids.numpy()])
    assert emb(torch.tensor(7)).shape == (50,)
    assert isinstance(emb, bnncompress.CompressedEmbedding) and isinstance(emb, torch.nn.Module)


def test_forward_decodes_only_the_missing_rows_in_one_call(example, monkeypatch):
    path, full = example
    emb = bnncompress.load(path).embedding(cache_rows=100)
    asked = []
    real = RowReader.rows

    def spy(self, positions):
        asked.append(np.asarray(positions).tolist())
        return real(self, positions)

    monkeypatch.setattr(RowReader, "rows", spy)
    emb(torch.tensor([9, 3, 9, 3000, 3]))
    assert asked == [[3, 9, 3000]]  # sorted, each row once, one call
    emb(torch.tensor([3, 9, 3, 3000]))
    assert asked == [[3, 9, 3000]]  # all cached: nothing decoded
    out = emb(torch.tensor([5, 9]))
    assert asked[-1] == [5] and np.array_equal(out.numpy(), full[[5, 9]])


def test_cache_is_bounded_at_a_tenth_of_the_rows_by_default(example):
    path, full = example
    a = bnncompress.load(path)
    emb = a.embedding()
    assert emb.rows.cache.capacity == 400
    rng = np.random.default_rng(1)
    for _ in range(5):
        ids = rng.integers(0, 4000, 1000)
        assert np.array_equal(emb(torch.from_numpy(ids)).numpy(), full[ids])
    assert len(emb.rows.cache) == 400
    assert a.embedding(cache_rows=50).rows.cache.capacity == 50 == emb.rows.cache.capacity  # one cache per tensor
    with pytest.raises(bnncompress.OptionError, match="cache_rows"):
        a.embedding(cache_rows=-1)
    off = a.embedding(cache_rows=0)
    assert np.array_equal(off(torch.tensor([1, 2, 1])).numpy(), full[[1, 2, 1]]) and len(off.rows.cache) == 0


def test_cache_keeps_the_frequent_rows_under_zipf():
    cache = RowCache(num_rows=10_000, row_size=2, capacity=100, dtype=np.float32)
    rng = np.random.default_rng(0)
    fetch = lambda rows: np.stack([rows, rows], axis=1).astype(np.float32)  # noqa: E731
    for _ in range(30):
        rows = np.minimum(rng.zipf(1.2, 4096) - 1, 9_999)
        np.testing.assert_array_equal(cache.lookup(rows, fetch)[:, 0], rows)
    assert (cache.slot_of[:20] >= 0).all()  # the most frequent rows are cached
    assert cache.hits > cache.misses


class _EagerCache(RowCache):
    """The cache as it was: every lookup scaled every count by DECAY (O(capacity) per lookup)."""

    def _decay(self):
        self.score[self.score >= 0] *= DECAY


def test_counts_decayed_lazily_keep_the_rows_eager_decay_keeps():
    # a single-id lookup cost O(capacity) (185 us with a 200,000-row cache): counts now decay by a growing
    # unit, reset every ~4,600 lookups; the rows kept must be those the eager decay keeps, across resets
    rng = np.random.default_rng(1)
    fetch = lambda rows: np.stack([rows, rows], axis=1).astype(np.float32)  # noqa: E731
    lazy, eager = (kind(num_rows=5_000, row_size=2, capacity=64, dtype=np.float32) for kind in (RowCache, _EagerCache))
    for step in range(10_000):
        size = 1 if step % 3 else int(rng.integers(1, 300))  # single words, and batches
        rows = np.minimum(rng.zipf(1.3, size) - 1, 4_999)
        np.testing.assert_array_equal(lazy.lookup(rows, fetch)[:, 0], rows)
        eager.lookup(rows, fetch)
    assert 10_000 * -np.log(DECAY) > 2 * np.log(1e20)  # (the lazy units were reset twice)
    np.testing.assert_array_equal(np.sort(lazy.row_of), np.sort(eager.row_of))
    assert (lazy.hits, lazy.misses) == (eager.hits, eager.misses)


def test_out_of_range_ids_raise_index_error_like_nn_embedding(example):
    emb = bnncompress.load(example[0]).embedding()
    for bad in ([4000], [0, -1]):
        with pytest.raises(IndexError, match="out of range"):
            emb(torch.tensor(bad))
    with pytest.raises(TypeError, match="integer"):
        emb(torch.tensor([1.0]))


def test_works_in_sequential_under_no_grad_without_parameters(example):
    path, full = example
    emb = bnncompress.load(path).embedding()
    linear = torch.nn.Linear(50, 2)
    model = torch.nn.Sequential(emb, linear)
    ids = torch.tensor([[1, 2], [3, 4]])
    with torch.no_grad():
        out = model(ids)
    assert torch.equal(out, linear(torch.from_numpy(full[ids.numpy()])).detach())
    assert list(emb.parameters()) == [] and emb.state_dict() == {}
    assert "4,000 x 50" in repr(emb) and "bits/weight" in repr(emb) and "cache" in repr(emb)


def test_to_device_moves_outputs(example):
    emb = bnncompress.load(example[0]).embedding()
    assert emb.to(torch.device("cpu"))(torch.tensor([1])).device == torch.device("cpu")
    out = emb.to("meta")(torch.tensor([1, 2]))  # any device the buffer moves to, without a GPU
    assert out.device.type == "meta" and out.shape == (2, 50)


def test_pickles_by_path_and_refuses_a_changed_file(tmp_path):
    a = _small(tmp_path / "w.bnc")
    emb = a.embedding()
    data = pickle.dumps(emb)
    assert len(data) < 2_000  # the path and a checksum, no rows
    ids = torch.tensor([[0, 299], [5, 5]])
    assert np.array_equal(pickle.loads(data)(ids).numpy(), a["w"][ids.numpy()])
    shutil.move(tmp_path / "w.bnc", tmp_path / "kept.bnc")
    _small(tmp_path / "w.bnc", seed=1)
    with pytest.raises(bnncompress.ArchiveError, match="changed since"):
        pickle.loads(data)


class _Rows(torch.utils.data.Dataset):
    def __init__(self, emb):
        self.emb = emb

    def __len__(self):
        return 6

    def __getitem__(self, i):
        return self.emb(torch.tensor([i, 3 * i]))


@pytest.mark.slow  # DataLoader worker processes
def test_serves_in_dataloader_worker_processes(example):
    path, full = example
    emb = bnncompress.load(path).embedding()
    loader = torch.utils.data.DataLoader(_Rows(emb), batch_size=3, num_workers=1, multiprocessing_context="spawn")
    out = torch.cat(list(loader)).numpy()
    expected = np.stack([full[[i, 3 * i]] for i in range(6)])
    assert np.array_equal(out, expected)


def test_other_dtypes_and_elementwise_supports_equal_archive_rows(tmp_path):
    ids = np.array([[4, 0], [299, 4]])
    for dtype in ("float16", "float64"):
        a = _small(tmp_path / f"{dtype}.bnc", dtype=dtype)
        out = a.embedding()(torch.from_numpy(ids)).numpy()
        assert out.dtype == np.dtype(dtype) and np.array_equal(out, a["w"][ids])
    a = _small(tmp_path / "positive.bnc", support={"constraint": "positive"})
    assert np.array_equal(a.embedding()(torch.from_numpy(ids)).numpy(), a["w"][ids]) and a["w"].min() > 0
    a = _small(tmp_path / "simplex.bnc", support={"constraint": "simplex"})
    with pytest.raises(bnncompress.OptionError, match="simplex"):
        a.embedding()


def test_float64_rows_under_sigmoid_and_softplus_supports_equal_the_whole_tensors_bits(tmp_path):
    # torch's float64 sigmoid and softplus gave a value's last bit by how many were transformed at once
    supports = ({"constraint": "unit_interval"}, {"constraint": "interval", "lower_bound": -1.0, "upper_bound": 2.0})
    for i, support in enumerate((*supports, {"constraint": "softplus_positive"}, {"constraint": "positive"})):
        a = _small(tmp_path / f"{i}.bnc", dtype="float64", support=support, shape=(400, 50))
        whole = bnncompress.load(tmp_path / f"{i}.bnc")["w"]
        one_by_one = np.stack([a.rows("w", r) for r in range(400)])
        served = a.embedding()(torch.arange(400)[:, None]).numpy()[:, 0]
        assert whole.dtype == np.float64 and np.array_equal(one_by_one, whole) and np.array_equal(served, whole)


def test_index_vectors_and_vector_share_the_embedding_cache(example):
    path, full = example
    a = bnncompress.load(path)
    vocab = a.vocab
    assert a.index(vocab[1234]) == 1234 and a.__dict__["_word_index"] is a.__dict__["_word_index"]
    with pytest.raises(bnncompress.NotFoundError):
        a.index("no-such-word")
    got = a.vectors([vocab[7], 3999, vocab[0]])
    assert got.shape == (3, 50) and np.array_equal(got, full[[7, 3999, 0]])
    assert np.array_equal(a.vectors(np.array([2, 2])), full[[2, 2]])
    assert np.array_equal(a.vector(vocab[42]), full[42])
    cache = a.embedding().rows.cache
    assert cache.slot_of[[7, 3999, 0, 42]].min() >= 0  # what vector(s) decoded, the embedding serves
    context = bnncompress.load(path)["context_vectors"]
    assert np.array_equal(a.vectors([vocab[5]], name="context_vectors")[0], context[5])
    with pytest.raises(TypeError):
        a.vectors(vocab[1])


QUERIES = [
    {"positive": ["the"]},
    {"positive": ["king", "woman"], "negative": ["man"]},
    {"positive": [("city", 2.0), "river"], "negative": [("war", -0.5)], "topn": 3},
    {"positive": ["first"], "negative": ["second"], "restrict_vocab": 500, "topn": 20},
    {"positive": "year", "topn": 1},
]


def test_iterators_and_zero_weights_query_as_lists_do(example):
    """An iterator was read twice (a map of two words queried minus the first; one in «negative» was
    ignored), and weights all 0 divided by 0 (NaN scores; gensim leaves the sum: 0.0)."""
    path, _ = example
    a = bnncompress.load(path)
    kv = a.to_keyed_vectors()
    expected = a.most_similar(positive=["king", "woman"], negative=["man"], topn=3)
    assert a.most_similar(positive=map(str.lower, ["King", "Woman"]), negative=iter(["man"]), topn=3) == expected
    assert a.most_similar(positive=(w for w in ["king", "woman"]), negative=["man"], topn=3) == expected
    ours, theirs = a.most_similar(positive=[("king", 0.0)], topn=3), kv.most_similar(positive=[("king", 0.0)], topn=3)
    assert ours == [(w, 0.0) for w, _ in theirs] and [s for _, s in theirs] == [0.0] * 3


def test_similarity_queries_equal_gensim(example, monkeypatch):
    path, _ = example
    a = bnncompress.load(path)
    kv = a.to_keyed_vectors()
    a = bnncompress.load(path)
    monkeypatch.setattr(RowReader, "all", lambda self: pytest.fail("a query decoded the whole tensor"))
    for query in QUERIES:
        ours, theirs = a.most_similar(**query), kv.most_similar(**query)
        assert [w for w, _ in ours] == [w for w, _ in theirs], query
        np.testing.assert_allclose([s for _, s in ours], [s for _, s in theirs], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(a.most_similar("the", topn=None), kv.most_similar("the", topn=None), atol=1e-6)
    for w1, w2 in [("king", "queen"), ("the", "of"), ("city", "city")]:
        assert a.similarity(w1, w2) == pytest.approx(float(kv.similarity(w1, w2)), abs=1e-6)
    for words in (["king", "queen", "prince", "the"], a.vocab[100:106], ["one", "two", "three", "river"]):
        assert a.doesnt_match(words) == kv.doesnt_match(words)
    assert a._cache == {}  # no decoded copy of the tensor was kept


def test_memory_accounting_sums_record_cache_and_norms(example):
    path, full = example
    a = bnncompress.load(path)
    emb = a.embedding()
    served = emb.rows

    def held():
        return record_bytes(a.record("word_vectors")) + served.reader.nbytes + served.cache.nbytes

    assert emb.memory_bytes() == held()
    a.most_similar("the")
    assert emb.memory_bytes() == held() + 4 * 4000  # the row norms, float32
    assert emb.memory_bytes() < full.nbytes / 2


def test_rows_and_the_embedding_share_one_reader(example):
    """One RowReader per tensor: the checkpoints ``rows()`` built are the ones the embedding decodes from."""
    a = bnncompress.load(example[0])
    a.rows("word_vectors", np.arange(4000)[::-7])
    reader = a.reader("word_vectors")
    emb = a.embedding()
    assert emb.rows.reader is reader and a.served_rows().reader is reader
    assert np.array_equal(emb(torch.tensor([5, 3999])).numpy(), example[1][[5, 3999]])


@pytest.mark.slow  # (a child process)
def test_packing_and_serving_from_threads_survive_numbas_workqueue_layer(tmp_path):
    # numba's workqueue layer (its fallback without TBB or OpenMP, e.g. a pip install on macOS) aborts the
    # process when two threads run parallel kernels at once: a pack's worker threads, two serving threads
    import subprocess
    import sys

    script = f"""
import threading, warnings, numpy as np, torch, bnncompress
warnings.simplefilter("ignore")
for method in ("vbq-transform", "vbq", "vbq-direction"):
    bnncompress.pack("data/example.pt", {str(tmp_path / "w.bnc")!r}, bits=2, method=method)
a = bnncompress.load({str(tmp_path / "w.bnc")!r})
expected = {{n: a[n] for n in a.names}}
wrong = []
def serve(name, seed):
    embedding, rng = a.embedding(name, cache_rows=10), np.random.default_rng(seed)
    for _ in range(30):
        ids = rng.integers(0, 4000, 512)
        if not np.array_equal(embedding(torch.from_numpy(ids)).numpy(), expected[name][ids]):
            wrong.append(name)
threads = [threading.Thread(target=serve, args=(n, i)) for i, n in enumerate(a.names * 2)]
[t.start() for t in threads]
[t.join() for t in threads]
assert not wrong, wrong
# rows of fresh readers once the row kernels are loaded (a whole decode of 300,000 symbols): block prefixes
rng = np.random.default_rng(0)
loc = rng.normal(size=(6000, 50)).astype(np.float32)
bnncompress.pack({{"w": (loc, np.full_like(loc, 0.1))}}, {str(tmp_path / "big.bnc")!r}, bits=2, method="uniform")
whole = bnncompress.load({str(tmp_path / "big.bnc")!r})["w"]
def prefixes(seed):
    rng = np.random.default_rng(seed)
    for _ in range(20):
        b, ids = bnncompress.load({str(tmp_path / "big.bnc")!r}), rng.integers(0, 6000, 3)
        if not np.array_equal(b.rows("w", ids), whole[ids]):
            wrong.append("w")
threads = [threading.Thread(target=prefixes, args=(i,)) for i in range(4)]
[t.start() for t in threads]
[t.join() for t in threads]
assert not wrong, wrong
import numba
print("layer", numba.threading_layer())
"""
    env = {**__import__("os").environ, "NUMBA_THREADING_LAYER": "workqueue"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0 and "layer workqueue" in done.stdout, done.stderr[-2000:]


def test_similarity_with_a_row_quantized_to_zeros_is_gensims_zero(tmp_path):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (rows collapsed to a constant vector: the point here)
        bnncompress.pack("data/example.pt", tmp_path / "z.bnc", method="uniform", bits=0.5)
    a = bnncompress.load(tmp_path / "z.bnc")
    zero = a.vocab[int(np.flatnonzero(np.linalg.norm(a["word_vectors"], axis=1) == 0)[0])]
    assert a.similarity(zero, "king") == a.to_keyed_vectors().similarity(zero, "king") == 0.0


def test_the_3cosadd_query_vector_is_gensims_to_the_last_bit(example):
    # the query vector is gensim's exactly (it differed in the last bit before); scores then differ only
    # where a block's BLAS rounds a dot product differently from the whole matrix's
    from bnncompress.similarity import _gensim_mean

    path, _ = example
    a = bnncompress.load(path)
    kv = a.to_keyed_vectors()
    queries = a._queries()
    for keys, weights in ((["king", "woman", "man"], [1.0, 1.0, -1.0]), (["city", "river", "war"], [2.0, 1.0, 0.5])):
        units = iter(queries._unit([queries._row(k) for k in keys]))
        ours = _gensim_mean(keys, np.array(weights), units, 50)
        theirs = kv.get_mean_vector(keys, np.array(weights), pre_normalize=True, post_normalize=True)
        assert ours.dtype == theirs.dtype == np.float32 and np.array_equal(ours, theirs), keys


def test_odd_row_ids_get_the_right_rows_or_an_error_that_says_what_was_wrong(example):
    from bnncompress.errors import ArgumentTypeError, OutOfRangeError

    path, full = example
    a = bnncompress.load(path)
    np.testing.assert_array_equal(a.rows("word_vectors", np.array([1, 2], dtype=object)), full[[1, 2]])  # was refused
    with pytest.raises(OutOfRangeError):
        a.rows("word_vectors", np.array([1, 2**70], dtype=object))
    with pytest.raises(OutOfRangeError, match="9223372036854775808"):  # not the wrapped -9223372036854775808
        a.vectors(np.array([2**63], dtype=np.uint64))
    for one in (5, np.int64(5), torch.tensor(7)):
        with pytest.raises(ArgumentTypeError, match="list of words or row ids"):  # was a bare TypeError
            a.vectors(one)


@pytest.mark.parametrize(
    "variable, value, said",
    [
        ("NUMBA_NUM_THREADS", "0", "numba cannot start with NUMBA_NUM_THREADS=0"),
        ("NUMBA_THREADING_LAYER", "tbb", "not installed"),
    ],
)
def test_an_environment_numba_cannot_run_in_is_no_corrupt_archive(tmp_path, variable, value, said):
    """numba's import fails on NUMBA_NUM_THREADS=0 (a bare ValueError), and its thread pool on a threading layer
    that is not installed: a decode said the intact archive was corrupt (rows) or raised numba's ValueError
    (a whole tensor). Both now say what to change, as an OptionError; a row the plain-Python path decodes works."""
    if value == "tbb" and _numba_layer_loads("tbbpool"):
        pytest.skip("Intel TBB is installed: numba's tbb layer starts")
    rng = np.random.default_rng(0)
    loc = (rng.normal(size=(30000, 64)) @ rng.normal(size=(64, 64)) * 0.3).astype(np.float32)
    bnncompress.pack({"emb": (loc, np.full_like(loc, 0.1))}, tmp_path / "e.bnc", lam=0.1)
    script = f"""
import numpy as np, bnncompress
a = bnncompress.load({str(tmp_path / "e.bnc")!r})
print("one row", a.rows("emb", [5]).shape)
for call in (lambda: a.rows("emb", np.arange(0, 30000, 2)), lambda: a["emb"]):
    try:
        call()
    except Exception as exc:
        print(type(exc).__name__, exc)
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_")} | {variable: value}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    lines = done.stdout.splitlines()
    assert done.returncode == 0 and lines[0] == "one row (1, 64)", done.stderr[-2000:]
    assert len(lines) == 3 and all(line.startswith("OptionError") and said in line for line in lines[1:]), lines


def _numba_layer_loads(module: str) -> bool:
    from bnncompress.numbaenv import _loads

    return _loads(module)


def test_single_threaded_kernels_run_where_numbas_thread_pool_cannot_start(tmp_path):
    """A threading layer that is not installed stops only what needs numba's thread pool: reading a .pt through
    the pickle walk's kernel (single-threaded) works, as before numba's import was checked."""
    if _numba_layer_loads("tbbpool"):
        pytest.skip("Intel TBB is installed: numba's tbb layer starts")
    torch.save({"w.loc": torch.zeros(3, 2), "w.scale": torch.ones(3, 2)}, tmp_path / "p.pt")
    script = f"""
import sys
from bnncompress.sources import picklescan
picklescan._KERNEL_BYTES = 0  # (the numba walk for any pickle)
import bnncompress
names = list(bnncompress.read_posterior({str(tmp_path / "p.pt")!r}).tensors)
print(names, "bnncompress.sources._pickle_kernels" in sys.modules)
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_")} | {"NUMBA_THREADING_LAYER": "tbb"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0 and done.stdout.split() == ["['w']", "True"], done.stdout + done.stderr[-2000:]

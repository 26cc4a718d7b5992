"""Issue 22 (round 3), training inputs, the Dask scheduler address and numba's environment: no
traceback, hang, or posterior that ``pack`` refuses, but one line naming what to change."""

from __future__ import annotations

import os
import re
import resource
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import bnncompress
import bnncompress.clusters
from bnncompress.errors import OptionError
from bnncompress.models import SkipGramConfig, inputs, read_corpus, skipgram, train_skipgram
from bnncompress.models import trainer as trainer_module
from bnncompress.models.skipgram import build_vocab, make_pairs
from bnncompress.models.trainer import Trainer, fit
from bnncompress.numbaenv import check_numba_environment

from .conftest import LEE

SMALL = {"dim": 4, "vocab_size": 100, "min_count": 2, "window": 2, "epochs": 1, "batch_size": 64, "device": "cpu"}


@pytest.fixture(scope="module")
def sentences():
    return read_corpus(LEE)[:30]


def _cli(args, tmp_path, env=None, timeout=60, limit_bytes=None):
    """``python -m bnncompress.cli ARGS`` in a subprocess (optionally under ``ulimit -v``)."""

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (limit_bytes, limit_bytes))

    return subprocess.run(
        [sys.executable, "-m", "bnncompress.cli", *map(str, args)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        preexec_fn=limit if limit_bytes else None,
    )


def _one_line_error(p) -> str:
    lines = [line for line in p.stderr.strip().splitlines() if not line.startswith("warning: ")]
    assert p.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), (p.returncode, p.stderr[-2000:])
    return lines[0]


# ----------------------------------------------------------------------------- training options


@pytest.mark.parametrize("lr", [float("inf"), float("nan"), 1e30, 0.0, -0.1, 5.0])
def test_unusable_learning_rates_are_refused_before_training(sentences, lr):
    with pytest.raises(OptionError, match="lr must be a number above 0 and at most 1"):
        train_skipgram(sentences, SkipGramConfig(**SMALL, lr=lr))


def test_the_largest_learning_rate_still_trains_a_finite_posterior(sentences):
    result = train_skipgram(sentences, SkipGramConfig(**SMALL, lr=inputs.LR_MAX))
    assert all(np.isfinite(a).all() for pair in result.params.values() for a in pair)


def test_a_diverging_fit_stops_with_one_line_naming_lr(sentences):
    cfg = SkipGramConfig(**SMALL, lr=1e30)  # fit takes the config as it is (train_skipgram would refuse it)
    vocab, counts = build_vocab(sentences, cfg.vocab_size, cfg.min_count)
    rng = np.random.default_rng(0)
    centers, contexts = make_pairs(sentences, vocab, counts, cfg.window, cfg.subsample, rng)
    assert len(centers) > 3 * cfg.batch_size  # several steps: the tables turn non-finite after the first
    trainer = Trainer(len(vocab), cfg, rng, np.asarray(counts, dtype=np.float64))
    with pytest.raises(OptionError, match="training diverged to non-finite values; lower lr"):
        fit(trainer, centers, contexts, cfg, rng, None)


def test_a_posterior_that_diverged_in_the_last_step_is_not_returned(sentences, monkeypatch):
    def one_wild_step(trainer, centers, contexts, cfg, rng, progress):
        loss = trainer.step(centers[:64], contexts[:64], len(centers), 1e30)
        assert np.isfinite(loss)  # the loss is of the values before the step: only the end check sees it
        return [loss], 1.0

    monkeypatch.setattr(trainer_module, "fit", one_wild_step)
    with pytest.raises(OptionError, match="diverged"):
        train_skipgram(sentences, SkipGramConfig(**SMALL))


@pytest.mark.parametrize(
    "field, value, kind",
    [
        ("seed", -1, OptionError),
        ("seed", True, TypeError),
        ("dim", 2.5, TypeError),
        ("dim", "8", TypeError),
        ("dim", 0, OptionError),
        ("negatives", -1, OptionError),
        ("negatives", 0, OptionError),  # (no noise words: every pair a match, all vectors turned one way, unsaid)
        ("window", 0, OptionError),
        ("batch_size", 0, OptionError),
        ("epochs", 1.0, TypeError),
        ("subsample", float("nan"), OptionError),
        ("init_scale", 1e9, OptionError),
        ("lr_decay", "yes", TypeError),
        ("device", None, TypeError),
    ],
)
def test_options_of_the_wrong_type_or_range_name_the_field(sentences, field, value, kind):
    with pytest.raises(kind, match=field) as info:
        train_skipgram(sentences, SkipGramConfig(**{**SMALL, field: value}))
    assert isinstance(info.value, OptionError)  # one class for the CLI to print as one line


def test_a_big_seed_trains_and_numpy_integers_are_whole_numbers(sentences):
    cfg = SkipGramConfig(**{**SMALL, "dim": np.int64(4)}, seed=2**70)
    assert train_skipgram(sentences, cfg).params["word_vectors"][0].shape[1] == 4


def test_cli_negative_seed_is_one_line(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(LEE.read_text().splitlines()[:20]))
    p = _cli(["train", corpus, "-o", tmp_path / "t.pt", "--seed", "-1", "--epochs", "1"], tmp_path)
    assert "--seed must be at least 0" in _one_line_error(p)
    assert not (tmp_path / "t.pt").exists()


def test_sentences_must_be_lists_of_words_and_may_be_a_generator(sentences):
    for bad in ("the cat sat", [" ".join(s) for s in sentences], [[1, 2, 3]], None):
        with pytest.raises(TypeError, match="sentences"):
            train_skipgram(bad, SkipGramConfig(**SMALL))
    from_list = train_skipgram(sentences, SkipGramConfig(**SMALL))
    from_generator = train_skipgram((s for s in sentences), SkipGramConfig(**SMALL))
    assert from_generator.vocab == from_list.vocab
    np.testing.assert_array_equal(from_generator.params["word_vectors"][0], from_list.params["word_vectors"][0])


# ----------------------------------------------------------------------------- pretrained vectors


@pytest.mark.parametrize("value", [float("nan"), float("inf"), 1e38, -2e4])
def test_init_vectors_holding_nonfinite_or_huge_values_are_refused(sentences, value):
    vocab, _ = build_vocab(sentences, 100, 2)
    init = {w: np.full(4, 0.1) for w in vocab}
    init[vocab[3]] = np.array([0.1, value, 0.1, 0.1])
    with pytest.raises(OptionError, match=f"1 value of init_vectors is NaN, infinite or beyond.*{vocab[3]!r}"):
        train_skipgram(sentences, SkipGramConfig(**SMALL, init_vectors=init))
    init[vocab[3]] = np.full(4, 0.1)  # the same vectors, all moderate, train
    assert train_skipgram(sentences, SkipGramConfig(**SMALL, init_vectors=init)).vocab


@pytest.mark.parametrize(
    "init, message",
    [
        ({}, "init_vectors hold no words"),
        ({"the": [], "of": []}, "init_vectors have no dimensions"),
        ([0.1, 0.2], "init_vectors must be a dict word -> vector or gensim KeyedVectors"),
        ({"the": [0.1] * 4, "of": [0.1] * 2}, r"the vector of 'of' in init_vectors has shape \(2,\), not \(4,\)"),
        ({"the": ["a"] * 4, "of": ["b"] * 4}, "the vector of '.*' in init_vectors is not numbers"),
    ],
)
def test_init_vectors_without_words_or_dimensions_are_refused(sentences, init, message):
    with pytest.raises(OptionError, match=message):
        train_skipgram(sentences, SkipGramConfig(**SMALL, init_vectors=init))


def test_empty_keyed_vectors_are_refused(sentences):
    from gensim.models import KeyedVectors

    with pytest.raises(OptionError, match="init_vectors hold no words"):
        train_skipgram(sentences, SkipGramConfig(**SMALL, init_vectors=KeyedVectors(vector_size=4)))


def test_cli_init_with_a_huge_value_is_one_line_naming_init(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(LEE.read_text().splitlines()[:20]))
    vectors = tmp_path / "v.txt"
    vectors.write_text("2 4\nthe 1e38 0.2 0 0\nof 0.3 0.4 0 0\n")
    p = _cli(["train", corpus, "--init", vectors, "-o", tmp_path / "t.pt", "--epochs", "1"], tmp_path)
    assert "1 value of --init is NaN, infinite or beyond" in _one_line_error(p)
    assert not (tmp_path / "t.pt").exists()
    # the other options are checked before the vectors file is read (gigabytes of GoogleNews took minutes)
    unreadable = tmp_path / "u.txt"
    unreadable.write_text("2 4\nthe 0.1 0.2\n")  # (a short row: reading it fails)
    p = _cli(["train", corpus, "--init", unreadable, "-o", tmp_path / "t.pt", "--lr", "5"], tmp_path)
    assert "--lr must be a number above 0" in _one_line_error(p)
    p = _cli(["train", tmp_path / "missing.txt", "--init", unreadable, "-o", tmp_path / "t.pt"], tmp_path)
    assert "corpus file" in _one_line_error(p) and "does not exist" in _one_line_error(p)
    p = _cli(["train", corpus, "--init", vectors, "-o", tmp_path / "t.pt", "--dim", "7"], tmp_path)
    assert "--dim 7 differs from the 4 dimensions of" in _one_line_error(p)  # (checked once they are read)


# ----------------------------------------------------------------------------- memory


@pytest.mark.parametrize("flag, named", [("--dim", "--dim or --vocab-size"), ("--negatives", "--negatives")])
def test_tables_or_steps_beyond_memory_are_refused_naming_the_option(tmp_path, flag, named):
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(LEE.read_text().splitlines()[:20]))
    value = "1000000000" if flag == "--dim" else "10000000"
    args = ["train", corpus, "-o", tmp_path / "t.pt", flag, value, "--epochs", "1"]
    p = _cli(args, tmp_path, limit_bytes=8 << 30)  # under ulimit -v: without the check, a MemoryError
    line = _one_line_error(p)
    assert "more than the 8.0 GiB this process may use" in line and f"lower {named}" in line


def test_the_pair_count_is_exact_and_checked_before_the_pairs_are_built(sentences, monkeypatch):
    vocab, counts = build_vocab(sentences, 100, 2)
    seen = []
    monkeypatch.setattr(skipgram, "check_pairs_memory", lambda n, window: seen.append(n))
    for window in (1, 3, 10**30):
        centers, _ = make_pairs(sentences, vocab, counts, window, 1e-3, np.random.default_rng(0))
        assert seen[-1] == len(centers)
    monkeypatch.undo()
    monkeypatch.setattr(inputs, "memory_limit", lambda: 1000)
    with pytest.raises(OptionError, match="word pairs with window 3.*lower window"):
        make_pairs(sentences, vocab, counts, 3, 1e-3, np.random.default_rng(0))


# ----------------------------------------------------------------------------- devices


def test_cuda_without_a_gpu_is_refused_before_the_corpus_is_read(sentences, monkeypatch):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")

    def no_reading(*args, **kwargs):
        raise AssertionError("the corpus was processed before the device was checked")

    monkeypatch.setattr(trainer_module, "build_vocab", no_reading)
    with pytest.raises(OptionError, match="torch sees no CUDA GPU; use device cpu"):
        train_skipgram(sentences, SkipGramConfig(**{**SMALL, "device": "cuda"}))


# ----------------------------------------------------------------------------- the Dask scheduler


def _serve(handler) -> int:
    """A server on loopback only, answering each connection with ``handler``; returns its port."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)

    def loop():
        while True:
            conn, _ = sock.accept()
            threading.Thread(target=handler, args=(conn,), daemon=True).start()

    threading.Thread(target=loop, daemon=True).start()
    return sock.getsockname()[1]


def _http(conn):
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi")
    time.sleep(20)
    conn.close()


def _silent(conn):
    time.sleep(60)


@pytest.fixture
def npz(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "s.npz"
    np.savez(path, **{"w.loc": rng.normal(size=(40, 8)), "w.scale": np.full((40, 8), 0.1)})
    return path


def test_a_scheduler_address_at_an_http_server_is_one_line(tmp_path, npz):
    pytest.importorskip("distributed")
    address = f"tcp://127.0.0.1:{_serve(_http)}"
    start = time.perf_counter()
    with pytest.raises(OptionError, match=r"is not a Dask scheduler \(it answered b'HTTP/1.1'\); check scheduler"):
        bnncompress.pack(npz, tmp_path / "x.bnc", scheduler=address, method="uniform", bits=4)
    assert time.perf_counter() - start < 5 and not (tmp_path / "x.bnc").exists()


def test_a_scheduler_address_at_a_silent_server_is_refused_in_seconds(tmp_path, npz, monkeypatch):
    pytest.importorskip("distributed")
    monkeypatch.setattr(bnncompress.clusters, "CONNECT_SECONDS", 1)
    address = f"tcp://127.0.0.1:{_serve(_silent)}"
    outcome = []

    def pack():
        try:
            bnncompress.pack(npz, tmp_path / "x.bnc", scheduler=address, method="uniform", bits=4)
        except OptionError as exc:
            outcome.append(str(exc))

    worker = threading.Thread(target=pack, daemon=True)
    worker.start()
    worker.join(timeout=20)  # distributed alone waits for the scheduler's greeting forever
    assert outcome and "sent no Dask greeting within 1 s; check that scheduler is a scheduler" in outcome[0]
    assert not (tmp_path / "x.bnc").exists()


def test_a_host_that_never_answers_is_not_called_a_silent_peer(monkeypatch):
    def unanswered(*args, **kwargs):  # (a connect to a host that drops the packets times out)
        raise TimeoutError("timed out")

    monkeypatch.setattr(bnncompress.clusters.socket, "create_connection", unanswered)
    with pytest.raises(
        OptionError, match=r"cannot connect to the Dask scheduler at tcp://10.255.255.1:8786 \(no answer"
    ):
        bnncompress.clusters.probe_scheduler("tcp://10.255.255.1:8786", 1)


def test_a_closed_port_is_refused_at_once(tmp_path, npz):
    pytest.importorskip("distributed")
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.perf_counter()
    with pytest.raises(OptionError, match="cannot connect to the Dask scheduler at .*Connection refused"):
        bnncompress.pack(npz, tmp_path / "x.bnc", scheduler=f"127.0.0.1:{port}", method="uniform", bits=4)
    assert time.perf_counter() - start < 3


@pytest.mark.parametrize("address", ["inproc://x", "ucx://127.0.0.1:1", "tls://127.0.0.1:1", "http://127.0.0.1:1"])
def test_scheduler_schemes_we_cannot_use_are_refused(tmp_path, npz, address):
    pytest.importorskip("distributed")
    with pytest.raises(OptionError, match="which bnncompress cannot connect to; give tcp://HOST:PORT"):
        bnncompress.pack(npz, tmp_path / "x.bnc", scheduler=address, method="uniform", bits=4)


def test_a_real_scheduler_address_packs_like_threads(tmp_path, npz):
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(
        n_workers=1, threads_per_worker=1, processes=False, protocol="tcp", dashboard_address=":0"
    ) as cluster:
        assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
        bnncompress.pack(npz, tmp_path / "dask.bnc", scheduler=cluster.scheduler_address, method="uniform", bits=4)
    bnncompress.pack(npz, tmp_path / "local.bnc", method="uniform", bits=4)
    assert (tmp_path / "dask.bnc").read_bytes() == (tmp_path / "local.bnc").read_bytes()


# ----------------------------------------------------------------------------- numba's environment


def _tbb_loads() -> bool:
    try:
        from numba.np.ufunc import tbbpool  # noqa: F401
    except ImportError:
        return False
    return True


NUMBA_CASES = [
    ("NUMBA_NUM_THREADS", "0", "NUMBA_NUM_THREADS=0 is not a number of threads"),
    ("NUMBA_NUM_THREADS", "many", "NUMBA_NUM_THREADS=many is not a number of threads"),
    ("NUMBA_DISABLE_JIT", "1", "unset NUMBA_DISABLE_JIT"),
    ("NUMBA_THREADING_LAYER", "bogus", "NUMBA_THREADING_LAYER=bogus is not a numba threading layer"),
    ("NUMBA_THREADING_LAYER", "tbb", "NUMBA_THREADING_LAYER=tbb needs a threading library that is not installed"),
]


@pytest.mark.parametrize("var, value, message", NUMBA_CASES)
def test_a_bad_numba_variable_is_one_line_at_cli_start(tmp_path, npz, var, value, message):
    if value == "tbb" and _tbb_loads():
        pytest.skip("Intel TBB is installed here")
    p = _cli(["pack", npz, "-o", tmp_path / "n.bnc", "--bits", "2"], tmp_path, env={var: value}, timeout=120)
    assert message in _one_line_error(p)
    assert not (tmp_path / "n.bnc").exists()
    with pytest.raises(OptionError, match=message):  # the API's check (pack and train call it)
        check_numba_environment({var: value})


def test_numba_variables_that_work_are_left_alone(tmp_path, npz):
    p = _cli(
        ["pack", npz, "-o", tmp_path / "n.bnc", "--bits", "2", "-q"],
        tmp_path,
        env={"NUMBA_THREADING_LAYER": "workqueue", "NUMBA_NUM_THREADS": "2"},
    )
    assert p.returncode == 0, p.stderr[-2000:]
    assert bnncompress.load(tmp_path / "n.bnc")["w"].shape == (40, 8)
    check_numba_environment({"NUMBA_DISABLE_JIT": "1"}, pack=False)  # training runs uncompiled, slowly


# ----------------------------------------------------------------------------- messages that name the cause


def test_init_vectors_whose_words_match_none_of_the_corpus_say_so(tmp_path, sentences):
    # The fourth hunt: vectors whose words differ only in case said "no word occurs min_count times".
    init = {w.upper(): np.full(4, 0.1) for w in build_vocab(sentences, 100, 2)[0]}
    with pytest.raises(OptionError, match="is a word of init_vectors .*case included"):
        train_skipgram(sentences, SkipGramConfig(**SMALL, init_vectors=init))
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(" ".join(s) for s in sentences))
    vectors = tmp_path / "v.txt"
    vectors.write_text("2 4\nTHE 0.1 0.2 0 0\nOF 0.3 0.4 0 0\n")
    p = _cli(["train", corpus, "--init", vectors, "-o", tmp_path / "t.pt", "--epochs", "1"], tmp_path)
    assert "is a word of --init" in _one_line_error(p)


def test_a_corpus_that_subsampling_empties_names_subsample(sentences):
    # The fourth hunt: it blamed the window ("use a longer corpus or a larger window").
    tiny = [["a", "b", "a", "b", "a", "b"]]
    vocab, counts = build_vocab(tiny, 10, 1)
    with pytest.raises(OptionError, match="subsampling frequent words .*kept 0 of its 6 words; lower subsample"):
        make_pairs(tiny, vocab, counts, 2, 1e-6, np.random.default_rng(0))
    assert len(make_pairs(tiny, vocab, counts, 2, 0.0, np.random.default_rng(0))[0]) > 0


# The training hunt's second pass (stop 37).


def test_a_corpus_of_one_word_lines_is_said_to_hold_no_pairs(tmp_path):
    """It said "lower subsample" (and with subsample 0 "a larger window"): no line holds two words."""
    lines = [["hello"], ["hello"], ["hello"], ["world"], ["world"], ["world"]]
    vocab, counts = build_vocab(lines, 10, 1)
    for subsample in (1e-6, 0.0):
        with pytest.raises(OptionError, match="no line holds two words of the vocabulary"):
            make_pairs(lines, vocab, counts, 2, subsample, np.random.default_rng(0))


def test_a_compressed_corpus_is_said_to_be_compressed(tmp_path):
    import gzip

    (tmp_path / "c.txt.gz").write_bytes(gzip.compress(b"the cat sat on the mat\n" * 50))
    with pytest.raises(OptionError, match="is gzip-compressed; decompress it first"):  # (said: iconv -f latin1)
        read_corpus(tmp_path / "c.txt.gz")


@pytest.mark.parametrize(
    ("data", "said"),
    [
        ("the cat sat on the mat\n".encode("utf-16-le") * 20, "holds NUL bytes (line 1): UTF-16 or UTF-32 text"),
        ("the cat sat on the mat\n".encode("utf-16-be") * 20, "holds NUL bytes (line 1)"),
        ("the cat sat on the mat\n".encode("utf-16") * 20, "is UTF-16 text; convert it, e.g. iconv -f utf-16"),
        ("the cat sat on the mat\n".encode("utf-32") * 20, "is UTF-32 text; convert it, e.g. iconv -f utf-32"),
        (b"\x04\x22\x4d\x18" + bytes(range(256)), "is lz4-compressed; decompress it first"),
        (b"\x89HDF\r\n\x1a\n" + bytes(200), "is an HDF5 file (as .bnc archives and .h5 files are), not text"),
        (b"\x93NUMPY\x01\x00v\x00{'descr': '<f4'}" + bytes(100), "is a .npy array, not text"),
        (b"PK\x03\x04" + bytes(range(256)), "is a zip file (as .pt and .npz files are), not text"),
        (b"", "is empty; pass a UTF-8 text file"),
        ("中文字符 测试\n".encode("utf-16-le") * 20, "holds NUL bytes (line 1): UTF-16"),  # (few NULs: CJK)
        (b"BZh9\x17rE8P\x90\x00\x00\x00\x00", "is bzip2-compressed"),  # (bz2.compress(b""): no block, the end)
        (b"12 407 3 \n" * 500 + b"-- 42, 7!\n", "holds no words: a word is a run of letters (digits and punctuation"),
    ],
    ids=["utf16le", "utf16be", "utf16-bom", "utf32-bom", "lz4", "hdf5", "npy", "zip", "empty", "cjk16", "bz2-empty"]
    + ["token-ids"],
)
def test_a_corpus_that_is_not_text_of_words_is_said_to_be_what_it_is(tmp_path, data, said):
    """UTF-16 without a byte-order mark is valid UTF-8 (a letter between NULs): it trained on single letters; the
    others were told to convert from latin1 (binary files) or to use a larger corpus (token ids, an empty file)."""
    (tmp_path / "c.txt").write_bytes(data)
    with pytest.raises(OptionError, match=re.escape(said)):
        read_corpus(tmp_path / "c.txt")


@pytest.mark.parametrize(
    "data",
    [
        b"hello\x00world foo bar\n" + b"the cat sat on the mat\n" * 20,  # a stray NUL splits a word, as before
        b"the cat sat on the mat\n" * 20 + b"\x00" * 4096,  # NUL padding at the end
        b"PK ratings are high\n" + b"the cat sat on the mat\n" * 20,  # text that starts as a zip file's magic does
        b"BZh9 is a tag\n" + b"the cat sat on the mat\n" * 20,
    ],
    ids=["stray-nul", "nul-padding", "pk-text", "bzh-text"],
)
def test_text_with_stray_nuls_or_starting_like_a_magic_number_still_trains(tmp_path, data):
    (tmp_path / "c.txt").write_bytes(data)
    assert ["the", "cat", "sat", "on", "the", "mat"] in read_corpus(tmp_path / "c.txt")


@pytest.mark.parametrize("word", ["", " padded", "tab\tword", "nul\x00"])
def test_sentences_with_words_no_archive_can_keep_are_refused_before_training(word):
    """They trained (for as long as it takes) into a posterior file that pack then refused for its vocabulary."""
    sentences = [["city", "ok", "city", "ok", word]] * 5
    with pytest.raises(OptionError, match="which an archive's vocabulary cannot keep"):
        train_skipgram(sentences, SkipGramConfig(dim=4, epochs=1, min_count=1, subsample=0))
    build_vocab(sentences, 2, 1)  # (a word left out of the vocabulary does not matter)


@pytest.mark.slow  # (child processes)
def test_train_ends_its_work_when_stderr_or_stdout_cannot_be_written(tmp_path):
    """With stderr closed or full, the first epoch's line raised: exit 1 and no posterior after the
    training; a reader of stdout that left made the 'wrote' line exit 1 after the posterior was written."""
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(" ".join(s) for s in read_corpus(LEE)[:40]))
    base = [sys.executable, "-m", "bnncompress.cli", "train", str(corpus), "--dim", "4", "--epochs", "1", "-f"]
    with open("/dev/full", "w") as full:
        p = subprocess.run([*base, "-o", str(tmp_path / "a.pt")], stderr=full, stdout=subprocess.DEVNULL, timeout=120)
    assert p.returncode == 0 and (tmp_path / "a.pt").stat().st_size > 0
    proc = subprocess.Popen([*base, "-o", str(tmp_path / "c.pt")], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader leaves before the 'wrote' line
    assert proc.wait(timeout=120) == 0 and (tmp_path / "c.pt").stat().st_size > 0, proc.stderr.read()[-500:]

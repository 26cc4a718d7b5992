"""Evaluation through gensim's evaluators on the datasets gensim ships, on a tiny vocabulary."""

from __future__ import annotations

import json
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pytest
from gensim.models import KeyedVectors
from typer.testing import CliRunner

import bnncompress
from bnncompress import vectorfiles
from bnncompress.cli import app
from bnncompress.evaluation import _all_alike, dataset_path, evaluate

runner = CliRunner()
EXAMPLE = Path(__file__).parents[1] / "data" / "example.pt"


def _capital_pairs() -> list[tuple[str, str]]:
    pairs = []
    for line in dataset_path("analogy").read_text().splitlines()[1:]:
        if line.startswith(":"):
            break
        a, b, c, d = line.lower().split()
        pairs += [(a, b), (c, d)]
    return sorted(set(pairs))


@pytest.fixture(scope="module")
def tiny_kv():
    """Capitals and countries where country = capital + one shared offset: every
    capital-common-countries analogy is solvable; a few WordSim353 words are present."""
    rng = np.random.default_rng(0)
    pairs = _capital_pairs()
    offset = 3.0 * rng.normal(size=32)
    words, vectors = [], []
    for city, country in pairs:
        base = rng.normal(size=32)
        words += [city, country]
        vectors += [base, base + offset]
    extra = ["love", "sex", "tiger", "cat"]
    words += extra
    vectors += [rng.normal(size=32) for _ in extra]
    kv = KeyedVectors(vector_size=32, count=0, dtype=np.float32)
    kv.add_vectors(words, np.asarray(vectors, dtype=np.float32))
    return kv


def test_analogies_scored_per_section_and_missing_words_counted(tiny_kv):
    r = evaluate(tiny_kv, metrics=("analogy",))
    assert r["analogy_sections"]["capital-common-countries"] == 1.0
    known = set(tiny_kv.index_to_key)
    questions = [q.lower().split() for q in dataset_path("analogy").read_text().splitlines() if not q.startswith(":")]
    answerable = sum(all(w in known for w in q) for q in questions)
    assert answerable >= 23 * 22  # 23 capital/country pairs, every ordered pair of two of them
    assert r["analogy_total"] == 19544 and r["analogy_missing"] == 19544 - answerable


def test_similarity_counts_missing_pairs(tiny_kv):
    r = evaluate(tiny_kv, metrics=("ws353", "simlex"))
    assert r["ws353_total"] == 353 and r["simlex_total"] == 999
    assert 3 <= r["ws353_total"] - r["ws353_missing"] < 10  # love-sex, tiger-cat, ... are known
    assert -1 <= r["ws353"] <= 1
    assert r["simlex_missing"] >= 997 and r["simlex"] is None  # too few known pairs for a correlation


def test_restrict_vocab_limits_the_words_used(tiny_kv):
    full = evaluate(tiny_kv, metrics=("analogy",))
    few = evaluate(tiny_kv, restrict_vocab=10, metrics=("analogy",))
    assert few["vocab_size"] == 10 and few["analogy_missing"] > full["analogy_missing"]


def test_every_source_kind_gives_the_same_scores(tmp_path, tiny_kv):
    words = list(tiny_kv.index_to_key)
    loc = tiny_kv.vectors
    reference = evaluate(tiny_kv)
    tiny_kv.save_word2vec_format(str(tmp_path / "v.txt"))
    tiny_kv.save_word2vec_format(str(tmp_path / "v.bin"), binary=True)
    (tmp_path / "glove.txt").write_text(
        "\n".join(w + " " + " ".join(f"{x:.9g}" for x in v) for w, v in zip(words, loc)) + "\n"
    )
    np.savez(tmp_path / "post.npz", **{"word_vectors.loc": loc, "word_vectors.scale": np.full_like(loc, 0.1)})
    (tmp_path / "vocab.txt").write_text("\n".join(words) + "\n")
    bnncompress.pack(tmp_path / "post.npz", tmp_path / "a.bnc", vocab=tmp_path / "vocab.txt", method="float16")
    for source in ("v.txt", "v.bin", "glove.txt", "a.bnc"):
        got = evaluate(tmp_path / source)
        for metric in ("analogy", "ws353"):
            assert got[metric] == pytest.approx(reference[metric], abs=0.02), (source, metric)
            assert got[metric + "_missing"] == reference[metric + "_missing"]


def test_posterior_file_evaluates_its_means(trained):
    r = evaluate(trained["paths"]["with_vocab"])
    assert r["vocab_size"] == len(trained["vocab"])
    assert set(r) >= {"analogy", "ws353", "simlex", "analogy_sections"}


def test_cli_eval_table_and_json(trained):
    path = str(trained["paths"]["with_vocab"])
    table = runner.invoke(app, ["eval", path, "--restrict-vocab", "100"])
    assert table.exit_code == 0, table.output
    assert "ws353" in table.output and "missing" in table.output
    as_json = runner.invoke(app, ["eval", path, "--json"])
    assert as_json.exit_code == 0
    assert json.loads(as_json.output)["vocab_size"] == len(trained["vocab"])


@pytest.mark.parametrize(
    "args, message",
    [
        (["eval", "missing.bnc"], "does not exist"),
        (["eval", "__TMP__/junk.txt"], "not word2vec or GloVe"),
        (["eval", "__POST__", "--restrict-vocab", "0"], "--restrict-vocab must be at least 1"),
        (["eval", "__POST__", "--tensor", "nope"], "not a word-vector tensor"),
    ],
)
def test_cli_eval_errors_are_one_line(tmp_path, trained, args, message):
    (tmp_path / "junk.txt").write_text("this is\nnot vectors at all\n")
    args = [a.replace("__TMP__", str(tmp_path)).replace("__POST__", str(trained["paths"]["with_vocab"])) for a in args]
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output


def test_words_are_matched_as_gensim_matches_them_in_upper_case(tiny_kv):
    # An evaluation hunt: answerable questions were counted with lower(), gensim matches with upper():
    # 'ı' (dotless i, upper 'I') and the Kelvin sign (lower 'k') counted differently, and a score came
    # out None where gensim gives one.
    words = [w.replace("i", "\u0131").replace("k", "\u212a") for w in tiny_kv.index_to_key]
    kv = KeyedVectors(vector_size=tiny_kv.vector_size, count=0, dtype=np.float32)
    kv.add_vectors(words, tiny_kv.vectors)
    ours = evaluate(kv, metrics=("analogy", "ws353"))
    score, sections = kv.evaluate_word_analogies(str(dataset_path("analogy")))
    asked = len(sections[-1]["correct"]) + len(sections[-1]["incorrect"])
    assert ours["analogy"] == pytest.approx(score) and ours["analogy_total"] - ours["analogy_missing"] == asked > 0
    _, _, oov = kv.evaluate_word_pairs(str(dataset_path("ws353")))
    assert 100 * ours["ws353_missing"] / ours["ws353_total"] == pytest.approx(oov)


def test_a_posterior_with_recorded_supports_is_scored_as_it_loads(tmp_path):
    # An evaluation hunt: evaluate(posterior) scored the unconstrained locs of a positive site, while its
    # archive (and sweep's other rows) load the constrained medians: a gap compression did not cause.
    import torch

    state = torch.load(EXAMPLE, weights_only=False)  # our own file
    state["supports"] = {"word_vectors": {"constraint": "positive"}, "context_vectors": None}
    torch.save(state, tmp_path / "pos.pt")
    bnncompress.pack(tmp_path / "pos.pt", tmp_path / "pos.bnc", method="float16")
    means, archive = evaluate(tmp_path / "pos.pt"), evaluate(tmp_path / "pos.bnc")
    assert means["tensor"] == "word_vectors (posterior medians)"
    assert abs(means["ws353"] - archive["ws353"]) < 0.002  # 0.47 (unconstrained) against 0.31 before


def test_a_tensor_that_is_not_words_by_dims_is_one_line(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(
        tmp_path / "p.npz",
        **{"w.loc": rng.normal(size=(50, 4)), "w.scale": np.full((50, 4), 0.1)},
        **{"b.loc": rng.normal(size=50), "b.scale": np.full(50, 0.1)},
        vocab=np.array([f"w{i}" for i in range(50)]),
    )
    r = runner.invoke(app, ["eval", str(tmp_path / "p.npz"), "-t", "b"])  # IndexError before
    assert r.exit_code == 2 and "not a word-vector tensor" in r.output and "choose one of: w" in r.output


def test_a_truncated_archive_is_one_line_for_eval_and_pack(tmp_path):
    # A side-effects hunt, in passing: evaluate() on a truncated archive raised h5py's raw OSError.
    bnncompress.pack(EXAMPLE, tmp_path / "a.bnc", lam=1.0)
    (tmp_path / "t.bnc").write_bytes((tmp_path / "a.bnc").read_bytes()[:100_000])
    with pytest.raises(bnncompress.BnnCompressError, match="damaged or truncated"):
        evaluate(tmp_path / "t.bnc")
    for args in (["eval", str(tmp_path / "t.bnc")], ["pack", str(tmp_path / "t.bnc"), "-o", str(tmp_path / "x.bnc")]):
        r = runner.invoke(app, args)
        assert r.exit_code == 2 and "damaged or truncated" in r.output and len(r.output.strip().splitlines()) == 1


def test_a_text_line_longer_than_the_probe_is_read_as_text(tmp_path, monkeypatch):
    """A first vector line longer than the probe (1 MiB) was read as word2vec binary: ASCII digits as
    float32, words '2', '64526'..., exit 0."""
    monkeypatch.setattr(vectorfiles, "_PROBE", 4096)
    kv = KeyedVectors(vector_size=1000, count=0, dtype=np.float32)
    kv.add_vectors(["king", "queen", "man"], np.random.default_rng(0).normal(size=(3, 1000)).astype(np.float32))
    kv.save_word2vec_format(str(tmp_path / "long.txt"), binary=False)
    got = vectorfiles.read_word_vectors(tmp_path / "long.txt")
    assert got.index_to_key == ["king", "queen", "man"]
    np.testing.assert_array_equal(got.vectors, kv.vectors)


def test_a_binary_file_holding_more_than_its_header_says_is_refused(tmp_path):
    from bnncompress.errors import OptionError
    from bnncompress.evaluation import read_word_vectors

    kv = KeyedVectors(vector_size=3, count=0, dtype=np.float32)
    kv.add_vectors(["a", "b", "c"], np.arange(9, dtype=np.float32).reshape(3, 3) + 0.5)
    kv.save_word2vec_format(str(tmp_path / "v.bin"), binary=True)
    data = (tmp_path / "v.bin").read_bytes()
    (tmp_path / "short.bin").write_bytes(b"2 3" + data[data.index(b"\n") :])  # a header one vector short
    with pytest.raises(OptionError, match="more than the 2 binary vectors of its header"):
        read_word_vectors(tmp_path / "short.bin")
    assert read_word_vectors(tmp_path / "v.bin").index_to_key == ["a", "b", "c"]


@pytest.mark.slow  # (child processes)
def test_eval_json_into_a_closed_pipe_ends_quietly(trained):
    import subprocess
    import sys

    path = str(trained["paths"]["with_vocab"])
    argv = ["bnncompress", "eval", path, "--json", "-q"]
    script = f"import sys; sys.argv = {argv!r}; from bnncompress.cli import main; main()"
    for _ in range(3):  # (5 of 8 runs said "error: Broken pipe" with exit 2)
        proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        proc.stdout.read(5)
        proc.stdout.close()
        assert proc.wait(timeout=120) == 0 and proc.stderr.read() == b""


def test_threads_evaluating_one_keyed_vectors_and_files_with_a_byte_order_mark(tmp_path, tiny_kv, example):
    """gensim's evaluators swap kv.key_to_index: threads evaluating one object raised KeyError for words it
    has (23 of 32 calls). A UTF-8 byte-order mark became part of the first word (GloVe) or hid the header."""
    import threading

    kv, metrics = bnncompress.load(example[0]).to_keyed_vectors("word_vectors"), ("ws353", "simlex")
    expected = {n: evaluate(kv, restrict_vocab=n, metrics=metrics) for n in (2000, 3000)}
    results = []

    def run(n):
        try:
            results.append((n, evaluate(kv, restrict_vocab=n, metrics=metrics)))
        except Exception as exc:  # (what the test reports)
            results.append((n, exc))

    for _ in range(3):
        threads = [threading.Thread(target=run, args=(n,)) for n in (2000, 3000, 2000, 3000)]
        [t.start() for t in threads]
        [t.join() for t in threads]
    assert all(r == expected[n] for n, r in results), results
    words = tiny_kv.index_to_key[:4]
    lines = [f"{w} " + " ".join(f"{v:.4f}" for v in tiny_kv[w]) for w in words]
    for name, header in (("glove.txt", []), ("w2v.txt", [f"4 {tiny_kv.vector_size}"])):
        (tmp_path / name).write_bytes(b"\xef\xbb\xbf" + "\n".join(header + lines).encode() + b"\n")
        assert vectorfiles.read_word_vectors(tmp_path / name).index_to_key == words


def test_a_posteriors_own_errors_get_no_hint_about_word_vectors_and_escapes_are_shown(tmp_path):
    """Every error of a real posterior (a NaN mean) was followed by the hint meant for files that are no
    posterior at all; a tensor's name went to the eval table with its terminal escapes."""
    loc = np.zeros((30, 4), np.float32)
    loc[1, 2] = np.nan
    (tmp_path / "p").mkdir()
    np.save(tmp_path / "p" / "word_vectors.loc.npy", loc)
    np.save(tmp_path / "p" / "word_vectors.scale.npy", np.ones_like(loc))
    (tmp_path / "p" / "vocab.txt").write_text("\n".join(f"w{i}" for i in range(30)) + "\n")
    result = runner.invoke(app, ["eval", str(tmp_path / "p")])
    assert result.exit_code == 2 and "NaN" in result.output and "unpack" not in result.output
    from bnncompress.evaluation import format_table

    table = format_table(
        {"tensor": "emb\x1b[2J", "vocab_size": 3, "analogy": None, "analogy_missing": 1, "analogy_total": 1}
    )
    assert "\x1b" not in table


def test_equal_similarities_are_said_in_words(tiny_kv):
    """Vectors all alike (a coarse archive) gave scipy's bare 'An input array is constant' and n/a."""
    same = KeyedVectors(vector_size=tiny_kv.vector_size, count=0, dtype=np.float32)
    same.add_vectors(tiny_kv.index_to_key, np.ones((len(tiny_kv), tiny_kv.vector_size), np.float32))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert evaluate(same, metrics=("ws353",))["ws353"] is None
    assert [str(w.message) for w in caught] == ["ws353: all answerable pairs are equally similar: no correlation"]
    rng = np.random.default_rng(0)
    for rows in (np.zeros_like(same.vectors), same.vectors * rng.uniform(0.1, 3, size=(len(same), 1))):
        alike = KeyedVectors(vector_size=tiny_kv.vector_size, count=0, dtype=np.float32)
        alike.add_vectors(tiny_kv.index_to_key, rows.astype(np.float32))  # all zero; one direction, rounded
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert evaluate(alike, metrics=("ws353",))["ws353"] is None
        assert len(caught) == 1 and "equally similar" in str(caught[0].message), [str(w.message) for w in caught]


def test_equal_similarities_of_the_answerable_pairs_alone_are_said_once(tiny_kv):
    """Only the pairs' words alike, the other rows not: scipy's 'An input array is constant' leaked twice
    before the one line (the check looked at the whole vocabulary)."""
    lines = dataset_path("ws353").read_text(encoding="utf-8").splitlines()
    in_pairs = {w.upper() for line in lines if line and not line.startswith("#") for w in line.split()[:2]}
    vectors = tiny_kv.vectors.copy()
    rows = [i for i, w in enumerate(tiny_kv.index_to_key) if w.upper() in in_pairs]
    vectors[rows] = 1.0
    assert 0 < len(rows) < len(vectors)
    kv = KeyedVectors(vector_size=tiny_kv.vector_size, count=0, dtype=np.float32)
    kv.add_vectors(tiny_kv.index_to_key, vectors)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = evaluate(kv, metrics=("ws353",))
    assert r["ws353"] is None and r["ws353_total"] - r["ws353_missing"] >= 3
    assert [str(w.message) for w in caught] == ["ws353: all answerable pairs are equally similar: no correlation"]


def test_a_text_file_with_numbers_that_do_not_parse_is_not_read_as_binary(tmp_path):
    # '0,5 ' is four bytes, a float32's size: the first vector line did not parse as text, so the file was
    # read as binary and scored (values like 1.5e-19), exit 0
    path = tmp_path / "comma.txt"
    path.write_text("4 3\n" + "".join(f"{w} 0,5 0,1 0,9\n" for w in ("king", "queen", "man", "woman")))
    with pytest.raises(bnncompress.OptionError, match="line 2 is not a UTF-8 word followed by numbers"):
        vectorfiles.read_word_vectors(path)
    r = CliRunner().invoke(app, ["eval", str(path)])
    assert r.exit_code == 2 and "line 2" in r.output


def test_text_under_a_bin_name_is_read_as_text_even_where_its_lines_are_one_binary_vector_long(tmp_path):
    # a fix that read a .bin file as binary wherever the whole file read so (for float32 bytes that are digits,
    # b"2.5\n": read as text) read these as binary, exit 0: what unpack --text -o X.bin writes (values of three
    # characters fill exactly 4 bytes a value) and decimal-comma files, refused as text; the content decides
    (tmp_path / "v.bin").write_text("4 1\na 2.5\nb 1.25\nc 0.5\nd -1.0\n")
    assert vectorfiles.read_word_vectors(tmp_path / "v.bin").vectors.ravel().tolist() == [2.5, 1.25, 0.5, -1.0]
    words = ("king", "queen", "man", "woman")
    (tmp_path / "comma.bin").write_text("4 3\n" + "".join(f"{w} 0,5 0,1 0,9\n" for w in words))
    with pytest.raises(bnncompress.OptionError, match="line 2 is not a UTF-8 word followed by numbers"):
        vectorfiles.read_word_vectors(tmp_path / "comma.bin")


def test_an_empty_tensor_name_is_not_taken_for_the_default(tmp_path, trained):
    # `eval archive -t ''` scored the word vectors, to_keyed_vectors('') and embedding('') used them too,
    # while `eval posterior.pt -t ''` and `unpack -t ''` refused it
    path = bnncompress.pack(trained["paths"]["with_vocab"], tmp_path / "a.bnc", lam=1.0).path
    archive = bnncompress.load(path)
    for use in (archive.to_keyed_vectors, archive.embedding, lambda name: archive.vectors([0], name=name)):
        with pytest.raises(bnncompress.NotFoundError, match="no tensor named ''"):
            use("")
    r = CliRunner().invoke(app, ["eval", str(path), "-t", ""])
    assert r.exit_code == 2 and "no tensor named ''" in r.output


def test_a_binary_file_whose_bytes_look_like_a_line_of_text_is_read_as_binary(tmp_path):
    # with two dimensions, random float32 bytes made a printable line of three fields: taken for text
    # (the decimal-comma rule above) and refused; the fields must look like numbers to be text
    rng = np.random.default_rng(1512)
    words = ["".join(rng.choice(list("abcdefghij"), rng.integers(1, 6))) + str(i) for i in range(5)]
    kv = KeyedVectors(2)
    kv.add_vectors(words, rng.normal(size=(5, 2)).astype(np.float32))
    kv.save_word2vec_format(str(tmp_path / "v.bin"), binary=True)
    read = vectorfiles.read_word_vectors(tmp_path / "v.bin")
    assert read.index_to_key == words and np.array_equal(read.vectors, kv.vectors)


def test_checking_whether_all_vectors_are_alike_reads_them_a_chunk_at_a_time():
    # normalising the whole matrix at once took 2.3 times the vectors' memory (8 GB more for GoogleNews)
    vectors = np.tile(np.arange(1, 51, dtype=np.float32), (200_000, 1))  # 40 MB, all one direction: read to the end
    tracemalloc.start()
    try:
        assert _all_alike(vectors)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < vectors.nbytes / 2, f"{peak / 2**20:.0f} MiB for {vectors.nbytes / 2**20:.0f} MiB of vectors"
    vectors[-1, 0] = 2.0
    assert not _all_alike(vectors)


def test_a_gensim_keyed_vectors_file_is_told_as_what_it_is(tmp_path, tiny_kv):
    # unpack -o v.kv wrote it; eval led with "pickled objects that are not allowed (Unsupported operand 149)" and a
    # hint to re-save a Pyro posterior (new-user hunt)
    tiny_kv.save(str(tmp_path / "v.kv"))
    with pytest.raises(
        bnncompress.OptionError, match="is a gensim KeyedVectors file .* never loads.*unpack -o vectors.txt"
    ):
        evaluate(tmp_path / "v.kv")
    r = runner.invoke(app, ["eval", str(tmp_path / "v.kv")])
    assert r.exit_code == 2 and "gensim KeyedVectors file" in r.output and "Unsupported operand" not in r.output


def test_word_vectors_whose_support_makes_matrices_are_refused_in_one_line(tmp_path):
    """A vocabulary-labelled tensor with a corr_cholesky support loads as (V, 3, 3): to_keyed_vectors, exports and
    evaluate checked the stored (V, 3) shape and gensim then raised its own ValueError (kv hunt)."""
    import torch

    vocab = [f"w{i}" for i in range(50)]
    store = {
        "params": {
            "AutoNormal.locs.word_vectors": torch.zeros(50, 3),
            "AutoNormal.scales.word_vectors": torch.full((50, 3), 0.2),
        },
        "constraints": {},
        "supports": {"word_vectors": {"constraint": "corr_cholesky"}},
        "vocab": vocab,
    }
    torch.save(store, tmp_path / "corr.pt")
    a = bnncompress.load(bnncompress.pack(tmp_path / "corr.pt", tmp_path / "corr.bnc", lam=0.1).path)
    for call in (a.to_keyed_vectors, lambda: a.export(tmp_path / "c.txt"), lambda: bnncompress.evaluate(a)):
        with pytest.raises(bnncompress.OptionError, match=r"shape \(50, 3, 3\)"):
            call()
    with pytest.raises(bnncompress.OptionError, match=r"loads with shape \(50, 3, 3\): no word vectors"):
        bnncompress.evaluate(tmp_path / "corr.pt")

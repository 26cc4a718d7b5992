"""Evaluation through gensim's evaluators on the datasets gensim ships, on a tiny vocabulary."""

from __future__ import annotations

import json

import numpy as np
import pytest
from gensim.models import KeyedVectors
from typer.testing import CliRunner

import bnncompress
from bnncompress.cli import app
from bnncompress.evaluation import dataset_path, evaluate

runner = CliRunner()


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

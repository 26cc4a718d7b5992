"""One rule for which tensor holds the word vectors, one progress callback type (issue 17).

``eval`` and ``sweep`` used to pick different tensors of one posterior file (``emb`` and
``bias`` of ``{bias, emb, vocab}``, and ``sweep`` then failed), and the loader a third for an
archive; pack called ``progress(stage, done, total)`` and sweep ``progress(done, total, label)``.
"""

from __future__ import annotations

import typing
from pathlib import Path

import numpy as np
import pytest
import torch

import bnncompress
from bnncompress.evaluation import dataset_path, evaluate
from bnncompress.models import TrainCallback, train_skipgram
from bnncompress.packing import pack
from bnncompress.pipeline import quantize_and_code
from bnncompress.progress import Progress
from bnncompress.sweep import sweep
from bnncompress.wordvectors import embedding_tensor, word_vector_tensor

DIM = 6


def _ws353_words(count: int) -> list[str]:
    """Words of WordSim353, so that its Spearman can be computed on a tiny vocabulary."""
    pairs = [line.split()[:2] for line in dataset_path("ws353").read_text().splitlines() if line[:1] != "#"]
    return list(dict.fromkeys(w.lower() for pair in pairs for w in pair))[:count]


def _posterior_file(path, words: list[str], **shapes: tuple[int, ...]):
    """A ``.pt`` of ``{name: {"loc", "scale"}}`` for each of ``shapes`` (in that order) plus ``vocab``."""
    rng = np.random.default_rng(0)
    content: dict = {
        name: {"loc": torch.tensor(rng.normal(size=s), dtype=torch.float32), "scale": torch.full(s, 0.05)}
        for name, s in shapes.items()
    }
    torch.save({**content, "vocab": words}, path)
    return path


@pytest.fixture(scope="module")
def words() -> list[str]:
    return _ws353_words(120)


@pytest.mark.parametrize(
    ("shapes", "vocab_size", "expected"),
    [
        ({"bias": (3,), "emb": (40, DIM)}, 40, "emb"),
        ({"bias": (40,), "emb": (40, DIM)}, 40, "emb"),  # one row per word, but not 2-D
        ({"context": (40, DIM), "word_vectors": (40, DIM)}, 40, "word_vectors"),
        ({"word_vectors": (3, DIM), "emb": (40, DIM)}, 40, "emb"),  # the vocabulary does not label it
        ({"w": (5, DIM)}, 40, None),
        ({"w": (40, DIM)}, None, None),
    ],
)
def test_word_vector_rule(shapes, vocab_size, expected):
    assert word_vector_tensor(shapes, vocab_size) == expected


def test_an_embedding_needs_no_labels():
    assert embedding_tensor({"bias": (3,), "w": (5, DIM)}, None) == "w"
    assert embedding_tensor({"w": (5, DIM), "word_vectors": (3, DIM)}, 40) == "word_vectors"
    assert embedding_tensor({"w": (5, DIM), "emb": (40, DIM)}, 40) == "emb"
    assert embedding_tensor({"bias": (3,)}, 3) is None


@pytest.mark.parametrize("first", ["bias", "word_vectors"])
def test_sweep_and_eval_pick_the_same_tensor_of_a_posterior_file(tmp_path, words, first):
    """``{bias, emb, vocab}``: sweep packed ``bias`` and failed; a ``word_vectors`` the vocabulary
    does not label was picked by sweep too."""
    source = _posterior_file(tmp_path / "p.pt", words, **{first: (3, DIM)}, emb=(len(words), DIM))
    scores = evaluate(source, metrics=("ws353",))
    assert scores["tensor"] == "emb (posterior means)"
    rows = sweep(source, ["uniform"], [2.0])
    assert [r["method"] for r in rows] == ["uncompressed", "uniform"]
    assert rows[0]["ws353"] == scores["ws353"] is not None  # the means of the tensor eval picks
    assert rows[1]["ws353"] is not None


def test_an_archive_and_its_posterior_file_pick_the_same_tensor(tmp_path, words):
    """The loader picked ``word_vectors`` of an archive even where the vocabulary labels only ``emb``."""
    source = _posterior_file(tmp_path / "p.pt", words, word_vectors=(3, DIM), emb=(len(words), DIM))
    pack(source, tmp_path / "p.bnc", bits=4.0, method="uniform")
    archive = bnncompress.load(tmp_path / "p.bnc")
    assert archive.default_embedding_name() == "emb"
    assert archive.to_keyed_vectors().vector_size == DIM
    assert evaluate(tmp_path / "p.bnc", metrics=("ws353",))["tensor"] == "emb"
    assert evaluate(source, metrics=("ws353",))["tensor"] == "emb (posterior means)"


def test_pack_and_sweep_call_progress_with_stage_done_total(tmp_path, words):
    source = _posterior_file(tmp_path / "p.pt", words, emb=(len(words), DIM))
    calls: dict[str, list[tuple]] = {"pack": [], "sweep": []}
    pack(source, tmp_path / "p.bnc", bits=2.0, method="uniform", progress=lambda *a: calls["pack"].append(a))
    sweep(source, ["uniform"], [2.0], progress=lambda *a: calls["sweep"].append(a))
    for name, made in calls.items():
        assert made, name
        assert all(isinstance(s, str) and isinstance(d, int) and isinstance(t, int) for s, d, t in made), name
        assert all(0 <= d <= t for _, d, t in made), name
    assert calls["sweep"][0] == ("uncompressed", 0, 2)
    assert calls["sweep"][-1] == ("done", 2, 2)


def test_one_progress_type_for_pack_and_sweep_one_callback_type_for_training():
    hints = [typing.get_type_hints(f)["progress"] for f in (pack, sweep)]
    assert hints == [Progress | None] * 2
    assert typing.get_type_hints(quantize_and_code)["report"] is Progress
    assert typing.get_type_hints(train_skipgram)["progress"] == TrainCallback | None


def test_sweep_names_the_progress_arguments_when_refusing_one():
    with pytest.raises(TypeError, match=r"progress\(stage, done, total\)"):
        sweep(Path(__file__).parents[1] / "data" / "example.pt", ["uniform"], [2.0], progress=5)

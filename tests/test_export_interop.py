"""What other tools make of an export, and what bnncompress's own word-vector reader makes of other files."""

from __future__ import annotations

import numpy as np
import pytest
from gensim.models import KeyedVectors
from typer.testing import CliRunner

import bnncompress
from bnncompress import OptionError, export
from bnncompress.cli import app
from bnncompress.vectorfiles import read_word_vectors


@pytest.fixture
def archive_with(tmp_path):
    def make(vocab: list[str]):
        rng = np.random.default_rng(0)
        n = len(vocab)
        loc, scale = rng.normal(size=(n, 4)).astype(np.float32), np.full((n, 4), 0.05, np.float32)
        bnncompress.pack({"word_vectors": (loc, scale)}, tmp_path / "a.bnc", vocab=vocab, lam=0.1)
        return bnncompress.load(tmp_path / "a.bnc")

    return make


@pytest.mark.parametrize("name", ["v.txt.gz", "v.kv.gz", "v.bin.bz2", "v.pt.xz", "v.txt.lz4"])
def test_a_compressed_name_is_refused_not_written_uncompressed(tmp_path, archive_with, name):
    a = archive_with([f"w{i}" for i in range(50)])
    fmt = {"txt": "word2vec", "kv": "kv", "bin": "word2vec", "pt": "pt"}[name.split(".")[1]]
    with pytest.raises(OptionError, match="compressed file, but exports are written uncompressed"):
        a.export(tmp_path / name, format=fmt)
    result = CliRunner().invoke(app, ["unpack", str(tmp_path / "a.bnc"), "-o", str(tmp_path / name)])  # no format given
    assert result.exit_code == 2 and "compressed file" in result.output and "Traceback" not in result.output
    assert not (tmp_path / name).exists()


def test_a_word2vec_export_keeps_no_break_spaces_and_names_a_word_with_a_space(tmp_path, archive_with):
    vocab = [f"w{i}" for i in range(49)] + ["New\u00a0York"]  # validate_words' own example of a word
    a = archive_with(vocab)
    a.export(tmp_path / "v.txt")
    for kv in (KeyedVectors.load_word2vec_format(tmp_path / "v.txt"), read_word_vectors(tmp_path / "v.txt")):
        assert kv.index_to_key == vocab and np.array_equal(kv.vectors, a["word_vectors"])
    spaced = archive_with([f"w{i}" for i in range(49)] + ["New York"])
    with pytest.raises(OptionError, match="the word 'New York' holds a space"):
        spaced.export(tmp_path / "s.txt")


def test_an_npz_export_refuses_a_vocabulary_one_long_word_would_make_huge(tmp_path, archive_with):
    a = archive_with([f"w{i}" for i in range(4999)] + ["x" * 4000])  # 5,000 words 16 kB wide: 76 MiB
    with pytest.raises(OptionError, match="npz would store each of the 5,000 words as wide as the longest"):
        a.export(tmp_path / "v.npz")
    assert not (tmp_path / "v.npz").exists()
    a.export(tmp_path / "v.pt")  # the pt export holds it as a list
    small = archive_with([f"w{i}" for i in range(99)] + ["y" * 300])  # wide, but small: written
    small.export(tmp_path / "s.npz")
    assert np.load(tmp_path / "s.npz")["vocab"].tolist()[-1] == "y" * 300


def test_a_text_file_whose_first_word_is_longer_than_the_probe_is_read_as_text(tmp_path):
    path = tmp_path / "long.txt"
    path.write_bytes(b"1 1\n" + b"x" * (1 << 20) + b" 0.5\n")  # the probe ends inside the word
    kv = read_word_vectors(path)
    assert kv.vectors.tolist() == [[0.5]] and len(kv.index_to_key[0]) == 1 << 20  # was read as binary: 8.7e-33


def test_a_binary_file_whose_first_word_is_longer_than_the_probe_is_read_as_binary(tmp_path):
    kv = KeyedVectors(vector_size=2)
    kv.add_vectors(["x" * (1 << 20) + "y", "b"], np.array([[0.5, 1.5], [2.0, 3.0]], np.float32))
    kv.save_word2vec_format(str(tmp_path / "long.bin"), binary=True)
    assert read_word_vectors(tmp_path / "long.bin").vectors.tolist() == [[0.5, 1.5], [2.0, 3.0]]


def test_an_npz_vocabulary_of_many_words_and_one_long_one_is_written():
    export._refuse_wide_npz_words([f"word{i}" for i in range(1_000_000)] + ["u" * 120])  # 480 MB, 15x its words


def test_the_reader_says_what_an_exported_kv_npz_or_pt_file_is(tmp_path, archive_with):
    a = archive_with([f"w{i}" for i in range(50)])
    for name, what in (("v.kv", "a gensim KeyedVectors file"), ("v.npz", "a zip file"), ("v.pt", "a zip file")):
        a.export(tmp_path / name)
        with pytest.raises(OptionError, match=what):
            read_word_vectors(tmp_path / name)


def test_a_first_word_longer_than_the_reader_looks_is_refused_not_guessed(tmp_path, monkeypatch):
    from bnncompress import vectorfiles

    monkeypatch.setattr(vectorfiles, "_WORD", 3 << 20)  # (64 MiB in use: a word past it was read as binary)
    path = tmp_path / "long.txt"
    path.write_bytes(b"1 1\n" + b"x" * (4 << 20) + b" 0.5\n")
    with pytest.raises(OptionError, match="word longer than 64 MiB"):
        read_word_vectors(path)

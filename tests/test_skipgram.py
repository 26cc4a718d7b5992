import numpy as np
from typer.testing import CliRunner

import bnncompress
from bnncompress.cli import app

from .conftest import LEE


def test_train_command_writes_a_packable_posterior(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(LEE.read_text().splitlines()[:40]))
    out = tmp_path / "emb.pt"
    r = CliRunner().invoke(
        app,
        [
            "train",
            str(corpus),
            "-o",
            str(out),
            "--dim",
            "8",
            "--vocab-size",
            "200",
            "--epochs",
            "1",
            "--window",
            "2",
            "--device",
            "cpu",
        ],
    )
    assert r.exit_code == 0, r.output
    post = bnncompress.read_posterior(out)
    assert post.names == ["word_vectors", "context_vectors"]
    assert post.tensors["word_vectors"].shape == (len(post.vocab), 8) and post.vocab[0] == "the"
    assert np.all(post.tensors["word_vectors"].scale > 0)
    bnncompress.pack(out, tmp_path / "emb.bnc", bits=3.0)
    assert bnncompress.load(tmp_path / "emb.bnc").to_keyed_vectors()["the"].shape == (8,)


def test_frequent_words_are_more_certain(trained):
    scale = trained["result"].guide.scales.word_vectors.detach().numpy()
    assert scale[:20].mean() < scale[-50:].mean()

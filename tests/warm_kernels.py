"""The numba kernels the tests call, compiled in a process beside the test session (tests/conftest.py starts it):
numba caches them on disk, and the tests load them instead of each compiling its own on its first call (a fresh
checkout's first run spent about 70 s compiling, one kernel after another, on the tests' own time).

It runs what the tests run, through the public API (so the kernels get the argument types the tests give them):
packs with every method that compiles kernels, in memory and streamed, at a lambda and at a rate; loads, row
lookups and the served embedding; the bundled example; a short training run. What fails here is the tests'
to report: each step is skipped on error.
"""

from __future__ import annotations

import contextlib
import sys
import warnings
from pathlib import Path

import gensim
import numba
import numpy as np

import bnncompress
from bnncompress.models import SkipGramConfig, read_corpus, train_skipgram

EXAMPLE = Path(__file__).resolve().parents[1] / "data" / "example.pt"
METHODS = ("vbq-transform", "vbq", "uniform", "vbq-direction", "vbq-empirical", "kmeans", "weighted-kmeans")


def main(work: Path) -> None:
    """Write in ``work`` (the caller removes it: a session that ends first kills this process)."""
    warnings.simplefilter("ignore")
    run(work)
    numba.set_num_threads(1)  # the serial twins: a forked child's, a Dask worker's, a second thread's
    run(work, METHODS[:1])


def run(work: Path, methods: tuple[str, ...] = METHODS) -> None:
    vectors = bnncompress.read_posterior(EXAMPLE).tensors["word_vectors"]  # twice: row lookups use the kernels
    loc, scale = (np.tile(np.asarray(a).reshape(vectors.shape), (2, 1)) for a in (vectors.loc, vectors.scale))
    posterior, path = {"w": (loc, scale), "b": (loc[0], loc[1] ** 2 + 0.1)}, work / "a.bnc"
    for method, options in [(m, {}) for m in methods] + [(methods[0], {"reflectors": True})]:
        for rate in ({}, {"bits": 2.0}):
            with contextlib.suppress(Exception):
                bnncompress.pack(posterior, path, method=method, options=options, **rate)
                a = bnncompress.load(path)
                a["w"], a.rows("w", [1, 700]), a.embedding("w")(np.array([3]))
                bnncompress.load(path).rows("w", [5])  # (a fresh reader: the first lookup's prefix decode)
    np.save(work / "w.loc.npy", loc)
    np.save(work / "w.scale.npy", scale)
    for method in methods[:3]:
        with contextlib.suppress(Exception):
            bnncompress.pack(work, work / "s.bnc", method=method, bits=2.0, stream=True)
    for rate in ({}, {"bits": 1.0}, {"bits": 2.0}):
        with contextlib.suppress(Exception):
            bnncompress.pack(EXAMPLE, path, **rate)
            a = bnncompress.load(path)
            a.vector(a.vocab[5]), a.most_similar(a.vocab[5]), a.state_dict(), a.to_keyed_vectors()
    with contextlib.suppress(Exception):
        lee = Path(gensim.__file__).parent / "test" / "test_data" / "lee_background.cor"
        train_skipgram(read_corpus(lee)[:50], SkipGramConfig(dim=8, epochs=1, vocab_size=200))


if __name__ == "__main__":
    main(Path(sys.argv[1]))

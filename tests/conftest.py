"""Shared fixtures: small real posteriors written by real Pyro code."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from types import ModuleType

import gensim
import numpy as np
import pytest

LEE = Path(os.path.dirname(gensim.__file__)) / "test" / "test_data" / "lee_background.cor"
RECIPES = Path(__file__).resolve().parent.parent / "recipes"


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """``-n auto`` (pyproject.toml): a test process per CPU this process may run on, at most 8 (each imports torch)."""
    return max(1, min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))


def pytest_sessionstart(session: pytest.Session) -> None:
    """Compile the kernels the tests call in a second process (tests/warm_kernels.py) while the tests run.

    Under pytest-xdist only the controlling process starts it, not each test process.
    """
    if hasattr(session.config, "workerinput"):
        return
    work = tempfile.mkdtemp(prefix="bnncompress-warm-")
    process = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("warm_kernels.py")), work],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    session.config.stash[_WARMING] = (process, work)


def pytest_sessionfinish(session: pytest.Session) -> None:
    process, work = session.config.stash.get(_WARMING, (None, None))
    if process is not None:
        if process.poll() is None:  # (a short run ends before it: it is not waited for)
            process.kill()
        process.wait()
        shutil.rmtree(work, ignore_errors=True)


_WARMING = pytest.StashKey[tuple]()


def load_recipe(name: str) -> ModuleType:
    """``recipes/NAME.py`` as a module, as ``python recipes/NAME.py`` sees its imports (recipes/ on the path)."""
    if str(RECIPES) not in sys.path:
        sys.path.insert(0, str(RECIPES))
    spec = importlib.util.spec_from_file_location(f"{name}_recipe", RECIPES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """A tiny Bayesian skip-gram trained for a few steps on real English text (gensim's Lee corpus)."""
    import pyro
    import torch
    from pyro.infer.autoguide import AutoNormal

    from bnncompress.models import (
        SkipGramConfig,
        param_store_state,
        read_corpus,
        save_posterior,
        skipgram_model,
        train_skipgram,
    )

    d = tmp_path_factory.mktemp("trained")
    sentences = read_corpus(LEE)[:60]
    cfg = SkipGramConfig(
        dim=8, vocab_size=300, min_count=2, window=2, negatives=2, epochs=1, batch_size=512, device="cpu"
    )
    result = train_skipgram(sentences, cfg)
    paths = {
        "param_store": d / "param_store.pt",
        "with_vocab": d / "with_vocab.pt",
        "state_dict": d / "state_dict.pt",
        "vocab": d / "vocab.txt",
    }
    pyro.clear_param_store()
    pyro.get_param_store().set_state(param_store_state(result))
    pyro.get_param_store().save(paths["param_store"])
    save_posterior(paths["with_vocab"], result)
    v = len(result.vocab)
    guide = AutoNormal(skipgram_model(v, cfg.dim, result.num_pairs, cfg.negatives))
    one = torch.zeros(1, dtype=torch.long)
    guide(one, one, one[:, None], one)  # AutoNormal takes its values from the param store
    torch.save(guide.state_dict(), paths["state_dict"])
    paths["vocab"].write_text("\n".join(result.vocab) + "\n")
    return {"paths": paths, "result": result, "guide": guide, "vocab": result.vocab}


@pytest.fixture(scope="session")
def diagonal_files(tmp_path_factory):
    """Param store and state dict of a trained AutoDiagonalNormal guide (a tiny Bayesian regression)."""
    import pyro
    import pyro.distributions as dist
    import torch
    from pyro.infer import SVI, Trace_ELBO
    from pyro.infer.autoguide import AutoDiagonalNormal

    d = tmp_path_factory.mktemp("diag")
    x = torch.randn(50, 3)
    y = x @ torch.tensor([1.0, -2.0, 0.5]) + 0.1 * torch.randn(50)

    def model(x, y):
        w = pyro.sample("w", dist.Normal(torch.zeros(3), 1.0).to_event(1))
        b = pyro.sample("b", dist.Normal(0.0, 1.0))
        with pyro.plate("data", len(x)):
            pyro.sample("y", dist.Normal(x @ w + b, 0.1), obs=y)

    pyro.clear_param_store()
    guide = AutoDiagonalNormal(model)
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.05}), Trace_ELBO())
    for _ in range(20):
        svi.step(x, y)
    pyro.get_param_store().save(d / "diag_store.pt")
    torch.save(guide.state_dict(), d / "diag_sd.pt")
    return {"store": d / "diag_store.pt", "state_dict": d / "diag_sd.pt", "guide": guide}


@pytest.fixture(scope="session")
def synthetic():
    """A 2000 x 50 posterior shaped like a skip-gram's: frequent rows sharp, rare rows near the prior."""
    rng = np.random.default_rng(0)
    rows, dim = 2000, 50
    row_scale = np.exp(np.linspace(np.log(0.02), np.log(0.8), rows))[:, None]
    scale = (row_scale * np.exp(0.2 * rng.normal(size=(rows, dim)))).astype(np.float32)
    loc = (rng.normal(size=(rows, dim)) * np.sqrt(np.maximum(1 - scale**2, 0.01))).astype(np.float32)
    return loc, scale


@pytest.fixture(scope="session")
def example(tmp_path_factory):
    """data/example.pt (4000 x 50 word vectors, 4 coding blocks) packed at 2 bits/weight, and its word vectors."""
    import bnncompress

    path = tmp_path_factory.mktemp("example") / "example2.bnc"
    bnncompress.pack("data/example.pt", path, bits=2)
    return path, bnncompress.load(path)["word_vectors"].copy()


@pytest.fixture(autouse=True)
def _every_archive_packed_decodes(monkeypatch):
    """Every archive a test packs is decoded whole right after it is written (the writer itself checks checksums
    and structure, not the coded words): an encoder change that writes undecodable words fails the test that
    packed them, not only the tests that load (the mutation hunt's ANS flush bound and uint16 indices)."""
    from bnncompress import ArchiveError, load, packing

    write = packing.write_archive

    def write_and_decode(output, records, *args, **kwargs):
        written = write(output, records, *args, **kwargs)
        if all(r.num_weights <= 1 << 24 for r in records) and len(records) <= 64:  # (not the large-input cases)
            archive = load(output)
            for name in archive.names:
                try:
                    archive[name]
                except ArchiveError as exc:
                    raise AssertionError(f"pack wrote an archive that does not decode: {exc}") from exc
        return written

    monkeypatch.setattr(packing, "write_archive", write_and_decode)

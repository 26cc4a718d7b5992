"""Crash safety, determinism, no unpickling, and nothing written for a failed pack."""

from __future__ import annotations

import inspect
import os
import pickle
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

import bnncompress
from bnncompress import BnnCompressError
from bnncompress.files import TEMP_SUFFIX


def _write_posterior(path, rows=3000, dim=100, seed=0):
    """A .npz posterior: the packs below run in child processes, and reading .npz needs no torch
    import (1.1 s a pack instead of 2.3 s; .pt reading is covered by the source tests)."""
    rng = np.random.default_rng(seed)
    loc = rng.normal(size=(rows, dim)).astype(np.float32)
    scale = rng.uniform(0.01, 1.0, size=(rows, dim)).astype(np.float32)
    np.savez(path, **{"w.loc": loc, "w.scale": scale})


def _pack_cmd(src, dst, lam):
    return [sys.executable, "-m", "bnncompress.cli", "pack", str(src), "-o", str(dst), "--lam", str(lam), "-q", "-f"]


def _temp_files(directory):
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(TEMP_SUFFIX))


@pytest.mark.slow
def test_sigkill_never_leaves_a_corrupt_archive(tmp_path):
    src, dst = tmp_path / "post.npz", tmp_path / "out.bnc"
    _write_posterior(src)
    references = {}
    durations = []
    for lam in (0.05, 0.5):
        start = time.perf_counter()
        subprocess.run(_pack_cmd(src, dst, lam), check=True)
        durations.append(time.perf_counter() - start)
        references[lam] = dst.read_bytes()
        assert _temp_files(tmp_path) == []  # a clean run leaves no temporary file
    assert references[0.05] != references[0.5]
    rng = random.Random(0)
    previous = references[0.5]
    for i in range(6):
        lam = (0.05, 0.5)[i % 2]
        proc = subprocess.Popen(_pack_cmd(src, dst, lam))
        time.sleep(rng.uniform(0.3, 1.1) * max(durations))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        now = dst.read_bytes()
        assert now in (previous, references[lam]), f"kill {i}: destination is neither the old nor the new archive"
        bnncompress.load(dst)  # and it loads
        previous = now
    for name in _temp_files(tmp_path):  # only our own temporary names can be left by a kill
        assert name.startswith(".out.bnc.") and name.endswith(TEMP_SUFFIX)


@pytest.mark.slow
def test_archives_are_byte_identical_across_processes_and_thread_counts(tmp_path):
    src = tmp_path / "post.npz"
    _write_posterior(src, rows=2000)
    bnncompress.pack(src, tmp_path / "in_process.bnc", bits=2.0)
    outputs = [tmp_path / "in_process.bnc"]
    for threads in ("1", "2"):
        env = dict(os.environ, NUMBA_NUM_THREADS=threads, OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
        out = tmp_path / f"threads{threads}.bnc"
        subprocess.run(
            [sys.executable, "-m", "bnncompress.cli", "pack", str(src), "-o", str(out), "--bits", "2", "-q"],
            check=True,
            env=env,
        )
        outputs.append(out)
    blobs = {p.read_bytes() for p in outputs}
    assert len(blobs) == 1


def test_loading_an_archive_never_unpickles(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    bnncompress.pack(
        {"w": (rng.normal(size=(50, 5)), np.full((50, 5), 0.1))},
        tmp_path / "a.bnc",
        vocab=[f"v{i}" for i in range(50)],
        lam=0.1,
    )

    def guarded(real):
        def call(*args, **kwargs):  # numba reads the index of its own compiled-kernel cache with pickle
            if any(os.sep + "numba" + os.sep in frame.filename for frame in inspect.stack()[1:4]):
                return real(*args, **kwargs)
            raise AssertionError("archive loading tried to unpickle")

        return call

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, guarded(getattr(pickle, name)))
    a = bnncompress.load(tmp_path / "a.bnc")
    assert a["w"].shape == (50, 5) and a.vocab[1] == "v1" and a.to_keyed_vectors()["v2"].shape == (5,)


BAD_POSTERIORS = {
    "nan mean": ({"w": (np.array([0.0, np.nan]), np.ones(2))}, None),
    "inf mean": ({"w": (np.array([np.inf, 0.0]), np.ones(2))}, None),
    "nan scale": ({"w": (np.zeros(2), np.array([np.nan, 1.0]))}, None),
    "inf scale": ({"w": (np.zeros(2), np.array([np.inf, 1.0]))}, None),
    "zero scale": ({"w": (np.zeros(2), np.array([0.0, 1.0]))}, None),
    "negative scale": ({"w": (np.zeros(2), np.array([-1.0, 1.0]))}, None),
    "empty": ({"w": (np.zeros((0, 3)), np.ones((0, 3)))}, None),
    "int dtype": ({"w": (np.zeros(2, dtype=np.int32), np.ones(2))}, None),
    "bool dtype": ({"w": (torch.zeros(2, dtype=torch.bool), torch.ones(2))}, None),
    "mismatched shapes": ({"w": (np.zeros((2, 3)), np.ones((3, 2)))}, None),
    "vocab duplicates": ({"w": (np.zeros((3, 2)), np.ones((3, 2)))}, ["a", "b", "a"]),
    "vocab empty line": ({"w": (np.zeros((3, 2)), np.ones((3, 2)))}, ["a", "", "b"]),
    "vocab fits nothing": ({"w": (np.zeros((3, 2)), np.ones((3, 2)))}, ["a", "b"]),
}


@pytest.mark.parametrize("case", sorted(BAD_POSTERIORS))
def test_failed_pack_writes_nothing(tmp_path, case):
    posterior, vocab = BAD_POSTERIORS[case]
    with pytest.raises(BnnCompressError) as err:
        bnncompress.pack(posterior, tmp_path / "out.bnc", vocab=vocab)
    assert "'w'" in str(err.value) or "vocab" in str(err.value).lower()
    assert list(tmp_path.iterdir()) == []

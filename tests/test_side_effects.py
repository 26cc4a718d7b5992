"""A library call leaves the caller's process as it was (a helper's hunt of side effects): no file held
open after a pack, no logging level, warnings filter, environment variable, random state or plotting
backend changed, also when two threads call at once."""

from __future__ import annotations

import logging
import os
import random
import threading
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest

import bnncompress
from bnncompress.packing import notes_unwarned

EXAMPLE = Path(__file__).parents[1] / "data" / "example.pt"


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else 0


@pytest.mark.parametrize("stream", [True, False])
def test_no_posterior_file_is_held_open_after_a_pack(tmp_path, stream):
    # Streamed HDF5 reads kept a handle per file for the process: 20 packs of 20 files left 20 files
    # open, a deleted posterior's space was not freed, and h5py could not write the file again.
    rng = np.random.default_rng(0)
    before = _open_fds()
    for i in range(3):
        path = tmp_path / f"p{i}.h5"
        with h5py.File(path, "w") as f:
            f["w/loc"] = rng.normal(size=(300, 10)).astype(np.float32)
            f["w/scale"] = np.full((300, 10), 0.1, np.float32)
        bnncompress.pack(path, tmp_path / "a.bnc", lam=0.5, stream=stream)
        with h5py.File(path, "w") as f:  # "unable to truncate a file which is already open"
            f["x"] = np.zeros(1)
    assert h5py.h5f.get_obj_count(h5py.h5f.OBJ_ALL, h5py.h5f.OBJ_FILE) == 0
    if before:
        assert _open_fds() <= before


def test_evaluating_from_two_threads_leaves_logging_and_warnings_as_they_were(tmp_path):
    # The gensim logger's level was set and put back, and a warnings filter pushed and popped: two
    # threads at once left the level at ERROR and an 'ignore RuntimeWarning' filter for the process.
    archive = tmp_path / "a.bnc"
    bnncompress.pack(EXAMPLE, archive, lam=1.0)
    logger = logging.getLogger("gensim.models.keyedvectors")
    level, filters = logger.level, list(warnings.filters)
    for _ in range(5):
        threads = [
            threading.Thread(target=bnncompress.evaluate, args=(archive,), kwargs={"metrics": ("ws353",)})
            for _ in range(2)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert logger.level == level and warnings.filters == filters and not logger.filters


def test_notes_are_unwarned_only_where_asked(tmp_path):
    post = {"w": (np.arange(40.0).reshape(20, 2), np.full((20, 2), 1e3))}  # collapses: a note
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with notes_unwarned():
            quiet = bnncompress.pack(post, tmp_path / "a.bnc", lam=10.0)
        loud = bnncompress.pack(post, tmp_path / "b.bnc", lam=10.0)
    assert quiet.warnings and quiet.warnings == loud.warnings
    assert [str(w.message) for w in caught] == list(loud.warnings)


@pytest.mark.slow  # starts a local Dask cluster
def test_a_local_cluster_leaves_the_environment_and_random_state(tmp_path):
    # Its nannies set OMP_NUM_THREADS=1, PYTHONHASHSEED, ... in this process's environment (inherited by
    # every process started afterwards), and starting it drew from random.
    pytest.importorskip("distributed")
    environment = dict(os.environ)
    random.seed(0)
    expected = random.random()
    random.seed(0)
    bnncompress.pack(EXAMPLE, tmp_path / "a.bnc", lam=1.0, workers=1)
    assert random.random() == expected
    assert dict(os.environ) == environment


def test_a_sweep_with_figures_keeps_the_callers_plotting_backend(tmp_path):
    matplotlib = pytest.importorskip("matplotlib")
    backend = matplotlib.get_backend()
    matplotlib.rcParams["backend"] = "svg"  # not Agg, which the sweep switched every caller to
    try:
        bnncompress.sweep(EXAMPLE, ["float16"], [2], restrict_vocab=300, plot_path=tmp_path / "rd.png")
        assert matplotlib.get_backend() == "svg"
        assert (tmp_path / "rd-ws353.png").read_bytes().startswith(b"\x89PNG")
    finally:
        matplotlib.rcParams["backend"] = backend


def test_a_pack_leaves_no_thread_of_its_own_running(tmp_path):
    # The threads that run a pack's tasks are kept for the pack (it maps a few dozen times) and stopped with it.
    rng = np.random.default_rng(1)
    posterior = {"w": (rng.normal(size=(3000, 20)).astype(np.float32), np.full((3000, 20), 0.1, np.float32))}
    before = set(threading.enumerate())
    bnncompress.pack(posterior, tmp_path / "a.bnc", bits=2)
    assert [t.name for t in set(threading.enumerate()) - before if t.name.startswith("bnncompress")] == []

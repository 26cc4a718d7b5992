"""Packs at once in one program (the packs hunt): a model's trace never mixes with another pack's, and what a pack
gives back of the process's state (Pyro's param store, random states, the environment a local Dask cluster sets)
undoes nothing another thread did meanwhile."""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
import warnings

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch

import bnncompress
from bnncompress import OptionError

CALLS = {"a": 0, "b": 0}


def _positive_model():  # (its first call takes a moment: the other pack's trace starts meanwhile)
    CALLS["a"] += 1
    pyro.sample("w_a", dist.Normal(torch.zeros(50), 1.0).to_event(1))
    time.sleep(0.3 if CALLS["a"] == 1 else 0)
    pyro.sample("sigma", dist.LogNormal(torch.zeros(50), 1.0).to_event(1))
    time.sleep(0.5 if CALLS["a"] == 1 else 0)


def _real_model():
    CALLS["b"] += 1
    pyro.sample("w_b", dist.Normal(torch.zeros(50), 1.0).to_event(1))
    time.sleep(0.4 if CALLS["b"] == 1 else 0)


def _pack(*args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return bnncompress.pack(*args, **kwargs)


def test_two_packs_with_models_at_once_record_their_own_sites(tmp_path):
    """Pyro's handler stack is the process's: two traces at once put one model's sites in the other's trace, so a
    positive site loaded as its log (-1.0 for 0.368) and each archive's notes named the other model's sites."""
    post_a = {"w_a": (np.zeros(50), np.ones(50)), "sigma": (np.full(50, -1.0), np.full(50, 0.01))}
    post_b = {"w_b": (np.zeros(50), np.ones(50))}
    _pack(post_a, tmp_path / "alone.bnc", model=_positive_model, lam=0.1)  # (as the packs of a running program)
    CALLS.update(a=0, b=0)
    results = {}

    def pack(name, posterior, model, delay):
        time.sleep(delay)
        results[name] = _pack(posterior, tmp_path / f"{name}.bnc", model=model, lam=0.1)

    jobs = (("a", post_a, _positive_model, 0.0), ("b", post_b, _real_model, 0.1))
    threads = [threading.Thread(target=pack, args=job) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert np.allclose(bnncompress.load(tmp_path / "a.bnc")["sigma"], np.exp(-1.0), rtol=1e-3)
    assert not [w for r in results.values() for w in r.warnings if "site" in w]  # (no other model's sites)


def _slow_model():
    pyro.sample("w", dist.Normal(torch.zeros(20), 1.0).to_event(1))
    time.sleep(0.4)


def test_a_pack_tracing_a_model_keeps_another_threads_param_and_draws(tmp_path):
    """The trace's clean-up deleted every Pyro param made meanwhile (another thread's too) and rewound torch's random
    state, so another thread's draws came again."""
    posterior = {"w": (np.zeros(20), np.ones(20))}
    thread = threading.Thread(target=_pack, args=(posterior, tmp_path / "p.bnc"), kwargs={"model": _slow_model})
    thread.start()
    time.sleep(0.1)
    pyro.param("another_threads_param", torch.ones(3))
    first = torch.randn(3)
    thread.join(60)
    try:
        assert "another_threads_param" in pyro.get_param_store()
        assert not torch.equal(torch.randn(3), first)
    finally:
        pyro.get_param_store().__delitem__("another_threads_param")


def _pack_with_workers(path):
    try:
        _pack({"w": (np.zeros((64, 8)), np.ones((64, 8)))}, path, workers=1)
    except OptionError as exc:
        return str(exc)
    return "packed"


@pytest.mark.slow  # starts a local Dask cluster of worker processes
def test_a_local_cluster_gives_back_only_what_it_set(tmp_path):
    """A Dask pack put back a snapshot of the whole environment: a variable another thread set meanwhile was
    deleted, and two overlapping packs left OMP_NUM_THREADS=1, PYTHONHASHSEED, ... in it for good."""
    pytest.importorskip("distributed")
    before = dict(os.environ)
    rng = np.random.default_rng(0)
    posterior = {"w": (rng.normal(size=(2000, 32)), rng.uniform(0.01, 1, (2000, 32)))}
    packs = [
        threading.Thread(target=_pack, args=(posterior, tmp_path / f"d{i}.bnc"), kwargs={"bits": 2, "workers": 1})
        for i in range(2)
    ]
    try:
        packs[0].start()
        time.sleep(1.0)
        os.environ["BNNCOMPRESS_TEST_SET_MEANWHILE"] = "kept"
        packs[1].start()
        for pack in packs:
            pack.join(120)
        assert os.environ.get("BNNCOMPRESS_TEST_SET_MEANWHILE") == "kept"
        assert {k: v for k, v in os.environ.items() if before.get(k) != v} == {"BNNCOMPRESS_TEST_SET_MEANWHILE": "kept"}
    finally:
        os.environ.pop("BNNCOMPRESS_TEST_SET_MEANWHILE", None)


def test_a_local_cluster_in_a_daemonic_process_is_one_line(tmp_path):
    """In a multiprocessing.Pool worker distributed said only 'Nanny failed to start.' (a RuntimeError)."""
    with multiprocessing.get_context("fork").Pool(1) as pool:
        said = pool.apply(_pack_with_workers, (str(tmp_path / "w.bnc"),))
    assert "cannot start in a daemonic process" in said


def _sites_in_child(queue):
    from bnncompress.modelsites import model_sites

    queue.put([name for name, _, _ in model_sites(_slow_model)])


def test_a_child_forked_while_another_thread_traces_a_model_can_trace(tmp_path):
    """The trace's lock, held by another thread at the fork, was never released in the child (it hung on its first
    trace), and Pyro's handler stack there kept the tracer's handlers."""
    from bnncompress.modelsites import model_sites

    tracing = threading.Thread(target=model_sites, args=(_slow_model,))
    tracing.start()
    time.sleep(0.1)
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_sites_in_child, args=(queue,))
    child.start()
    child.join(20)
    tracing.join(20)
    alive = child.is_alive()
    if alive:
        child.kill()
    assert not alive and queue.get(timeout=5) == ["w"]

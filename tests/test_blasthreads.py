"""A pack's D x D decompositions run on one BLAS thread when no other thread could tell; the limits come back."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from threadpoolctl import ThreadpoolController, threadpool_limits

import bnncompress
from bnncompress.blasthreads import one_blas_thread


def _blas_threads() -> list[int]:
    """Threads of numpy's BLAS (faiss, once imported, brings an OpenBLAS of its own: not numpy's)."""
    libs = ThreadpoolController().select(user_api="blas").info()
    numpys = [lib for lib in libs if "numpy" in lib["filepath"]] or libs  # (pip's wheels: numpy.libs/)
    return [lib["num_threads"] for lib in numpys]


@pytest.fixture
def two_blas_threads():
    """Skips where the process's BLAS runs on one thread anyway (a 1-core machine, OPENBLAS_NUM_THREADS=1)."""
    if not _blas_threads() or min(_blas_threads()) < 2:
        pytest.skip("the process's BLAS is on one thread already")
    return min(_blas_threads())


def test_the_transforms_decompositions_run_on_one_blas_thread(tmp_path, monkeypatch, two_blas_threads):
    seen: dict[str, list[int]] = {}

    def spy(name):
        real = getattr(np.linalg, name)

        def call(*args, **kwargs):
            seen.setdefault(name, []).extend(_blas_threads())
            return real(*args, **kwargs)

        monkeypatch.setattr(np.linalg, name, call)

    for name in ("eigh", "inv", "qr"):
        spy(name)
    rng = np.random.default_rng(3)
    loc = (rng.normal(size=(4000, 16)) @ rng.normal(size=(16, 16))).astype(np.float32)  # rotated: n >= 160 d
    scale = np.full_like(loc, 0.1)
    for reflectors in (False, True):  # int8 entries (an inverse), reflectors (a QR factorisation)
        bnncompress.pack({"w": (loc, scale)}, tmp_path / "w.bnc", lam=1.0, options={"reflectors": reflectors})
        assert bnncompress.load(tmp_path / "w.bnc").record("w").params["rotated"]
    assert set(seen) == {"eigh", "inv", "qr"} and {n for ns in seen.values() for n in ns} == {1}, seen
    assert min(_blas_threads()) == two_blas_threads  # the process's limit, back


def test_with_other_threads_alive_a_pack_leaves_the_blas_limit_alone(tmp_path, monkeypatch, two_blas_threads):
    """Another thread's threadpoolctl limit overlapping a section would take the section's one thread for
    the process's own setting and put it back for good: with other threads, sections change nothing."""
    seen: list[int] = []
    real = np.linalg.eigh
    monkeypatch.setattr(np.linalg, "eigh", lambda *a, **k: seen.extend(_blas_threads()) or real(*a, **k))
    rng = np.random.default_rng(4)
    loc = (rng.normal(size=(4000, 16)) @ rng.normal(size=(16, 16))).astype(np.float32)
    scale = np.full_like(loc, 0.1)
    inside, leave = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def pack_in_a_thread():
        try:
            bnncompress.pack({"w": (loc, scale)}, tmp_path / "w.bnc", lam=1.0)
        except BaseException as exc:
            errors.append(exc)
        inside.set()
        leave.wait(60)

    with threadpool_limits(limits=1, user_api="blas"):  # the caller's own limit, held across the pack
        thread = threading.Thread(target=pack_in_a_thread)
        thread.start()
        assert inside.wait(120) and not errors, errors
    try:
        assert seen and set(seen) == {1}  # the caller's limit held, not the section's
        assert min(_blas_threads()) == two_blas_threads  # and it came back when the caller's block ended
        seen.clear()
        bnncompress.pack({"w": (loc, scale)}, tmp_path / "m.bnc", lam=1.0)  # the thread still alive
        assert seen and set(seen) == {two_blas_threads}  # (not alone: the process's threads, as they are)
    finally:
        leave.set()
        thread.join(30)
    assert min(_blas_threads()) == two_blas_threads


def test_a_callers_limit_overlapping_a_section_in_another_thread_is_not_left_behind(two_blas_threads):
    inside, leave = threading.Event(), threading.Event()

    def section():  # started first, ended first: its one thread was taken for the caller's original
        with one_blas_thread():
            inside.set()
            leave.wait(30)

    thread = threading.Thread(target=section)
    thread.start()
    assert inside.wait(30)
    with threadpool_limits(limits=two_blas_threads, user_api="blas"):
        leave.set()
        thread.join(30)
    assert min(_blas_threads()) == two_blas_threads  # (was 1 for good)


def test_a_section_inside_a_section_keeps_one_thread_and_the_outer_one_restores(two_blas_threads):
    with one_blas_thread():
        with one_blas_thread():  # (the lock is this thread's already)
            assert set(_blas_threads()) == {1}
        assert set(_blas_threads()) == {1}
    assert min(_blas_threads()) == two_blas_threads

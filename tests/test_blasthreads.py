"""A pack's D x D decompositions run on one BLAS thread, whatever threads the process has; the limits come back."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from threadpoolctl import ThreadpoolController

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


def test_packs_in_threads_decompose_on_one_thread_and_leave_the_process_as_is(tmp_path, monkeypatch, two_blas_threads):
    seen: list[int] = []
    real = np.linalg.eigh
    monkeypatch.setattr(np.linalg, "eigh", lambda *a, **k: seen.extend(_blas_threads()) or real(*a, **k))
    rng = np.random.default_rng(4)
    loc = (rng.normal(size=(4000, 16)) @ rng.normal(size=(16, 16))).astype(np.float32)
    scale = np.full_like(loc, 0.1)
    finished, stay = threading.Semaphore(0), threading.Event()
    errors: list[BaseException] = []

    def pack_and_stay(i):  # the thread lives on after its packs, as a server's would
        try:
            for k in range(3):
                bnncompress.pack({"w": (loc, scale)}, tmp_path / f"{i}-{k}.bnc", lam=1.0)
        except BaseException as exc:
            errors.append(exc)
        finished.release()
        stay.wait(60)

    threads = [threading.Thread(target=pack_and_stay, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    try:
        assert all(finished.acquire(timeout=120) for _ in threads) and not errors, errors
        assert len(seen) >= 6 and set(seen) == {1}, seen
        assert min(_blas_threads()) == two_blas_threads  # the process's limit, back
        with ThreadpoolController().limit(limits=1, user_api="blas"):  # and this thread can still set it
            assert set(_blas_threads()) == {1}
        assert min(_blas_threads()) == two_blas_threads
    finally:
        stay.set()
        for t in threads:
            t.join(30)


@pytest.mark.slow
def test_an_archive_does_not_depend_on_the_threads_the_process_has(tmp_path, two_blas_threads):
    """A covariance of rank 64 in 512 dimensions: its eigenvectors differ on one and on two BLAS threads (the
    archives did, with the limit set only while no other thread was alive)."""
    rng = np.random.default_rng(1)
    loc = (rng.normal(size=(20000, 64)) @ rng.normal(size=(64, 512))).astype(np.float32)
    posterior = {"w": (loc, np.full_like(loc, 0.05))}
    bnncompress.pack(posterior, tmp_path / "alone.bnc", lam=1.0, options={"transform": "pca"})
    stop = threading.Event()
    other = threading.Thread(target=stop.wait, args=(120,), name="a-library-thread")
    other.start()
    try:
        bnncompress.pack(posterior, tmp_path / "crowd.bnc", lam=1.0, options={"transform": "pca"})
    finally:
        stop.set()
        other.join(30)
    assert (tmp_path / "crowd.bnc").read_bytes() == (tmp_path / "alone.bnc").read_bytes()


def test_a_section_inside_a_section_keeps_one_thread_and_the_outer_one_restores(two_blas_threads):
    with one_blas_thread():
        with one_blas_thread():  # (the lock is this thread's already)
            assert set(_blas_threads()) == {1}
        assert set(_blas_threads()) == {1}
    assert min(_blas_threads()) == two_blas_threads

"""The local executor: results in order, its threads kept across maps and stopped on close, and a map
that is abandoned (a task failed, or the caller stopped reading) runs none of its tasks afterwards."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from bnncompress.executors import LocalExecutor


def _which_thread(i: int) -> tuple[int, int]:
    time.sleep(0.001)
    return i, threading.get_ident()


def test_results_come_in_order_and_the_threads_serve_every_map():
    with LocalExecutor(2) as executor:
        first = list(executor.map(_which_thread, [(i,) for i in range(8)]))
        second = list(executor.map(_which_thread, [(i,) for i in range(8)]))
        assert [i for i, _ in first] == list(range(8)) == [i for i, _ in second]
        threads = {t for _, t in first} | {t for _, t in second}
        assert len(threads) <= 2 and threading.get_ident() not in threads
        names = [t.name for t in threading.enumerate() if t.ident in threads]
    assert names and all(t.ident not in threads for t in threading.enumerate())  # stopped on close


def test_one_slot_runs_every_task_in_the_calling_thread():
    executor = LocalExecutor(1)
    assert {t for _, t in executor.map(_which_thread, [(i,) for i in range(3)])} == {threading.get_ident()}


def _fail_or_record(i: int, ran: list) -> int:
    if i == 1:
        raise ValueError("task 1 failed")
    time.sleep(0.02)
    ran.append(i)
    return i


def test_an_abandoned_map_runs_none_of_its_tasks_afterwards():
    ran: list[int] = []
    with LocalExecutor(2) as executor:
        results = executor.map(_fail_or_record, [(i, ran) for i in range(20)])
        with pytest.raises(ValueError, match="task 1 failed"):
            list(results)
        done = len(ran)
        time.sleep(0.2)
        assert len(ran) == done < 20  # the tasks not started were cancelled, the running ones finished
        ran.clear()
        results = executor.map(_fail_or_record, [(i, ran) for i in range(2, 20)])
        assert next(results) == 2
        results.close()  # the caller stops reading
        done = len(ran)
        time.sleep(0.2)
        assert len(ran) == done < 18


def _raises(exc):
    raise exc


class _OtherRelease:
    """A client whose one worker runs other bnncompress sources."""

    def wait_for_workers(self, n, timeout=None):
        pass

    def scheduler_info(self):
        return {"workers": {"tcp://w1": {}}}

    def run(self, fn):
        return {"tcp://w1": "another digest"}


def _sleeps(seconds):
    time.sleep(seconds)
    return seconds


def test_a_dask_cluster_that_cannot_pack_is_one_line_and_a_tasks_own_errors_pass(monkeypatch):
    """A scheduler without workers made a pack wait for ever, silently; a worker of another bnncompress or a task's
    cancellation ended the CLI in Dask's traceback (daskfail hunt). A task's own errors pass as they were raised (the
    review: a TimeoutError of its own made the first version poll for ever), and workers may join late."""
    distributed = pytest.importorskip("distributed")
    from bnncompress import OptionError, PosteriorError, clusters

    monkeypatch.setattr(clusters, "WORKERLESS_SECONDS", 2)
    with distributed.LocalCluster(n_workers=0, processes=False, dashboard_address=":0") as cluster:
        with distributed.Client(cluster) as client:
            with pytest.raises(OptionError, match="no worker joined the Dask scheduler within 2 s"):
                clusters.DaskExecutor(client)
            threading.Timer(0.5, cluster.scale, (1,)).start()  # (a worker that joins late)
            dask = clusters.DaskExecutor(client)
            for error in (TimeoutError("the task's own"), PosteriorError("a posterior"), ValueError("a bug")):
                with pytest.raises(type(error), match=str(error)):
                    list(dask.map(_raises, [(error,)]))
            monkeypatch.setattr(clusters, "WORKERLESS_POLL", 0.2)
            assert list(dask.map(_sleeps, [(0.5,), (0.1,)])) == [0.5, 0.1]  # (polled, not cut short)
    with pytest.raises(OptionError, match=r"tcp://w1\) runs other bnncompress source files"):
        clusters.DaskExecutor(_OtherRelease())
    with pytest.raises(OptionError, match="packing on the Dask cluster failed .FutureCancelledError"):
        with clusters.cluster_errors():
            raise distributed.client.FutureCancelledError("k", "reason")
    with pytest.raises(ValueError, match="a task"), clusters.cluster_errors():
        raise ValueError("a task's")


def test_a_posterior_file_missing_on_a_worker_is_said_so(tmp_path):
    """A worker without the file (a relative path, a worker started elsewhere) was told the file 'was changed while it
    was read' and to pack again, which failed the same way."""
    import numpy as np

    from bnncompress import PosteriorError
    from bnncompress.sources import open_posterior

    np.save(tmp_path / "w.loc.npy", np.zeros((4, 2), np.float32))
    np.save(tmp_path / "w.scale.npy", np.ones((4, 2), np.float32))
    tensor = open_posterior(tmp_path).tensors["w"]  # (an .npy directory: read by rows, stamped)
    (tmp_path / "w.loc.npy").unlink()
    with pytest.raises(PosteriorError, match="cannot be found here"):
        tensor.check_unchanged()


class _NoWorkerComes:
    """A client whose workers never come: distributed's wait_for_workers raises asyncio's TimeoutError."""

    def wait_for_workers(self, n, timeout=None):
        raise asyncio.TimeoutError(f"Only 0/{n} workers arrived after {timeout}")


def test_dask_timeouts_are_caught_where_asyncio_has_a_timeout_class_of_its_own(monkeypatch):
    """Before Python 3.11 asyncio.TimeoutError is not TimeoutError, and distributed raises asyncio's: on 3.10 a
    scheduler without workers ended a pack in a 43-line traceback, and a task running past one poll (5 s) ended the
    pack (Python-versions check). Here asyncio gets a TimeoutError class of its own, as on 3.10."""
    distributed = pytest.importorskip("distributed")
    from bnncompress import OptionError, clusters

    monkeypatch.setattr(asyncio, "TimeoutError", type("TimeoutError", (Exception,), {}))
    with pytest.raises(OptionError, match="no worker joined the Dask scheduler"):
        clusters.DaskExecutor(_NoWorkerComes())
    polls = []

    def wait(futures, timeout=None):  # (distributed.wait: the task still runs at the first poll)
        polls.append(timeout)
        if len(polls) == 1:
            raise asyncio.TimeoutError("still running")

    class Future:
        def done(self):
            return len(polls) > 1

        def result(self):
            return 7

    monkeypatch.setattr(distributed, "wait", wait)
    dask = object.__new__(clusters.DaskExecutor)
    dask.client = _OtherRelease()  # (one worker)
    assert dask._result(Future()) == 7 and len(polls) == 2


def test_a_cluster_task_lets_go_of_what_its_copy_of_a_fit_kept():
    """A Dask worker holds a task's arguments as long as its result: each copy of a fitted transform kept up
    to 256 MiB of rotated rows, and a 2.15e9-weight pack's two workers grew past 9.8 GB each (scale hunt)."""
    import pickle

    from bnncompress.clusters import cluster_task
    from bnncompress.inmemory import fit_in_memory
    from bnncompress.posterior import TensorPosterior
    from bnncompress.quantizers import get_quantizer

    rng = np.random.default_rng(0)
    loc, scale = rng.normal(size=(3000, 20)).astype(np.float32), np.full((3000, 20), 0.1, np.float32)
    fitted = fit_in_memory(get_quantizer("vbq-transform", device="cpu"), TensorPosterior(loc, scale)).fitted
    copy = pickle.loads(pickle.dumps(fitted))  # (what a worker gets)

    def fills(worker_copy, args):
        for f in (worker_copy, *args):
            assert f.kept.put("rows", np.zeros(1000))
        return "done"

    assert cluster_task(fills, copy, (fitted,)) == "done"  # (map_task passes a method's arguments as a tuple)
    assert copy.kept.get("rows") is None  # the worker's copy: let go
    assert fitted.kept.get("rows") is not None  # this process's own fit keeps its rows for the next pass

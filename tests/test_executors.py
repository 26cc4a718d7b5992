"""The local executor: results in order, its threads kept across maps and stopped on close, and a map
that is abandoned (a task failed, or the caller stopped reading) runs none of its tasks afterwards."""

from __future__ import annotations

import threading
import time

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

"""Dask clusters as executors: :class:`DaskExecutor` runs a pack's tasks on a ``distributed.Client``'s workers;
:func:`executor_for` starts a local cluster or reaches a running one (or runs the pack on this process's threads);
what goes wrong with a cluster (no scheduler, no workers, another bnncompress on them, Dask's own failures) is
one :class:`~bnncompress.OptionError` line.

Example:
    >>> with executor_for() as executor:  # neither workers nor a scheduler: threads of this process
    ...     list(executor.map(pow, [(2, 3), (3, 2)]))
    [8, 9]
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import multiprocessing
import operator
import os
import random
import socket
import struct
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import CancelledError
from pathlib import Path
from typing import Any

from . import executors
from .errors import OptionError
from .executors import Executor, LocalExecutor, single_threaded
from .forksafe import runs_alone
from .numbaenv import check_numba_environment

#: Seconds to connect to a Dask scheduler and hear its greeting.
CONNECT_SECONDS = 5
#: A Dask pack checks this often that its cluster has workers, and gives up after this long without (was: never).
WORKERLESS_POLL, WORKERLESS_SECONDS = 5, 60


def _timeouts() -> tuple[type[BaseException], ...]:
    """The timeouts Dask raises: ``TimeoutError``, and asyncio's, another class before Python 3.11 (there a cluster
    without workers ended a pack in a 43-line traceback, and a task running past a poll ended it)."""
    import asyncio  # (in the process already: distributed imports it; a local pack does not need it)

    return (TimeoutError, asyncio.TimeoutError)


class DaskExecutor:
    """Runs tasks on a ``distributed.Client``'s workers, results in order."""

    def __init__(self, client: Any):
        self.client = client
        try:  # (workers may join late: an adaptive cluster starts at none; with none a pack waited for ever, silently)
            client.wait_for_workers(1, timeout=WORKERLESS_SECONDS)
        except _timeouts():
            raise OptionError(
                f"no worker joined the Dask scheduler within {WORKERLESS_SECONDS} s; start some (dask worker ADDRESS)"
            ) from None
        workers = client.scheduler_info().get("workers", {})
        try:  # (a worker of another release failed deep in the pipeline with a bare traceback)
            ours = package_digest()
            other = sorted(str(a) for a, digest in client.run(package_digest).items() if digest != ours)
        except Exception as exc:  # (one whose bnncompress has no package_digest, or none at all)
            raise OptionError(
                f"could not ask the Dask workers which bnncompress they run ({type(exc).__name__}: {_reason(exc)}); "
                "install this one on every worker"
            ) from None
        if other:
            raise OptionError(
                f"a Dask worker ({', '.join(other[:3])}) runs other bnncompress source files than this process (a "
                "digest of the package's .py files differs); install this one on every worker"
            )
        self.slots = max(len(workers), 1)
        self.task_symbols = 4 * executors.TASK_SYMBOLS  # fewer, larger tasks: scheduling costs a few ms each
        self.keep_bytes = executors.KEEP_BYTES * self.slots  # kept results stay on the workers

    def scatter(self, obj: Any) -> Any:
        return self.client.scatter(obj, broadcast=False, hash=False)

    def map(self, fn: Callable[..., Any], tasks: Sequence[tuple]) -> Iterator[Any]:
        with cluster_errors():
            futures = [self.client.submit(cluster_task, fn, *args, pure=False) for args in tasks]
        try:
            for i in range(len(futures)):
                yield self._result(futures[i])
                futures[i] = None  # lets the cluster forget the result
        finally:
            with contextlib.suppress(Exception):  # (a client the caller closed: its error is not the one to say)
                self.client.cancel([f for f in futures if f is not None])

    def map_keep(self, fn: Callable[..., tuple[Any, Any]], tasks: Sequence[tuple]) -> Iterator[tuple[Any, Any]]:
        with cluster_errors():
            futures = [self.client.submit(cluster_task, fn, *args, pure=False) for args in tasks]
        for i in range(len(futures)):
            with cluster_errors():
                result = self.client.submit(operator.getitem, futures[i], 0, pure=False)
                kept = self.client.submit(operator.getitem, futures[i], 1, pure=False)
            futures[i] = None
            yield self._result(result), kept

    def _result(self, future: Any) -> Any:
        """The task's result, its own errors as it raised them (:func:`cluster_errors`); no worker left for
        WORKERLESS_SECONDS: one :class:`OptionError` line."""
        from distributed import wait as done_within  # (distributed is installed: the caller made a Client)

        alone_since = None
        with cluster_errors():
            while True:
                try:
                    done_within([future], timeout=WORKERLESS_POLL)
                    return future.result()
                except _timeouts():  # (still running, or no worker left to run it; not the task's: it is not done)
                    if future.done():
                        raise
                try:
                    workers = self.client.scheduler_info().get("workers")
                except Exception:  # (the scheduler gone: the future is cancelled soon)
                    workers = None
                alone_since = None if workers else alone_since or time.monotonic()
                if alone_since and time.monotonic() - alone_since >= WORKERLESS_SECONDS:
                    raise OptionError(
                        f"the Dask cluster has had no workers for {WORKERLESS_SECONDS} s; start some, or pack locally"
                    )


def cluster_task(fn: Callable[..., Any], *args: Any) -> Any:
    """A task on a worker (:func:`~bnncompress.executors.single_threaded`), after which what its copies of
    its fits kept for their passes is let go (``kept.end_task()``: a fitted transform's rotated rows): the worker
    holds a task's arguments as long as its result, so a 2.15e9-weight pack on two workers grew past 9.8 GB each."""
    try:
        return single_threaded(fn, *args)
    finally:
        for held in (a for arg in args for a in (arg if isinstance(arg, tuple) else (arg,))):
            end = getattr(getattr(held, "kept", None), "end_task", None)  # (a fit's PassData)
            if callable(end):
                end()


def package_digest() -> str:
    """A digest of the package's source files: the same code gives the same digest on every host."""
    root, digest = Path(__file__).parent, hashlib.sha256()
    for source in sorted(root.rglob("*.py")):
        digest.update(source.relative_to(root).as_posix().encode() + b"\0" + source.read_bytes())
    return digest.hexdigest()[:16]


@contextlib.contextmanager
def cluster_errors() -> Iterator[None]:
    """Dask's own failures (a cancelled future: the scheduler gone; a killed worker; a closed connection) as one
    :class:`OptionError` line; a task's own errors as it raised them."""
    try:
        yield
    except Exception as exc:
        if not (isinstance(exc, CancelledError) or type(exc).__module__.split(".")[0] in ("distributed", "tornado")):
            raise
        raise OptionError(
            f"packing on the Dask cluster failed ({type(exc).__name__}: {_reason(exc)}); check that the scheduler "
            "and workers run"
        ) from None


def _import_distributed() -> Any:
    try:
        import distributed
    except ImportError:
        raise OptionError("packing on Dask needs it installed: pip install 'bnncompress[dask]'") from None
    return distributed


@contextlib.contextmanager
def executor_for(workers: int | None = None, scheduler: Any = None) -> Iterator[Executor]:
    """Threads of this process (neither given), a new local Dask cluster of ``workers``
    single-threaded processes, or the cluster at ``scheduler`` (an address or a ``distributed.Client``)."""
    check_numba_environment()
    if workers is None and scheduler is None:
        with LocalExecutor() as executor:
            yield executor
        return
    if scheduler is not None and workers is not None:
        raise OptionError("give either workers (a local cluster) or scheduler (an existing one), not both")
    distributed = _import_distributed()
    if isinstance(scheduler, distributed.Client):
        yield DaskExecutor(scheduler)
        return
    if scheduler is not None:
        address = probe_scheduler(scheduler, CONNECT_SECONDS)
        try:
            client = distributed.Client(address, timeout=f"{CONNECT_SECONDS}s")
        except (OSError, *_timeouts(), MemoryError, ValueError, TypeError) as exc:
            raise OptionError(
                f"cannot connect to the Dask scheduler at {scheduler} ({_reason(exc)}); check «scheduler»"
            ) from None
        with client:
            yield DaskExecutor(client)
        return
    check_workers(workers)
    if multiprocessing.current_process().daemon:  # (distributed said only "Nanny failed to start.")
        raise OptionError(
            "a local Dask cluster cannot start in a daemonic process (a multiprocessing.Pool worker may not have "
            "child processes); pack without «workers» there, or give «scheduler» of a running cluster"
        )
    with _callers_state_kept() as started:
        with distributed.LocalCluster(  # a task's error is re-raised here as one line: not logged by workers too
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=":0",
            silence_logs=logging.CRITICAL,
        ) as c:
            started()
            with distributed.Client(c) as client:
                yield DaskExecutor(client)


@contextlib.contextmanager
def _callers_state_kept() -> Iterator[Callable[[], None]]:
    """Give back the environment, ``random``'s state and the logging handlers a local cluster changes: its
    nannies set OMP_NUM_THREADS=1, PYTHONHASHSEED, ... in ``os.environ``, its scheduler draws from ``random``, each
    cluster adds handlers to distributed's loggers. Yields ``started()``, to call once the cluster is up: the variables
    it set then are given back, each only if it still has the cluster's value (a whole snapshot put back undid other
    threads' variables); ``random`` only if no other thread runs (Dask's are daemons)."""
    environment, state = dict(os.environ), random.getstate()
    handlers = {name: list(logger.handlers) for name, logger in _distributed_loggers()}
    changed: dict[str, str] = {}
    cluster_up = []

    def started() -> None:  # (only the variables the cluster sets: another thread may set others meanwhile)
        import dask

        theirs = {"PYTHONHASHSEED", "__DASK_PARENT_PID"}  # (the nannies' own, and distributed.proctitle's)
        for setting in ("distributed.nanny.pre-spawn-environ", "distributed.nanny.environ"):
            theirs.update(dask.config.get(setting, default={}) or {})
        changed.update({k: v for k, v in os.environ.items() if k in theirs and environment.get(k) != v})
        cluster_up.append(True)

    try:
        yield started
    finally:
        if not cluster_up:  # (it failed to start: what changed since)
            started()
        for key, value in changed.items():
            if os.environ.get(key) == value:
                if key in environment:
                    os.environ[key] = environment[key]
                else:
                    del os.environ[key]
        if runs_alone():
            random.setstate(state)
        for name, logger in _distributed_loggers():
            for handler in [h for h in logger.handlers if h not in handlers.get(name, [])]:
                logger.removeHandler(handler)


def _distributed_loggers() -> list[tuple[str, logging.Logger]]:
    return [
        (name, logger)
        for name, logger in list(logging.Logger.manager.loggerDict.items())
        if name.startswith("distributed") and isinstance(logger, logging.Logger)
    ]


def check_workers(workers: Any) -> None:
    """A local cluster needs 1 to 1024 worker processes."""
    if not (isinstance(workers, int) and not isinstance(workers, bool) and 1 <= workers <= 1024):
        raise OptionError(f"workers must be an integer from 1 to 1024, got {workers!r}")


def check_scheduler_address(address: Any) -> tuple[str, int]:
    """A Dask scheduler address we can connect to: ``tcp://HOST:PORT`` or ``HOST:PORT`` (an
    IPv6 host in brackets); returns ``(host, port)``. Other schemes (tls://, ucx://, inproc://, ...)
    need a configuration or a process of their own: pass a ``distributed.Client`` for those."""
    text = str(address)
    scheme, sep, rest = text.partition("://")
    if not sep:
        scheme, rest = "tcp", text
    if scheme != "tcp":
        raise OptionError(
            f"scheduler {text!r} uses {scheme}://, which bnncompress cannot connect to; "
            "give tcp://HOST:PORT (or, from Python, a distributed.Client)"
        )
    host, colon, port = rest.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not (colon and host and "/" not in rest and port.isdigit() and 0 < int(port) < 65536):
        raise OptionError(f"scheduler {text!r} is not a Dask scheduler address; give tcp://HOST:PORT")
    return host, int(port)


def probe_scheduler(address: Any, seconds: float = CONNECT_SECONDS) -> str:
    """Check within ``seconds`` that a Dask scheduler answers at ``address`` (it greets every new
    connection with a message: 8 bytes of length, then the message), so that a wrong peer is one
    line, not a hang (distributed waits for the greeting without a time limit) or a huge allocation
    (it trusts the length); returns the ``tcp://`` address."""
    host, port = check_scheduler_address(address)
    connected = False
    try:
        with socket.create_connection((host, port), timeout=seconds) as sock:
            connected, greeting = True, b""
            while len(greeting) < 8:
                chunk = sock.recv(8 - len(greeting))
                if not chunk:
                    break
                greeting += chunk
    except TimeoutError:
        if not connected:  # (nothing answered the connection: not a peer that stayed silent)
            raise OptionError(
                f"cannot connect to the Dask scheduler at {address} (no answer within {seconds:g} s); check «scheduler»"
            ) from None
        raise OptionError(
            f"the peer at {address} sent no Dask greeting within {seconds:g} s; check that «scheduler» is a scheduler"
        ) from None
    except OSError as exc:
        raise OptionError(
            f"cannot connect to the Dask scheduler at {address} ({_reason(exc)}); check «scheduler»"
        ) from None
    if len(greeting) < 8 or not 0 < struct.unpack("<Q", greeting)[0] <= 1 << 20:
        raise OptionError(
            f"the peer at {address} is not a Dask scheduler (it answered {greeting!r}); check «scheduler»"
        )
    return f"tcp://[{host}]:{port}" if ":" in host else f"tcp://{host}:{port}"


def _reason(exc: BaseException) -> str:
    return (getattr(exc, "strerror", None) or str(exc) or type(exc).__name__).splitlines()[0][:120]

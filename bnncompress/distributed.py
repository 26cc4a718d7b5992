"""Packing on a Dask cluster: the blockwise pack's tasks run on dask.distributed workers.

``bnncompress pack POSTERIOR --scheduler tcp://HOST:8786`` sends each task (a range of
whole coding blocks: read, quantize, count or entropy-code) to the cluster's workers and
writes the archive here; ``--workers N`` starts a local cluster of N single-threaded worker
processes instead. Workers read their rows from the posterior file themselves, so a remote
cluster needs the file at the same path (a shared file system) and bnncompress installed;
a posterior given as Python objects is sent to the workers once (``Client.scatter``).
The archive is byte-identical to a local pack (see :mod:`bnncompress.streaming`).

Dask is optional: ``pip install 'bnncompress[dask]'``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from .errors import OptionError
from .streaming import _single_threaded  # Dask runs one task per worker thread, too


def _import_distributed():
    try:
        import distributed
    except ImportError:
        raise OptionError(
            "--workers and --scheduler need Dask; install it with: pip install 'bnncompress[dask]'"
        ) from None
    return distributed


class DaskExecutor:
    """Runs the blockwise pack's tasks on a ``distributed.Client``'s workers, results in order."""

    def __init__(self, client: Any):
        from .streaming import SYMBOL_CACHE_BYTES, TASK_SYMBOLS

        self.client = client
        self.task_symbols = 4 * TASK_SYMBOLS  # fewer, larger tasks: scheduling costs a few ms each
        workers = client.scheduler_info().get("workers", {})
        self.cache_bytes = SYMBOL_CACHE_BYTES * max(len(workers), 1)  # kept indices stay on the workers

    def scatter(self, obj: Any) -> Any:
        return self.client.scatter(obj, broadcast=False, hash=False)

    def map(self, fn: Callable, tasks: Sequence[tuple]) -> Iterator[Any]:
        futures = [self.client.submit(_single_threaded, fn, *args, pure=False) for args in tasks]
        try:
            for i in range(len(futures)):
                yield futures[i].result()
                futures[i] = None  # lets the cluster forget the result
        finally:
            self.client.cancel([f for f in futures if f is not None])

    def map_split(self, fn: Callable, tasks: Sequence[tuple]) -> Iterator[tuple[Any, Any]]:
        """Tasks return ``(result, kept)``: ``result`` comes here, ``kept`` stays on its worker
        as a future that later tasks take as an argument (Dask runs them where it lies)."""
        import operator

        futures = [self.client.submit(_single_threaded, fn, *args, pure=False) for args in tasks]
        for i in range(len(futures)):
            result = self.client.submit(operator.getitem, futures[i], 0, pure=False)
            kept = self.client.submit(operator.getitem, futures[i], 1, pure=False)
            futures[i] = None
            yield result.result(), kept


@contextlib.contextmanager
def dask_executor(workers: int | None = None, scheduler: Any = None) -> Iterator[DaskExecutor]:
    """An executor on the cluster at ``scheduler`` (an address or a ``distributed.Client``),
    or on a new local cluster of ``workers`` single-threaded worker processes."""
    distributed = _import_distributed()
    if scheduler is not None and workers is not None:
        raise OptionError("give either --workers (a local cluster) or --scheduler (an existing one), not both")
    if isinstance(scheduler, distributed.Client):
        yield DaskExecutor(scheduler)
        return
    if scheduler is not None:
        try:
            client = distributed.Client(str(scheduler), timeout="30s")
        except OSError as exc:
            raise OptionError(f"cannot reach the Dask scheduler at {scheduler} ({exc})") from None
        with client:
            yield DaskExecutor(client)
        return
    if workers is None or workers < 1:
        raise OptionError(f"--workers must be at least 1, got {workers}")
    with (
        distributed.LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        yield DaskExecutor(client)

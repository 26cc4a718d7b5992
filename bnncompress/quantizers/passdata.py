"""Per-block values a fitted quantizer computes once and every later pass reuses, within a byte limit."""

from __future__ import annotations

import threading
from typing import Any


class PassData:
    """Per-block values a fit computes once and every pass reuses (a transform's rotated coordinates),
    kept within ``limit`` bytes in this process: a copy sent to a worker starts empty, with the limit, and
    is not :attr:`lasting` (what a task keeps in it ends with the task).

    Example:
        >>> import numpy as np
        >>> kept = PassData(limit=16)
        >>> kept.put("a", np.zeros(2)), kept.put("b", np.zeros(2)), kept.get("b") is None
        (True, False, True)
    """

    def __init__(self, limit: int, lasting: bool = True):
        self.limit, self._items, self._bytes, self._lock = limit, {}, 0, threading.Lock()
        self.lasting = lasting

    def get(self, key: Any) -> Any:
        return None if key is None else self._items.get(key)

    def put(self, key: Any, value: Any) -> bool:
        """Keep ``value`` (an array or a tuple of arrays) if it fits in the limit (a key None: never); True if kept."""
        if key is None:
            return False
        size = _nbytes(value)
        with self._lock:
            replaced = _nbytes(self._items[key]) if key in self._items else 0
            if self._bytes - replaced + size > self.limit:
                return False
            self._items[key] = value
            self._bytes += size - replaced
            return True

    def take(self, key: Any) -> Any:
        """Remove ``key``'s value and return it (None if not kept), freeing its bytes."""
        with self._lock:
            value = self._items.pop(key, None)
            if value is not None:
                self._bytes -= _nbytes(value)
            return value

    def end_task(self) -> None:
        """Let go of what a task kept here, unless this is the lasting copy (a copy a worker got for a task:
        a Dask worker holds a task's arguments as long as its result, 256 MiB of rows each)."""
        if not self.lasting:
            with self._lock:
                self._items, self._bytes = {}, 0

    def within(self, limit: int) -> PassData:
        """A PassData of ``limit`` bytes with the values kept here that fit in it, oldest first.

        Example:
            >>> import numpy as np
            >>> kept = PassData(limit=32)
            >>> kept.put("a", np.zeros(2)), kept.put("b", np.zeros(2))
            (True, True)
            >>> smaller = kept.within(16)
            >>> smaller.get("a") is not None, smaller.get("b") is None
            (True, True)
        """
        kept = PassData(limit, self.lasting)
        with self._lock:
            for key, value in self._items.items():
                kept.put(key, value)
        return kept

    def __getstate__(self) -> dict[str, Any]:
        return {"limit": self.limit}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["limit"], lasting=False)


def _nbytes(value: Any) -> int:
    return sum(a.nbytes for a in (value if isinstance(value, tuple) else (value,)))

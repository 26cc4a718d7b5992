"""Objects a forked child renews: a lock another thread of the parent held at the fork would stay
held forever in the child (a torch DataLoader worker hung on its first lookup), and what that
thread was changing may be half changed. Each object registered here has an ``_after_fork()``.
"""

from __future__ import annotations

import os
import weakref
from typing import Any

_RENEWED: weakref.WeakSet[Any] = weakref.WeakSet()


def renew_after_fork(obj: Any) -> None:
    """Call ``obj._after_fork()`` in every child this process forks from now on (while ``obj`` lives)."""
    _RENEWED.add(obj)


def _renew() -> None:
    for obj in list(_RENEWED):
        obj._after_fork()


os.register_at_fork(after_in_child=_renew)

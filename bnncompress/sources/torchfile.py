"""Posteriors in torch .pt files (``torch.save`` / ``pyro.get_param_store().save``), read whole
as a container (:func:`~bnncompress.sources.containers.from_mapping`).

A file of tensors, containers and the constraints Pyro's guides use is read without importing
torch (:mod:`.torchzip`, a second saved); any other is read with ``torch.load(weights_only=True)``
and an allow-list of exactly the constraint classes Pyro stores; anything else pickled is
refused before it runs.
"""

from __future__ import annotations

import contextlib
import pickle
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import NotAPosteriorError, PosteriorError
from ..forksafe import renew_after_fork
from ..posterior import Posterior
from .containers import from_mapping
from .reader import PosteriorReader, Probe
from .torchzip import NotPlain, read_zip_pickle


def is_torch_file(probe: Probe) -> bool:
    """A zip file with a ``data.pkl`` member (torch.save), or a legacy pickle (first byte 0x80;
    detected after safetensors, whose header length may start with that byte)."""
    return any(m.endswith("data.pkl") for m in probe.zip_members) or probe.head[:1] == b"\x80"


class TorchReader(PosteriorReader):
    """Reads a torch .pt file whole: without torch where the file holds only tensors, containers
    and the constraints Pyro's guides use (:mod:`.torchzip`), else with torch's safe loader."""

    def open(self) -> Posterior:
        where = f"'{self.path.name}'"
        try:
            return from_mapping(read_zip_pickle(self.path), where)
        except NotPlain:
            return from_mapping(torch_load(self.path), where)


def _allowed_constraint_classes() -> list[type]:
    """The constraint classes of torch and Pyro: what Pyro's param store pickles beside tensors.
    They hold only numbers and other constraints, so unpickling them runs no user code."""
    import pyro.distributions.constraints as pc
    import torch.distributions.constraints as tc

    classes = []
    for module in (tc, pc):
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, tc.Constraint):
                classes.append(value)
    return classes


#: Guards the constraint classes this module adds to torch's process-wide allow-list, and how many loads use them.
_ALLOWED = threading.Lock()
_LOADS_AND_ADDED: list[Any] = [0, []]


def _after_fork() -> None:  # a child forked during another thread's load would wait on the lock forever
    global _ALLOWED
    _ALLOWED = threading.Lock()
    if _LOADS_AND_ADDED[0]:  # (no load runs in the child: what the parent's loads added goes)
        _LOADS_AND_ADDED[0] = 0
        _remove_allowed(_LOADS_AND_ADDED[1])


def _remove_allowed(added: list[Any]) -> None:
    """Take ``added`` off torch's allow-list in one step (torch's own safe_globals does so), else rebuilt."""
    import torch

    remove = getattr(torch.serialization._weights_only_unpickler, "_remove_safe_globals", None)
    if remove is not None:
        remove(added)
        return
    gone = set(added)
    kept = [g for g in torch.serialization.get_safe_globals() if g not in gone]
    torch.serialization.clear_safe_globals()
    torch.serialization.add_safe_globals(kept)


renew_after_fork(sys.modules[__name__])


@contextlib.contextmanager
def _constraints_allowed() -> Iterator[None]:
    """torch's allow-list with Pyro's constraint classes while a load runs. ``torch.serialization.safe_globals``
    removes its classes on exit: classes the caller allowed before were dropped, and a load in another thread
    lost them mid-unpickling. Only the classes missing at the first load are added, and removed after the last."""
    import torch

    with _ALLOWED:
        if _LOADS_AND_ADDED[0] == 0:
            present = set(torch.serialization.get_safe_globals())
            _LOADS_AND_ADDED[1] = [c for c in _allowed_constraint_classes() if c not in present]
            torch.serialization.add_safe_globals(_LOADS_AND_ADDED[1])
        _LOADS_AND_ADDED[0] += 1
    try:
        yield
    finally:
        with _ALLOWED:
            _LOADS_AND_ADDED[0] -= 1
            if _LOADS_AND_ADDED[0] == 0:
                _remove_allowed(_LOADS_AND_ADDED[1])


def torch_load(path: Path) -> Any:
    """``torch.load(weights_only=True)`` allowing Pyro's constraint classes besides what the caller allowed.
    (torch may warn about a pickle protocol before refusing a file; the CLI hides that, its error says it.)"""
    import torch

    try:
        with _constraints_allowed():
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()
        detail = next((ln.strip() for ln in first if "GLOBAL" in ln or "Unsupported" in ln), "")
        raise NotAPosteriorError(
            f"'{path}' contains pickled objects that are not allowed ({detail or 'refused by the safe loader'}); "
            "bnncompress only reads tensors, plain containers and Pyro constraints — re-save the "
            "posterior with pyro.get_param_store().save() or as a dict of tensors"
        ) from None
    except Exception as exc:  # a damaged file makes torch raise almost anything
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PosteriorError(f"cannot read '{path}' as a torch file ({msg}); is it truncated or corrupt?") from None

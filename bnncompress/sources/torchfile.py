"""Posteriors in torch .pt files (``torch.save`` / ``pyro.get_param_store().save``), read whole
as a container (:func:`~bnncompress.sources.containers.from_mapping`).

A file of tensors, containers and the constraints Pyro's guides use is read without importing
torch (:mod:`.torchzip`, a second saved); any other is read with ``torch.load(weights_only=True)``
and an allow-list of exactly the constraint classes Pyro stores; anything else pickled is
refused before it runs.
"""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path
from typing import Any

from ..errors import NotAPosteriorError, PosteriorError
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


def torch_load(path: Path) -> Any:
    import torch

    try:
        with torch.serialization.safe_globals(_allowed_constraint_classes()), warnings.catch_warnings():
            # torch warns about pickle protocols it does not expect before refusing the file; the
            # refusal (below) says what is wrong, in one line
            warnings.filterwarnings("ignore", message=".*pickle protocol", category=UserWarning)
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

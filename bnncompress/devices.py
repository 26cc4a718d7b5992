"""Choosing where array work runs: ``cpu``, ``cuda`` or ``auto`` (CUDA when available)."""

from __future__ import annotations

import os
import sys
from typing import Any

from .errors import OptionError

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(device: Any = "auto") -> str:
    """Return ``"cpu"`` or ``"cuda"`` (or ``"cuda:N"``) for a requested device name (or a ``torch.device``).

    ``auto`` imports torch (about 2 s) only where a GPU could be there: when torch is already
    loaded or an NVIDIA driver is installed.

    Example:
        >>> resolve_device("cpu")
        'cpu'
    """
    if type(device).__name__ == "device" and type(device).__module__ == "torch":  # a torch.device: its name
        device = str(device)
    index = device[5:] if isinstance(device, str) and device.startswith("cuda:") else ""
    if not isinstance(device, str) or not (device in DEVICES or (index.isascii() and index.isdigit())):
        raise OptionError(f"unknown «device» {device!r}; choose auto, cpu, cuda or cuda:N")
    if device == "cpu":
        return device
    if device == "auto" and "torch" not in sys.modules and not _nvidia_driver():
        return "cpu"
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if not torch.cuda.is_available():
        raise OptionError(f"device {device!r} was requested but torch sees no CUDA GPU; use «device» cpu")
    if index and int(index) >= torch.cuda.device_count():
        raise OptionError(f"device {device!r} does not exist: torch sees {torch.cuda.device_count()} CUDA GPU(s)")
    return device


def _nvidia_driver() -> bool:
    return os.path.exists("/proc/driver/nvidia/version") or os.path.exists("/dev/nvidiactl")

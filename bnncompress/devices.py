"""Choosing where array work runs: ``cpu``, ``cuda`` or ``auto`` (CUDA when available)."""

from __future__ import annotations

from .errors import OptionError

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(device: str = "auto") -> str:
    """Return ``"cpu"`` or ``"cuda"`` for a requested device name.

    Example:
        >>> resolve_device("cpu")
        'cpu'
    """
    import torch

    if device not in DEVICES and not device.startswith("cuda:"):
        raise OptionError(f"unknown device {device!r}; choose auto, cpu or cuda")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise OptionError(f"device {device!r} was requested but torch sees no CUDA GPU; use --device cpu")
    return device

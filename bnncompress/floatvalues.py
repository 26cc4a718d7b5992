"""Float arrays as a posterior holds them: float32 copies of numpy arrays and torch tensors, the check a pack
needs of their values, and what float32 loses of float64 means.

Example:
    >>> loc, dtype = to_float32("w", "loc", np.array([0.5, 1e39]), "test")
    >>> dtype, loc.dtype.name, np.isinf(loc[1])
    ('float64', 'float32', np.True_)
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

from .errors import PosteriorError

FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")


def as_float32(a: np.ndarray) -> np.ndarray:
    """Flat float32 values; uint16 arrays are bfloat16 bit patterns."""
    if a.dtype == np.uint16:
        return (a.astype(np.uint32).reshape(-1) << 16).view(np.float32)
    with np.errstate(over="ignore"):  # float64 beyond float32's range: inf, refused by the caller's check
        return np.ascontiguousarray(a, dtype=np.float32).reshape(-1)


def to_float32(name: str, what: str, value: Any, where: str) -> tuple[np.ndarray, str]:
    """A float32 numpy copy of ``value`` (numpy array or torch tensor) and its original dtype name."""
    torch = sys.modules.get("torch")  # a tensor (of any subclass) means torch is imported already
    if torch is not None and isinstance(value, torch.Tensor):
        if isinstance(value, torch.nn.parameter.UninitializedParameter):
            raise PosteriorError(
                f"{where}: {what} of '{name}' is an uninitialized (lazy) parameter; run the model once first"
            )
        if value.layout != torch.strided or value.is_meta or value.is_quantized:
            kind = "meta" if value.is_meta else ("quantized" if value.is_quantized else str(value.layout))
            raise PosteriorError(f"{where}: {what} of '{name}' is a {kind} tensor; store dense floating-point tensors")
        value = value.detach().resolve_neg().resolve_conj()  # torch's lazy views: their values, as numpy needs
        dtype = str(value.dtype).removeprefix("torch.")
        if dtype not in FLOAT_DTYPES:
            need = "convert it to float16 or float32" if value.is_floating_point() else "it must be floating point"
            raise PosteriorError(f"{where}: {what} of '{name}' has dtype {dtype}; {need}")
        return value.to(dtype=torch.float32, device="cpu").numpy(), dtype
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError) as exc:
        raise PosteriorError(f"{where}: {what} of '{name}' is not an array ({exc})") from None
    if arr.dtype.kind != "f" or arr.dtype.itemsize not in (2, 4, 8):
        raise PosteriorError(
            f"{where}: {what} of '{name}' has dtype {arr.dtype}; it must be float16, float32 or float64"
            + (" (convert it to float64)" if arr.dtype.kind == "f" else "")
        )
    dtype = arr.dtype.newbyteorder("=").name
    with np.errstate(over="ignore"):  # beyond float32's range: inf, which check_values reports
        return np.asarray(arr, dtype=np.float32, order="C").reshape(arr.shape), dtype


def beyond_float32(loc: Any, scale: Any, loc32: np.ndarray) -> tuple[int, float]:
    """How many float64 means their float32 values miss by over 100 posterior sds, and the most sds off."""
    torch = sys.modules.get("torch")
    wide = [v.detach().cpu().double().numpy() if torch and isinstance(v, torch.Tensor) else v for v in (loc, scale)]
    wide64 = [np.asarray(v, np.float64).reshape(loc32.shape) for v in wide]  # (a reader's rows: 2-D, loc32 flat)
    with np.errstate(all="ignore"):  # (values not checked yet: a NaN or a zero scale is refused when they are)
        off = np.abs(wide64[0] - loc32) / wide64[1]
    far = int(np.count_nonzero(off > 100.0))
    return (far, float(off.max())) if far else (0, 0.0)


def check_values(name: str, where: str, loc: np.ndarray, scale: np.ndarray, rows: range | None = None) -> None:
    """Means must be finite, scales finite and positive (float32 after conversion); ``rows``: the rows ``loc`` and
    ``scale`` hold, where they are some of the tensor's (a streamed read's: the count is theirs)."""
    within = "" if rows is None else f" in rows {rows.start:,} to {rows.stop - 1:,} (checked as they are read)"
    bad = int(np.count_nonzero(~np.isfinite(loc)))
    if bad:
        raise PosteriorError(
            f"{where}: loc of '{name}' has {bad} NaN/inf values{within} (after conversion to float32: beyond ±3.4e38 "
            "is inf); means must be finite float32 numbers"
        )
    bad = int(np.count_nonzero(~(np.isfinite(scale) & (scale > 0))))
    if bad:
        raise PosteriorError(
            f"{where}: scale of '{name}' has {bad} NaN/inf or non-positive values{within} (after conversion to "
            "float32); scales must be finite and > 0"
        )

"""Forging archives in tests: rewrite an archive's manifest and recompute its checksum, as a forger
would, so that only the reader's own checks stand."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np


def rewrite_manifest(path: Path, edit: Callable[[dict], None] | None = None, raw: bytes | None = None) -> None:
    """Apply ``edit`` to the manifest JSON (or store ``raw`` bytes as the manifest) and recompute its
    checksum; tensor checksums stay as they were."""
    with h5py.File(path, "r+") as f:
        if raw is None:
            manifest = json.loads(f["manifest"][()].tobytes())
            edit(manifest)
            raw = json.dumps(manifest).encode()
        del f["manifest"]
        f["manifest"] = np.frombuffer(raw, dtype=np.uint8)
        f.attrs["manifest_sha256"] = np.bytes_(hashlib.sha256(raw).hexdigest().encode())

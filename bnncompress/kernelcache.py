"""Compiling numba kernels in a child process, so that a streamed pack stays within its memory.

numba compiles a kernel on its first call and caches the machine code on disk. The compiler
(LLVM) needs about 0.7 GB on top of what the process holds, so on a fresh install or after an
upgrade the first streamed pack of a 200M-weight posterior peaked at 1.76 GB instead of 1.03 GB.
:func:`compile_in_child` runs :func:`warm_kernels` in a child process first: the method's passes
and the coder over a small synthetic posterior streamed from .npy files, through the pack's own
pipeline (:func:`bnncompress.pipeline.quantize_and_code`). The child pays the compiler's memory
and fills numba's cache, and the caller then loads compiled kernels. A marker file beside
numba's cache, keyed by the package's files and the numba and Python versions, says that it has
been done (the kernels' callers count: they set the argument types numba compiles for).

Example:
    >>> compile_in_child("uniform", {})  # doctest: +SKIP
    'compiled'
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import os
import site
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from .executors import LocalExecutor
from .pipeline import quantize_and_code
from .quantizers import get_quantizer
from .sources import open_posterior

#: The numba kernel modules of the pack pipeline (lazy leaves: importing them imports numba).
KERNEL_MODULES = (
    "bnncompress._ans",
    "bnncompress._exactsum_kernels",
    "bnncompress._pipeline_kernels",
    "bnncompress.quantizers._vbq_cpu",
    "bnncompress.quantizers._ecsq_cpu",
    "bnncompress.quantizers._transform_cpu",
)

_IN_CHILD = "BNNCOMPRESS_COMPILING_KERNELS"
# What the child runs: this module's warm_kernels(method, options) (arguments as JSON).
_CHILD = """
import json, sys
from bnncompress.kernelcache import warm_kernels
warm_kernels(sys.argv[1], json.loads(sys.argv[2]), sys.argv[3])
"""


def warm_kernels(method: str, options: dict[str, Any], workdir: str | None = None) -> None:
    """Run every numba kernel a streamed pack with ``method`` and ``options`` runs: the pack's
    pipeline over a small posterior read by rows from .npy files, at 2 bits per weight (rate
    control's passes, unless the method has a fixed rate) and at its default rate. ``workdir``: where the
    posterior's files go (the caller removes it; else a temporary directory of this function's)."""
    quantizer = get_quantizer(method, **options)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() if workdir is None else contextlib.nullcontext(workdir) as src:
        np.save(src + "/w.loc.npy", rng.normal(size=(4096, 32)).astype(np.float32))
        np.save(src + "/w.scale.npy", rng.uniform(0.01, 1.0, (4096, 32)).astype(np.float32))
        tensors = open_posterior(src).tensors
        with LocalExecutor() as executor:
            for bits in (None,) if quantizer.fixed_rate else (2.0, None):
                quantize_and_code(tensors, quantizer, executor, bits, None, lambda stage, done, total: None)
            from . import _ans  # numba: imported on first use

            with _ans._PARALLEL_REGION:  # as when another thread is in a prange kernel: every serial twin runs
                quantize_and_code(tensors, quantizer, executor, None, None, lambda stage, done, total: None)


def compile_in_child(method: str, options: dict) -> str:
    """Fill numba's cache for ``method`` in a child process unless that was done for these
    kernels: returns ``"warm"`` (nothing to do), ``"compiled"``, or ``"failed"`` (the caller then
    compiles what it needs itself, as it would have anyway)."""
    try:
        spec = json.dumps(options, sort_keys=True)
    except (TypeError, ValueError):  # options the child cannot be given: compile here, as before
        return "warm"
    if os.environ.get(_IN_CHILD):  # the child's own streamed pack
        return "warm"
    marker = _marker(method, spec)
    if marker is None or marker.exists():
        return "warm"
    env = {**os.environ, _IN_CHILD: "1"}
    # the child imports this very package: a checkout or vendored copy imported from a script's directory is put on
    # its path (site-packages is on it already, after the standard library, where it stays)
    home = str(Path(__file__).parent.parent)
    if home not in site.getsitepackages() + [site.getusersitepackages()]:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (home, env.get("PYTHONPATH")) if p)
    # the child fills this process's cache: NUMBA_CACHE_DIR (absolute: the child runs elsewhere) or the temporary
    # one writable_cache chose (the child would choose another, of a random name, removed when it ends)
    import numba

    cache = env.get("NUMBA_CACHE_DIR") or numba.config.CACHE_DIR
    if cache:
        env["NUMBA_CACHE_DIR"] = os.path.abspath(cache)
    try:  # the child's files in a directory of this process: removed even when an interrupt kills the child
        with tempfile.TemporaryDirectory() as workdir:
            args = [sys.executable, "-c", _CHILD, method, spec, workdir]
            # cwd: `python -c` puts the working directory first on sys.path, so a json.py or random.py of the
            # user's project ran in the child; an empty directory of ours holds none
            done = subprocess.run(args, capture_output=True, timeout=900, check=False, env=env, cwd=workdir)
        outcome = "compiled" if done.returncode == 0 else "failed"
    except (OSError, subprocess.SubprocessError):
        outcome = "failed"
    try:  # also after a failure: this process then compiles, and numba caches, what it needs
        marker.write_text(outcome + "\n")
    except OSError:
        pass
    return outcome


def files_key(package: Path) -> str:
    """A hash of the name, modification time and size of every .py file under ``package``.

    Example:
        >>> files_key(Path(__file__).parent) == files_key(Path(__file__).parent)
        True
    """
    key = hashlib.sha256()
    for source in sorted(package.rglob("*.py")):
        stat = source.stat()
        key.update(f"{source.relative_to(package)}|{stat.st_mtime_ns}|{stat.st_size}\n".encode())
    return key.hexdigest()


def _marker(method: str, options: str) -> Path | None:
    """The marker file for ``method``: beside numba's cache of the pipeline kernels, named by a
    hash of everything that would make numba recompile: the kernels' files, and their callers',
    which choose the argument types numba compiles for (so every file of the package), the
    numba and Python versions, and the CPU numba compiles for (a cache shared by two kinds of machine)
    (None if the cache cannot be found)."""
    import llvmlite.binding
    import numba

    cpu = numba.config.CPU_NAME or llvmlite.binding.get_host_cpu_name()
    features = numba.config.CPU_FEATURES or llvmlite.binding.get_host_cpu_features().flatten()
    key = hashlib.sha256(f"{sys.version}|{numba.__version__}|{method}|{options}|{cpu}|{features}".encode())
    key.update(files_key(Path(__file__).parent).encode())
    cache_dir = None
    for name in KERNEL_MODULES:
        module = importlib.import_module(name)
        for obj in vars(module).values():
            path = getattr(getattr(obj, "_cache", None), "_cache_path", None)  # numba's FunctionCache
            if cache_dir is None and isinstance(path, str):
                cache_dir = path
    if cache_dir is None or not os.access(cache_dir, os.W_OK):
        return None
    return Path(cache_dir) / f"bnncompress-compiled-{key.hexdigest()[:24]}"

"""A streamed pack compiles numba kernels in a child process first, once per cache."""

import os
import subprocess
import sys

import pytest

from bnncompress.kernelcache import compile_in_child


@pytest.mark.slow
def test_kernels_are_compiled_in_a_child_once_per_cache(tmp_path):
    code = (
        "from bnncompress.kernelcache import compile_in_child\n"
        "print(compile_in_child('uniform', {}), compile_in_child('uniform', {}), compile_in_child('float16', {}))\n"
    )
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "cache")}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert r.returncode == 0 and r.stdout.split() == ["compiled", "warm", "compiled"], r.stdout + r.stderr
    cached = {p.suffix for p in (tmp_path / "cache").rglob("*")}
    assert ".nbi" in cached and ".nbc" in cached  # the child filled numba's cache
    assert len(list((tmp_path / "cache").rglob("bnncompress-compiled-*"))) == 2  # one per method


def test_options_a_child_cannot_be_given_are_compiled_in_process():
    assert compile_in_child("uniform", {"step": object()}) == "warm"

"""Pack and load throughput and peak memory on a 20000 x 100 posterior.

    python benchmarks/bench_pack_load.py            # prints a table (about a minute)

The posterior is synthetic but shaped like a Bayesian skip-gram's (frequent rows sharp,
rare rows near the prior N(0, 1)); it is written as a .pt file of {name: {loc, scale}} and
packed from disk, as `bnncompress pack` would. Each case runs in a fresh process so that
peak memory (ru_maxrss above the process's resident size just before the case) is its own;
timings are the best of --repeat runs after one warm-up run. Goals (issue: Core): pack >= 10 M
weights/s, load >= 30 M weights/s, peak memory <= 4x the posterior's float32 size.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROWS, DIM = 20000, 100


def make_posterior(path: Path) -> None:
    import numpy as np
    import torch

    rng = np.random.default_rng(0)
    row_scale = np.exp(np.linspace(np.log(0.02), np.log(0.8), ROWS))[:, None]
    scale = (row_scale * np.exp(0.2 * rng.normal(size=(ROWS, DIM)))).astype(np.float32)
    loc = (rng.normal(size=(ROWS, DIM)) * np.sqrt(np.maximum(1 - scale**2, 0.01))).astype(np.float32)
    torch.save({"word_vectors": {"loc": torch.from_numpy(loc), "scale": torch.from_numpy(scale)}}, path)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def run_case(case: str, workdir: Path, repeat: int) -> dict:
    """Runs inside a fresh process: one case, timed, with its peak memory."""
    import bnncompress

    source, archive = workdir / "posterior.pt", workdir / f"{case}.bnc"
    kwargs = {"pack-default": {"lam": None}, "pack-2bits": {"bits": 2.0}}.get(case)
    if kwargs is not None:

        def op():
            return bnncompress.pack(source, archive, device="cpu", **kwargs)
    else:
        bnncompress.pack(source, archive, device="cpu", bits=2.0)

        def op():
            a = bnncompress.load(archive)
            return [a[n] for n in a.names]

    op()  # warm-up: numba's cached kernel is loaded, files are in the page cache
    times = []
    before = _rss_bytes()
    for _ in range(repeat):
        start = time.perf_counter()
        result = op()
        times.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    out = {"case": case, "seconds": min(times), "peak_extra_bytes": max(0, peak - before)}
    if kwargs is not None:
        out["payload_bits"] = result.payload_bits_per_weight
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(args.case, Path(args.workdir), args.repeat)))
        return
    n = ROWS * DIM
    posterior_f32 = 2 * 4 * n  # loc and scale
    with tempfile.TemporaryDirectory() as tmp:
        make_posterior(Path(tmp) / "posterior.pt")
        rows = []
        for case in ("pack-default", "pack-2bits", "load-2bits"):
            cmd = [sys.executable, __file__, "--case", case, "--workdir", tmp, "--repeat", str(args.repeat)]
            rows.append(json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout))
    print(
        f"posterior {ROWS} x {DIM} = {n:,} weights; float32 loc+scale = {posterior_f32 / 2**20:.1f} MiB; "
        f"{os.cpu_count()} CPUs"
    )
    print(
        f"| {'case':<13} | {'seconds':>8} | {'M weights/s':>11} | {'peak extra MiB':>14} | {'x posterior':>11} | "
        f"{'payload bits/w':>14} |"
    )
    print(f"|{'-' * 15}|{'-' * 10}|{'-' * 13}|{'-' * 16}|{'-' * 13}|{'-' * 16}|")
    for r in rows:
        bits = f"{r['payload_bits']:.3f}" if "payload_bits" in r else ""
        print(
            f"| {r['case']:<13} | {r['seconds']:>8.4f} | {n / r['seconds'] / 1e6:>11.1f} | "
            f"{r['peak_extra_bytes'] / 2**20:>14.1f} | {r['peak_extra_bytes'] / posterior_f32:>11.2f} | {bits:>14} |"
        )


if __name__ == "__main__":
    main()

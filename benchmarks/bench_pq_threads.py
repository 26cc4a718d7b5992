"""`--method pq` on a quiet machine and beside one busy process of equal priority, with faiss's OpenMP
threads spinning as libgomp does by default, sleeping at once, or spinning briefly (what bnncompress asks
for as it loads faiss).

    python benchmarks/bench_pq_threads.py                                   # data/example.pt
    python benchmarks/bench_pq_threads.py --posterior recipes/work/skipgram.pt --bits 2

Each cell is one pack in a fresh child process (``bnncompress.pack(P, method="pq", bits=B)``, seconds, import
excluded). The first two rows give the child the variable named (a user's setting, which bnncompress leaves
alone); the last runs it with neither set, as bnncompress ships. The busy process is a Python loop at the same
priority; on 2 cores it takes one, so faiss's two threads share the other.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "recipes"))  # the recipes' argument types
from recipe_args import positive_float, run  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CHILD = """
import sys, time
import bnncompress
t = time.perf_counter()
bnncompress.pack(sys.argv[1], sys.argv[2], method="pq", bits=float(sys.argv[3]), force=True)
print(time.perf_counter() - t)
"""
POLICIES = {
    "spin 300,000 (libgomp's default)": {"GOMP_SPINCOUNT": "300000"},
    "sleep at once (OMP_WAIT_POLICY=PASSIVE)": {"OMP_WAIT_POLICY": "PASSIVE"},
    "spin 1,000 (as shipped)": {},
}


def one_pack(posterior: Path, bits: float, extra_env: dict[str, str], out: Path) -> float:
    env = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")} | extra_env
    child = [sys.executable, "-c", CHILD, str(posterior), str(out), str(bits)]
    return float(subprocess.run(child, env=env, check=True, capture_output=True, text=True).stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--posterior", type=Path, default=ROOT / "data" / "example.pt")
    parser.add_argument("--bits", type=positive_float, default=2.0)
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPUs; load average before: {os.getloadavg()[0]:.2f}; {args.posterior}, --bits {args.bits}")
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "pq.bnc"
        for name, env in POLICIES.items():
            rows[name] = [one_pack(args.posterior, args.bits, env, out)]
        busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        try:
            for name, env in POLICIES.items():
                rows[name].append(one_pack(args.posterior, args.bits, env, out))
        finally:
            busy.kill()
            busy.wait()
    print("| faiss's idle threads | quiet s | beside one busy process s |")
    print("|---|---|---|")
    for name, (quiet, loaded) in rows.items():
        print(f"| {name} | {quiet:.2f} | {loaded:.2f} |")


if __name__ == "__main__":
    run(main)

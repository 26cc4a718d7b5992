"""Pack and load throughput, first-lookup latency, peak memory, and Dask 1 vs 2 workers.

    python benchmarks/bench_pack_load.py             # the tables below (about 3 minutes)
    python benchmarks/bench_pack_load.py --posterior PATH   # table 1 also on this trained posterior
    python benchmarks/bench_pack_load.py --large     # + a 200M-weight posterior streamed from disk (minutes)
    python benchmarks/bench_pack_load.py --no-table1 --no-dask --vocabulary   # table 4 alone (about 15 s)

Table 1, twice: on a trained posterior (--posterior; default recipes/work/skipgram.pt, the
analogy recipe's 20,000 x 100 skip-gram posterior, trained by `bnncompress train` and stored as
an AutoNormal param store (`python recipes/analogy_benchmark.py --stage train`), if it exists, else
data/example.pt, 4,000 x 50) and on a synthetic 20000 x 100 posterior (a .pt file of
{name: {loc, scale}}) shaped like a Bayesian skip-gram's (frequent rows sharp, rare rows near the
prior N(0, 1)), which flatters the rate search; each table's title says which. Both are packed
from disk as `bnncompress pack` would. Each case runs in a
fresh process so that peak memory is its own: "peak extra" is the peak resident size (VmHWM) above the process's
resident size after the warm-up run (which what an allocator keeps from that run lowers), "process
peak" the process's whole peak (imports included); timings are the best of --repeat runs
after one warm-up run. "load-2bits" decodes every tensor of the default method's `--bits 2` archive,
"load-vbq-2bits" of VBQ's (no transform to undo); "lookup" is the first `Archive.rows` call on a
freshly loaded default-method archive in a fresh process (one block); "first
pack" is `import bnncompress` and one `--bits 2` pack in a fresh process (numba's cache warm), best
of 3 processes, against the warm pack.

Table 2 (--dask-rows x 100 posterior as a directory of .npy files): a streamed pack at
2 bits/weight in this process, then on a local dask.distributed cluster of 1 and of 2
single-threaded worker processes (cluster started before timing; best of 2 after a warm-up).

Table 3 (--large): 2,000,000 x 100 = 200M weights, generated on disk as memory-mapped
.npy files (1.6 GB, never held in memory), packed with `bnncompress pack DIR --bits 2` in
a fresh process; reports the wall time and that process's peak RSS (VmHWM, total).

Table 4 (--vocabulary): a 1,000,000-word vocabulary over 8 dimensions (8M weights; random vectors:
the vocabulary's cost does not depend on them), a .pt file of {name.loc, name.scale, vocab} as
users of large vocabularies bring: `pack --bits 2` (best of --repeat after a warm-up), and in fresh
processes `load()` with the first lookup of a word (`Archive.vector`), and `bnncompress info`.

Goals (issues 5 and 21, this 2-core machine): pack >= 20 M weights/s and load >= 50 M weights/s at
2 bits/weight; first lookup <= 5 ms; first pack in a fresh process <= 1.5x a warm one; 200M-weight
pack with peak RSS <= 1.5 GB; Dask 2 workers >= 1.7x 1 worker. Check `uptime` first: other work on
the machine skews every number.
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "recipes"))  # the recipes' argument types
from recipe_args import method as one_method  # noqa: E402
from recipe_args import positive_int, run  # noqa: E402

from bnncompress.quantizers import METHODS  # noqa: E402

ROWS, DIM = 20000, 100
LARGE_ROWS = 2_000_000
VOCAB_WORDS, VOCAB_DIM = 1_000_000, 8
_REPO = Path(__file__).resolve().parent.parent
TRAINED = (_REPO / "recipes" / "work" / "skipgram.pt", _REPO / "data" / "example.pt")


def _skipgram_like(rng, rows: int, first_row: int, total_rows: int):
    import numpy as np

    row = np.arange(first_row, first_row + rows)
    row_scale = np.exp(np.log(0.02) + (np.log(0.8) - np.log(0.02)) * row / max(total_rows - 1, 1))[:, None]
    scale = (row_scale * np.exp(0.2 * rng.normal(size=(rows, DIM)))).astype(np.float32)
    loc = (rng.normal(size=(rows, DIM)) * np.sqrt(np.maximum(1 - scale**2, 0.01))).astype(np.float32)
    return loc, scale


def make_posterior(path: Path) -> None:
    import numpy as np
    import torch

    loc, scale = _skipgram_like(np.random.default_rng(0), ROWS, 0, ROWS)
    torch.save({"word_vectors": {"loc": torch.from_numpy(loc), "scale": torch.from_numpy(scale)}}, path)


def make_vocabulary_posterior(path: Path) -> list[str]:
    """A .pt posterior of VOCAB_WORDS words x VOCAB_DIM (random vectors) with its vocabulary; returns the words."""
    import numpy as np
    import torch

    rng = np.random.default_rng(0)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyzé"))
    stems = ["".join(w) for w in letters[rng.integers(0, len(letters), size=(VOCAB_WORDS, 6))]]
    words = [f"{stem}{i}" for i, stem in enumerate(stems)]  # unique, word-like
    loc = rng.normal(size=(VOCAB_WORDS, VOCAB_DIM)).astype(np.float32)
    scale = rng.uniform(0.05, 1.0, size=(VOCAB_WORDS, VOCAB_DIM)).astype(np.float32)
    tensors = {"word_vectors.loc": torch.from_numpy(loc), "word_vectors.scale": torch.from_numpy(scale)}
    torch.save({**tensors, "vocab": words}, path)
    return words


def make_npy_dir(path: Path, rows: int, chunk: int = 50_000) -> None:
    """NAME.loc.npy / NAME.scale.npy written chunk by chunk through memory maps (bounded memory)."""
    import numpy as np

    path.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    maps = [
        np.lib.format.open_memmap(path / f"word_vectors.{k}.npy", "w+", np.float32, (rows, DIM))
        for k in ("loc", "scale")
    ]
    for a in range(0, rows, chunk):
        loc, scale = _skipgram_like(rng, min(chunk, rows - a), a, rows)
        maps[0][a : a + len(loc)] = loc
        maps[1][a : a + len(loc)] = scale
        for m in maps:
            m.flush()
    del maps


def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_bytes() -> int:
    """This process's peak resident size: Linux's VmHWM, the high-water mark of the process's own memory, which starts
    again at exec. Not ru_maxrss: a child inherits that from the process that started it (the parent that had just
    written table 3's 1.6 GB posterior through memory maps made its pack's peak read 1.65 GiB instead of 1.05)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # (macOS counts bytes, Linux KiB)


def _best(op, repeat: int, warm_up: bool = True) -> tuple[float, object]:
    if warm_up:
        op()  # numba's cached kernels are loaded, files are in the page cache
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        result = op()
        times.append(time.perf_counter() - start)
    return min(times), result


def streamed_method(text: str) -> str:
    """A method that packs block by block (streamed and on Dask) at 2 bits/weight: the cases' route and rate."""
    name = one_method(text)
    if not METHODS[name].blockwise or METHODS[name].fixed_rate:
        why = "needs whole tensors in memory" if not METHODS[name].blockwise else "has a fixed rate"
        raise argparse.ArgumentTypeError(f"{name!r} {why}: the Dask and large cases stream at 2 bits/weight")
    return name


def run_case(
    case: str, workdir: Path, repeat: int, dask_dir: Path | None, method: str | None = None, source: Path | None = None
) -> dict:
    """Runs inside a fresh process: one case, timed, with its peak memory."""
    started = time.perf_counter()
    import bnncompress

    source, archive = source or workdir / "posterior.pt", workdir / f"{case}.bnc"
    if case == "first-pack":  # import and the first pack of a fresh process (numba's cache warm)
        bnncompress.pack(source, archive, device="cpu", bits=2.0)
        return {"case": case, "seconds": time.perf_counter() - started}
    if case == "lookup":
        start = time.perf_counter()
        a = bnncompress.load(workdir / "load-2bits.bnc")
        opened = time.perf_counter()
        name = max(a.names, key=lambda n: a.shape(n)[0])  # the embedding (the most rows)
        a.rows(name, [min(12345, a.shape(name)[0] - 1)])
        first = time.perf_counter()
        return {"case": case, "open_s": opened - start, "first_lookup_s": first - opened}
    if case == "vocab-pack":
        seconds, r = _best(lambda: bnncompress.pack(source, archive, bits=2.0), repeat)
        return {"case": case, "seconds": seconds, "payload_bits": r.payload_bits_per_weight}
    if case == "vocab-lookup":  # a fresh process: load() and the first lookup of a word
        start = time.perf_counter()
        a = bnncompress.load(workdir / "vocab-pack.bnc")
        opened = time.perf_counter()
        a.vector(a.vocab[len(a.vocab) // 2])
        return {"case": case, "open_s": opened - start, "first_lookup_s": time.perf_counter() - opened}
    if case.startswith("dask-") or case == "stream-local":
        return _dask_case(case, dask_dir, workdir, repeat, method)
    if case == "large":
        start = time.perf_counter()
        r = bnncompress.pack(dask_dir, workdir / "large.bnc", bits=2.0, **({"method": method} if method else {}))
        seconds = time.perf_counter() - start
        return {
            "case": case,
            "seconds": seconds,
            "peak_bytes": _peak_bytes(),
            "payload_bits": r.payload_bits_per_weight,
        }
    kwargs = {
        "pack-default": {"lam": None},  # default method (vbq-transform), its default lambda
        "pack-2bits": {"bits": 2.0},  # default method at 2 bits/weight
        "direction-default": {"lam": None, "method": "vbq-direction"},  # the default before transform coding
        "direction-2bits": {"bits": 2.0, "method": "vbq-direction"},
        "vbq-2bits": {"bits": 2.0, "method": "vbq"},  # VBQ as published
    }.get(case)
    if kwargs is not None:

        def op():
            return bnncompress.pack(source, archive, device="cpu", **kwargs)
    else:  # load-2bits: the default method's archive; load-vbq-2bits: VBQ's (no transform to undo)
        method = "vbq" if case == "load-vbq-2bits" else None
        bnncompress.pack(source, archive, device="cpu", bits=2.0, **({"method": method} if method else {}))

        def op():
            a = bnncompress.load(archive)
            return [a[n] for n in a.names]

    op()  # warm-up, before the resident size is taken
    before = _rss_bytes()
    seconds, result = _best(op, repeat, warm_up=False)
    out = {"case": case, "seconds": seconds, "peak_extra_bytes": max(0, _peak_bytes() - before)}
    out["peak_bytes"] = _peak_bytes()
    if kwargs is not None:
        out["payload_bits"] = result.payload_bits_per_weight
    return out


def _dask_case(case: str, npy_dir: Path, workdir: Path, repeat: int, method: str | None) -> dict:
    import bnncompress

    archive = workdir / f"{case}.bnc"
    kw = {"bits": 2.0, **({"method": method} if method else {})}
    if case == "stream-local":
        seconds, _ = _best(lambda: bnncompress.pack(npy_dir, archive, stream=True, **kw), repeat)
        return {"case": case, "seconds": seconds}
    import distributed

    workers = int(case.split("-")[1])
    start = time.perf_counter()
    with (
        distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0") as c,
        distributed.Client(c) as client,
    ):
        startup = time.perf_counter() - start
        seconds, _ = _best(lambda: bnncompress.pack(npy_dir, archive, scheduler=client, **kw), repeat)
    return {"case": case, "seconds": seconds, "startup_s": startup}


def _run(
    case: str,
    tmp: str,
    repeat: int,
    dask_dir: Path | None = None,
    method: str | None = None,
    source: Path | None = None,
) -> dict:
    cmd = [sys.executable, __file__, "--case", case, "--workdir", tmp, "--repeat", str(repeat)]
    if source is not None:
        cmd += ["--source", str(source)]
    if dask_dir is not None:
        cmd += ["--dask-dir", str(dask_dir)]
    if method:
        cmd += ["--method", method]
    return json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])


def _table1(tmp: str, repeat: int, source: Path | None = None) -> None:
    """Table 1 on the trained posterior ``source``, or (None) on the synthetic one."""
    import bnncompress

    if source is None:
        make_posterior(Path(tmp) / "posterior.pt")
        shapes = {"word_vectors": (ROWS, DIM)}
        title = "synthetic (skip-gram-like) posterior"
    else:
        shapes = {k: t.shape for k, t in bnncompress.read_posterior(source).tensors.items()}
        title = f"trained posterior {source}"
    n = sum(int(np_prod(s)) for s in shapes.values())
    posterior_f32 = 2 * 4 * n  # loc and scale
    cases = (
        "pack-default",
        "pack-2bits",
        "direction-default",
        "direction-2bits",
        "vbq-2bits",
        "load-2bits",
        "load-vbq-2bits",
    )
    rows = [_run(case, tmp, repeat, source=source) for case in cases]
    lookup = _run("lookup", tmp, 1, source=source)
    first = min(_run("first-pack", tmp, 1, source=source)["seconds"] for _ in range(3))
    described = ", ".join(f"{k} {' x '.join(map(str, s))}" for k, s in shapes.items())
    print(f"\n{title}: {described} = {n:,} weights; float32 loc+scale = {posterior_f32 / 2**20:.1f} MiB")
    print(
        f"| {'case':<17} | {'seconds':>8} | {'M weights/s':>11} | {'peak extra MiB':>14} | {'x posterior':>11} | "
        f"{'process peak MiB':>16} | {'payload bits/w':>14} |"
    )
    print(f"|{'-' * 19}|{'-' * 10}|{'-' * 13}|{'-' * 16}|{'-' * 13}|{'-' * 18}|{'-' * 16}|")
    for r in rows:
        bits = f"{r['payload_bits']:.3f}" if "payload_bits" in r else ""
        print(
            f"| {r['case']:<17} | {r['seconds']:>8.4f} | {n / r['seconds'] / 1e6:>11.1f} | "
            f"{r['peak_extra_bytes'] / 2**20:>14.1f} | {r['peak_extra_bytes'] / posterior_f32:>11.2f} | "
            f"{r['peak_bytes'] / 2**20:>16.1f} | {bits:>14} |"
        )
    print(
        f"first lookup (one row, fresh process): {lookup['first_lookup_s'] * 1e3:.2f} ms "
        f"after load() took {lookup['open_s'] * 1e3:.1f} ms"
    )
    warm = next(r["seconds"] for r in rows if r["case"] == "pack-2bits")
    print(
        f"first pack at 2 bits in a fresh process, import included (best of 3 processes): {first:.3f} s, "
        f"{first / warm:.2f}x the warm pack-2bits"
    )


def _table4(tmp: str, repeat: int) -> None:
    """Table 4: a large vocabulary (pack, load and first word lookup, info), each case in a fresh process."""
    source = Path(tmp) / "vocabulary.pt"
    make_vocabulary_posterior(source)
    n = VOCAB_WORDS * VOCAB_DIM
    pack = _run("vocab-pack", tmp, min(repeat, 3), source=source)
    lookups = [_run("vocab-lookup", tmp, 1, source=source) for _ in range(3)]
    infos = []
    for _ in range(3):
        start = time.perf_counter()
        subprocess.run(["bnncompress", "info", str(Path(tmp) / "vocab-pack.bnc")], check=True, capture_output=True)
        infos.append(time.perf_counter() - start)
    best = min(lookups, key=lambda r: r["open_s"] + r["first_lookup_s"])
    print(f"\nvocabulary: {VOCAB_WORDS:,} words x {VOCAB_DIM} = {n:,} weights (.pt with its vocabulary)")
    print(f"| {'case':<32} | {'seconds':>8} |")
    print(f"|{'-' * 34}|{'-' * 10}|")
    print(f"| {'pack --bits 2':<32} | {pack['seconds']:>8.3f} |")
    print(f"| {'load() (fresh process)':<32} | {best['open_s']:>8.3f} |")
    print(f"| {'then the first word lookup':<32} | {best['first_lookup_s']:>8.3f} |")
    print(f"| {'bnncompress info (whole command)':<32} | {min(infos):>8.3f} |")
    print(f"pack: {n / pack['seconds'] / 1e6:.1f} M weights/s, payload {pack['payload_bits']:.3f} bits/weight")


def np_prod(shape: tuple[int, ...]) -> int:
    out = 1
    for k in shape:
        out *= k
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=positive_int, default=5)
    parser.add_argument("--dask-rows", type=positive_int, default=1_000_000, help="rows of the Dask posterior (x 100)")
    parser.add_argument("--no-dask", action="store_true", help="skip table 2")
    parser.add_argument("--no-table1", action="store_true", help="skip table 1")
    parser.add_argument(
        "--posterior",
        type=Path,
        default=next((p for p in TRAINED if p.exists()), None),
        help="trained posterior of table 1 (default: recipes/work/skipgram.pt if present, else data/example.pt)",
    )
    parser.add_argument("--no-synthetic", action="store_true", help="table 1 on the trained posterior only")
    parser.add_argument("--large", action="store_true", help="also pack a 200M-weight posterior from disk")
    parser.add_argument("--large-dir", type=Path, help="where to write (or reuse) the 1.6 GB posterior")
    parser.add_argument("--vocabulary", action="store_true", help="also table 4: a 1M-word vocabulary")
    parser.add_argument(
        "--method", type=streamed_method, help="method of the Dask and large packs (default: the default method)"
    )
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    parser.add_argument("--dask-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--source", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.posterior is not None and not args.posterior.exists():
        parser.error(f"--posterior {args.posterior} does not exist")
    if args.case:
        print(json.dumps(run_case(args.case, Path(args.workdir), args.repeat, args.dask_dir, args.method, args.source)))
        return
    print(f"{os.cpu_count()} CPUs; load average before: {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        if not args.no_table1:
            if args.posterior is not None:
                _table1(tmp, args.repeat, args.posterior.resolve())
            if not args.no_synthetic:
                _table1(tmp, args.repeat)

        if not args.no_dask:
            dask_dir = Path(tmp) / "dask_posterior"
            make_npy_dir(dask_dir, args.dask_rows)
            m = args.dask_rows * DIM
            cases = [
                _run(c, tmp, min(args.repeat, 2), dask_dir, args.method) for c in ("stream-local", "dask-1", "dask-2")
            ]
            label = args.method or "the default method"
            print(f"\nDask: {args.dask_rows} x {DIM} = {m:,} weights (.npy directory), --bits 2, {label}")
            print(f"| {'case':<13} | {'seconds':>8} | {'M weights/s':>11} | {'cluster start s':>15} | {'speedup':>7} |")
            print(f"|{'-' * 15}|{'-' * 10}|{'-' * 13}|{'-' * 17}|{'-' * 9}|")
            one = cases[1]["seconds"]
            for r in cases:
                start = f"{r['startup_s']:.1f}" if "startup_s" in r else ""
                speedup = f"{one / r['seconds']:.2f}x" if r["case"].startswith("dask") else ""
                print(
                    f"| {r['case']:<13} | {r['seconds']:>8.3f} | {m / r['seconds'] / 1e6:>11.1f} | {start:>15} | "
                    f"{speedup:>7} |"
                )

        if args.vocabulary:
            _table4(tmp, args.repeat)

        if args.large:
            large_dir = args.large_dir or Path(tmp) / "large_posterior"
            if not (large_dir / "word_vectors.scale.npy").exists():
                start = time.perf_counter()
                make_npy_dir(large_dir, LARGE_ROWS)
                print(f"\nwrote {large_dir} in {time.perf_counter() - start:.0f} s")
            r = _run("large", tmp, 1, large_dir, args.method)
            big = LARGE_ROWS * DIM
            print(
                f"\nlarge: {LARGE_ROWS:,} x {DIM} = {big:,} weights ({2 * 4 * big / 1e9:.1f} GB of float32 "
                f"loc+scale on disk), streamed, --bits 2: {r['seconds']:.1f} s ({big / r['seconds'] / 1e6:.1f} M "
                f"weights/s), peak RSS {r['peak_bytes'] / 2**30:.2f} GiB ({r['peak_bytes'] / 1e9:.2f} GB), "
                f"payload {r['payload_bits']:.3f} bits/weight"
            )
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    run(main)

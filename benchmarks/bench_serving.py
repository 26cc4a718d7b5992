"""Serving compressed embeddings (issue 20): memory held and lookup speed, against float32 baselines.

    python benchmarks/bench_serving.py                       # recipes/work/skipgram.pt if present, else data/example.pt
    python benchmarks/bench_serving.py --posterior PATH      # any posterior with a vocabulary

The posterior is packed at 1, 2 and 3 bits/weight (into --workdir, reused for the same
posterior file and bnncompress version). Each archive is served as ``Archive.embedding()`` (a
CompressedEmbedding with its default cache of 10% of the rows) and queried with
``Archive.most_similar``.

Goals of issue 20 (2 cores; a trained 20,000 x 100 posterior at 2 bits/weight):
  - numpy/torch memory held by the archive, the module and its cache while serving
    <= 2 x the archive's file size + the cache (float32 would be 8 MB; the archive ~0.5-1 MB);
  - ``forward`` on batches of 4,096 ids >= 2 M rows/s when ids follow word frequency (Zipf),
    >= 0.5 M rows/s when uniform at random;
  - ``most_similar`` <= 100 ms warm per query over the whole vocabulary.

How to read the table (one row per way of serving the vectors):
  file MB    bytes on disk (the archive holds every tensor of the posterior; the baselines one matrix).
  held MB    numpy/torch bytes held while serving: for bnncompress every record the Archive holds
             (all tensors, still coded) + the reader + the row cache + the row norms; for the
             baselines the float32 matrix (gensim: + its norms); mmap: the arrays not on the map.
  cache MB   the row cache's share of "held" (bnncompress) - the goal allows it on top of 2 x file.
  zipf/unif  forward rows/s (millions) on batches of 4,096 ids, ids Zipf(1.0) by row index (the
             vocabulary is sorted by frequency) or uniform; best of --repeat passes over --batches
             batches, after one warm-up pass (the cache is warm). gensim/PQ: numpy fancy indexing.
  hit %      share of Zipf ids served from the cache.
  sim ms     most_similar(word, topn=10) warm (best of the query words), whole vocabulary.
Timings are noisy on a shared machine: the header prints the load average.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import bnncompress
from bnncompress.decoded import record_bytes
from bnncompress.quantizers import DEFAULT_METHOD

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "recipes"))  # the recipes' argument types
from recipe_args import positive_int, run  # noqa: E402

BATCH = 4096
MB = 2**20


def zipf_ids(rng: np.random.Generator, rows: int, size: int) -> np.ndarray:
    """Zipf(1.0) over row ranks: P(row r) proportional to 1 / (r + 1)."""
    cdf = np.cumsum(1.0 / np.arange(1, rows + 1))
    return np.minimum(np.searchsorted(cdf, rng.random(size) * cdf[-1]), rows - 1).astype(np.int64)


def rows_per_second(lookup, batches: list, repeat: int) -> float:
    for ids in batches:  # warm-up: caches, first-call imports
        lookup(ids)
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for ids in batches:
            lookup(ids)
        best = min(best, time.perf_counter() - start)
    return len(batches) * BATCH / best


def best_ms(call, words: list[str]) -> float:
    call(words[0])  # warm: norms computed, blocks touched
    times = []
    for word in words:
        start = time.perf_counter()
        call(word)
        times.append(time.perf_counter() - start)
    return 1000 * min(times)


def _code_hash() -> str:
    """A hash of bnncompress's sources: another checkout's archives are not this one's (__version__ stayed
    0.1.0 through eleven format versions)."""
    digest = hashlib.sha256()
    for source in sorted(Path(bnncompress.__file__).parent.rglob("*.py")):
        digest.update(source.read_bytes())
    return digest.hexdigest()[:16]


def packed(posterior: Path, bits: int, workdir: Path) -> Path:
    """The posterior's archive at ``bits``, packed unless this very file (path, size, time) was packed
    by this very code already and the archive still is what it packed (the default method at that rate)."""
    st = posterior.stat()
    key = f"{posterior.resolve()}:{st.st_size}:{st.st_mtime_ns}:{_code_hash()}"
    path = workdir / f"{posterior.stem}-{hashlib.sha256(key.encode()).hexdigest()[:12]}-{bits}bit.bnc"
    if path.exists():
        try:
            info = bnncompress.load(path).info()
            methods = {t["method"] for t in info["tensors"]}
            if methods == {DEFAULT_METHOD} and abs(info["total"]["payload_bits_per_weight"] - bits) <= 0.02 * bits:
                return path
        except bnncompress.BnnCompressError:
            pass  # (damaged or replaced: packed again)
    bnncompress.pack(posterior, path, bits=float(bits))
    return path


def main() -> None:
    repo = Path(__file__).resolve().parents[1]  # the defaults wherever it is run from
    default = repo / "recipes" / "work" / "skipgram.pt"
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--posterior",
        type=Path,
        default=default if default.exists() else repo / "data" / "example.pt",
        help="posterior with a vocabulary (default: %(default)s)",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "bench_serving",
        help="the packed archives, reused by later runs; gensim's files go to a temporary directory in it "
        "(default: %(default)s)",
    )
    parser.add_argument("--batches", type=positive_int, default=40, help="batches per pass (default: %(default)s)")
    parser.add_argument(
        "--repeat", type=positive_int, default=3, help="passes, the best is shown (default: %(default)s)"
    )
    args = parser.parse_args()
    if not args.posterior.is_file():
        parser.error(f"--posterior {args.posterior} is not a file")
    if args.workdir.exists() and not args.workdir.is_dir():
        parser.error(f"--workdir {args.workdir} is not a directory")
    if bnncompress.read_posterior(args.posterior).vocab is None:  # (word lookups: before three packs)
        parser.error(f"--posterior {args.posterior} has no vocabulary; the benchmark looks words up")
    args.workdir.mkdir(parents=True, exist_ok=True)
    import torch

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    table = []
    archives = {bits: packed(args.posterior, bits, args.workdir) for bits in (1, 2, 3)}
    first = bnncompress.load(archives[2])
    rows, dim = first.served_rows().shape
    zipf = [zipf_ids(rng, rows, BATCH) for _ in range(args.batches)]
    uniform = [rng.integers(0, rows, BATCH) for _ in range(args.batches)]
    zipf_t, uniform_t = [torch.from_numpy(i) for i in zipf], [torch.from_numpy(i) for i in uniform]
    words = first.vocab[:5] + first.vocab[1000:1005]

    for bits, path in archives.items():
        a = bnncompress.load(path)
        emb = a.embedding()
        with torch.no_grad():
            z = rows_per_second(emb, zipf_t, args.repeat)
            cache = emb.rows.cache
            cache.hits = cache.misses = 0
            for ids in zipf_t:
                emb(ids)
            hit = cache.hits / max(cache.hits + cache.misses, 1)
            u = rows_per_second(emb, uniform_t, args.repeat)
        sim = best_ms(a.most_similar, words)
        others = sum(record_bytes(a.record(n)) for n in a.names if n != emb.rows.name)
        held = emb.memory_bytes() + others
        table.append((f"bnncompress {bits} bit", a.file_bytes, held, cache.nbytes, z, u, hit, sim))

    kv = first.to_keyed_vectors()
    matrix = kv.vectors
    embedding = torch.nn.Embedding.from_pretrained(torch.from_numpy(matrix.copy()))
    with torch.no_grad():
        z, u = (rows_per_second(embedding, b, args.repeat) for b in (zipf_t, uniform_t))
    table.append(("torch nn.Embedding f32", matrix.nbytes, matrix.nbytes, 0, z, u, None, None))
    z, u = (rows_per_second(lambda ids: kv.vectors[ids], b, args.repeat) for b in (zipf, uniform))
    sim = best_ms(kv.most_similar, words)
    table.append(("gensim KeyedVectors", matrix.nbytes, matrix.nbytes + kv.norms.nbytes, 0, z, u, None, sim))
    from gensim.models import KeyedVectors

    # a directory of its own in --workdir (a vectors.kv of the user's there was replaced, and counted)
    with tempfile.TemporaryDirectory(dir=args.workdir, prefix="gensim-") as own:
        kv_path = Path(own) / "vectors.kv"
        # mmap= maps only the arrays save() wrote to .npy files of their own; by default gensim pickles
        # arrays of fewer than 10M elements into the .kv (a 20,000 x 100 matrix too), and they load into memory
        kv.save(str(kv_path), separately=["vectors"])
        mapped = KeyedVectors.load(str(kv_path), mmap="r")
        z, u = (rows_per_second(lambda ids: mapped.vectors[ids], b, args.repeat) for b in (zipf, uniform))
        sim = best_ms(mapped.most_similar, words)
        disk = sum(p.stat().st_size for p in Path(own).iterdir())
        arrays = [*vars(mapped).values(), *mapped.expandos.values()]
        held = sum(a.nbytes for a in arrays if isinstance(a, np.ndarray) and not isinstance(a, np.memmap))
    table.append(("gensim KeyedVectors mmap", disk, held, 0, z, u, None, sim))
    notes = []
    try:
        from compress_fasttext.quantization import quantize

        # one byte code per subvector: 4 weights each (2 bits/weight) when the dimension allows,
        # else the nearest subvector length that divides it
        sub = min((n for n in range(1, dim + 1) if dim % n == 0), key=lambda n: (abs(n - 4), n))
        pq = quantize(matrix, qdim=dim // sub, centroids=256)
        z, u = (rows_per_second(lambda ids: pq[ids], b, args.repeat) for b in (zipf, uniform))
        pq_bytes = pq.indexes.nbytes + pq.codes.nbytes
        label = f"compress-fasttext PQ {8 / sub:.3g} bit"
        table.append((label, len(pq.as_bytes), pq_bytes, 0, z, u, None, None))
    except ImportError:
        notes.append("compress-fasttext not installed (pip install compress-fasttext): its PQ row skipped")

    print(f"{args.posterior}: {rows:,} x {dim}; batches of {BATCH:,} ids; load average {os.getloadavg()[0]:.1f}")
    columns = [("file MB", 8), ("held MB", 9), ("cache MB", 9), ("zipf M/s", 9), ("unif M/s", 9), ("hit %", 7)]
    head = f"{'method':<27}" + "".join(f"{title:>{width}}" for title, width in columns) + f"{'sim ms':>8}"
    print(head)
    print("-" * len(head))
    for name, file_bytes, held, cache_bytes, z, u, hit, sim in table:
        hit_text = "-" if hit is None else f"{100 * hit:.0f}"
        sim_text = "-" if sim is None else f"{sim:.1f}"
        print(
            f"{name:<27}{file_bytes / MB:>8.2f}{held / MB:>9.2f}{cache_bytes / MB:>9.2f}"
            f"{z / 1e6:>9.2f}{u / 1e6:>9.2f}{hit_text:>7}{sim_text:>8}"
        )
    for note in notes:
        print("note:", note)


if __name__ == "__main__":
    run(main)

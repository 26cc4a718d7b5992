"""An adversarial run through the command line: hostile archives, posterior files, options and I/O faults.

    python tests/adversarial.py [--cases-per-kind 60] [--workdir DIR]

Every case runs ``bnncompress`` in a fresh process (60 s timeout) and is classified:
``exact`` (decoded to the right values), ``clean`` (exit 2, one line on stderr, nothing left
behind), ``traceback``, ``crash`` (killed by a signal), ``hang`` (timeout), ``silent`` (exit 0
with wrong values or foreign bytes), ``leftover`` (a temporary file or a partial output
remained), ``clobbered`` (a good file was replaced or damaged). It prints a table of counts per
kind and exits 1 if any case is in a bad class. Not part of the test suite (it takes minutes).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import resource
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import h5py
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from adversarial_round3 import round3  # noqa: E402  (issue 22's cases)
from test_hostile import _posterior_h5  # noqa: E402  (the hostile HDF5 posteriors of the tests)

BAD = ("traceback", "crash", "hang", "silent", "leftover", "clobbered", "refused", "probe-error")
TEMP_SUFFIX = ".bnctmp"


def cli(args: list, cwd: Path, limit_bytes: int | None = None, timeout: float = 60) -> tuple[str, str]:
    """Run the CLI; return (class, stderr). Classes: ok, clean, traceback, crash, hang."""

    def prepare():
        if limit_bytes is not None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    cmd = [sys.executable, "-m", "bnncompress.cli", *map(str, args)]
    try:
        p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, preexec_fn=prepare)
    except subprocess.TimeoutExpired:
        return "hang", ""
    err = p.stderr.strip()
    if p.returncode < 0:
        return "crash", err
    if "Traceback" in err:
        return "traceback", err
    if p.returncode == 0:
        return "ok", err
    if p.returncode == 2 and len(err.splitlines()) == 1 and err.startswith("error: "):
        return "clean", err
    return "traceback", err


def leftovers(directory: Path) -> list[Path]:
    return [p for p in directory.rglob(f"*{TEMP_SUFFIX}")]


# ----------------------------------------------------------------------------- archives


def make_archive(work: Path) -> tuple[Path, dict]:
    import bnncompress
    from bnncompress.archive import read_archive, write_archive

    rng = np.random.default_rng(0)
    parts = []
    for i, (method, post) in enumerate(
        [
            ("vbq", {"word_vectors": (rng.normal(size=(40, 6)), rng.uniform(0.01, 0.5, (40, 6)))}),
            ("pq", {"pq_vectors": (rng.normal(size=(40, 6)), np.ones((40, 6)))}),
            ("vbq-transform", {"tc": (rng.normal(size=(1100, 4)) @ rng.normal(size=(4, 4)), np.full((1100, 4), 0.1))}),
            ("vbq-direction", {"bias": (np.array([0.5]), np.array([0.01]))}),
        ]
    ):
        path = work / f"part{i}.bnc"
        bnncompress.pack(post, path, method=method, lam=0.05 if method != "pq" else 1.0)
        parts.append(read_archive(path))
    archive = work / "good.bnc"
    tensors = [t for p in parts for t in p.tensors]
    write_archive(archive, tensors, [f"w{i}" for i in range(40)], parts[0].source, parts[0].tool_version)
    a = bnncompress.load(archive)
    return archive, {n: a[n].copy() for n in a.names}


def check_archive_case(path: Path, expected: dict, work: Path) -> str:
    out = work / "out.npz"
    if out.exists():
        out.unlink()
    kind, _ = cli(["unpack", path, "-o", out, "-f"], work)
    if kind != "ok":
        info_kind, _ = cli(["info", path], work)
        return kind if kind != "clean" else (info_kind if info_kind not in ("ok", "clean") else "clean")
    with np.load(out, allow_pickle=False) as npz:
        same = set(npz.files) - {"vocab"} == set(expected) and all(
            np.array_equal(npz[n], expected[n]) for n in expected
        )
    return "exact" if same else "silent"


def corrupted_archives(work: Path, n: int, rng: random.Random):
    archive, expected = make_archive(work)
    data = archive.read_bytes()
    for i in range(n):
        damaged = bytearray(data)
        how = rng.choice(["flip", "flips", "truncate", "zero-run", "append"])
        if how == "flip":
            k = rng.randrange(len(damaged))
            damaged[k] ^= 1 << rng.randrange(8)
        elif how == "flips":
            for _ in range(rng.randint(2, 50)):
                k = rng.randrange(len(damaged))
                damaged[k] ^= 1 << rng.randrange(8)
        elif how == "truncate":
            damaged = damaged[: rng.randrange(len(damaged))]
        elif how == "zero-run":
            k = rng.randrange(len(damaged))
            damaged[k : k + rng.randint(1, 300)] = bytes(min(300, len(damaged) - k))[: len(damaged[k : k + 300])]
        else:
            damaged += bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 4096)))
        path = work / f"corrupt{i}.bnc"
        path.write_bytes(bytes(damaged))
        yield f"corrupt archive ({how})", check_archive_case(path, expected, work)


def forged_archives(work: Path, n: int, rng: random.Random):
    import hashlib

    archive, expected = make_archive(work)
    values = [None, True, -1, 0, 1, 2**31, 2**62, 2**64, 1.5, "x", [], [0, 10**12], {"a": 1}, [1, 2, 3]]
    fields = [
        "shape",
        "block_rows",
        "models",
        "raw",
        "subvectors",
        "words",
        "grid",
        "counts",
        "offsets",
        "mean",
        "rotation",
        "dtype",
        "name",
        "params",
        "method",
    ]
    for i in range(n):
        path = work / f"forged{i}.bnc"
        path.write_bytes(archive.read_bytes())
        field, value, index = rng.choice(fields), rng.choice(values), rng.randrange(4)
        with h5py.File(path, "r+") as f:
            manifest = json.loads(f["manifest"][()].tobytes())
            manifest["tensors"][index][field] = value
            raw = json.dumps(manifest).encode()
            del f["manifest"]
            f["manifest"] = np.frombuffer(raw, dtype=np.uint8)
            f.attrs["manifest_sha256"] = np.bytes_(hashlib.sha256(raw).hexdigest().encode())
        yield f"forged manifest ({field})", check_archive_case(path, expected, work)
    secret = work / "secret.bin"
    secret.write_bytes(b"root:x:0:0:" * 1000)
    for kind in ("external words", "words link", "vocab link"):
        path = work / f"external-{kind.replace(' ', '-')}.bnc"
        path.write_bytes(archive.read_bytes())
        with h5py.File(path, "r+") as f:
            if kind == "external words":
                words = f["words"][()]
                del f["words"]
                f.create_dataset("words", shape=words.shape, dtype="<u4", external=[(str(secret), 0, words.nbytes)])
            elif kind == "words link":
                del f["words"]
                f["words"] = h5py.ExternalLink(str(work / "part0.bnc"), "words")
            else:
                del f["vocab"]
                f["vocab"] = h5py.ExternalLink(str(work / "part0.bnc"), "vocab")
        yield f"archive with {kind}", check_archive_case(path, expected, work)


# ----------------------------------------------------------------------------- posterior files


def hostile_posteriors(work: Path, n: int, rng: random.Random):
    """Malformed posterior files of every dialect, each packed with the default method."""
    cases = list(_posterior_makers(work))
    for i in range(n):
        name, make = cases[i % len(cases)]
        path = make(i)
        out = work / f"post{i}.bnc"
        kind, err = cli(["pack", path, "-o", out, "-f", "--lam", "0.1"], work)
        if kind == "ok":  # accepted: it must be a real posterior whose values are its own bytes
            kind = "silent" if "secret" in name else "accepted"
        if kind == "clean" and out.exists():
            kind = "leftover"
        yield f"posterior: {name}", kind


def _safetensors(work: Path, i: int, header: object, data: bytes = b"") -> Path:
    raw = json.dumps(header).encode() if not isinstance(header, bytes) else header
    path = work / f"st{i}.safetensors"
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + data)
    return path


def _posterior_makers(work: Path):
    f32 = np.zeros(4, np.float32).tobytes()
    entry = {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}
    yield "safetensors entry not an object", lambda i: _safetensors(work, i, {"w.loc": 3, "w.scale": entry}, f32)
    yield (
        "safetensors missing offsets",
        lambda i: _safetensors(work, i, {"w.loc": {"dtype": "F32", "shape": [4]}, "w.scale": entry}, f32),
    )
    yield (
        "safetensors vocab not a string",
        lambda i: _safetensors(work, i, {"__metadata__": {"vocab": 5}, "w.loc": entry, "w.scale": entry}, f32),
    )
    yield "safetensors deeply nested", lambda i: _safetensors(work, i, b"[" * 100000 + b"]" * 100000)
    yield (
        "safetensors 2^24 x 4 over 960 bytes",
        lambda i: _safetensors(
            work,
            i,
            {"w.loc": {"dtype": "F32", "shape": [1 << 24, 4], "data_offsets": [0, 1 << 28]}, "w.scale": entry},
            bytes(960),
        ),
    )
    yield (
        "safetensors 2^40 rows",
        lambda i: _safetensors(
            work,
            i,
            {"w.loc": {"dtype": "F32", "shape": [1 << 40, 1], "data_offsets": [0, 960]}, "w.scale": entry},
            bytes(960),
        ),
    )
    yield "npy claiming 2^40 values", lambda i: _npy_dir(work, i, (1 << 40,))
    yield "npz member claiming 2^40 values", lambda i: _npz(work, i)
    yield "hdf5 external storage (secret)", lambda i: _h5(work, i, "external storage")
    yield "hdf5 virtual dataset", lambda i: _h5(work, i, "virtual dataset")
    yield "hdf5 external link", lambda i: _h5(work, i, "external link")
    yield "hdf5 soft link", lambda i: _h5(work, i, "soft link")
    yield "hdf5 external link vocab", lambda i: _h5(work, i, "vocab link")
    yield "hdf5 never-written 2^40", lambda i: _h5(work, i, "never written")
    yield "torch sparse tensor", lambda i: _torch(work, i, "sparse")
    yield "torch meta tensor", lambda i: _torch(work, i, "meta")
    yield "torch malicious pickle", lambda i: _torch(work, i, "pickle")
    yield "vocabulary with NUL", lambda i: _npz_vocab(work, i, ["a\x00", "b"])
    yield "vocabulary with a lone surrogate", lambda i: _torch(work, i, "surrogate")
    yield "NaN means", lambda i: _npz_values(work, i, np.array([np.nan, 1.0]), np.ones(2))
    yield "zero scales", lambda i: _npz_values(work, i, np.ones(2), np.zeros(2))
    yield "empty file", lambda i: _bytes(work, i, b"")
    yield "random bytes", lambda i: _bytes(work, i, os.urandom(5000))


def _npy_dir(work: Path, i: int, shape: tuple) -> Path:
    d = work / f"npy{i}"
    d.mkdir(exist_ok=True)
    for k in ("loc", "scale"):
        with open(d / f"w.{k}.npy", "wb") as fh:
            np.lib.format.write_array_header_1_0(fh, {"descr": "<f4", "fortran_order": False, "shape": shape})
            fh.write(bytes(64))
    return d


def _npz(work: Path, i: int) -> Path:
    import io
    import zipfile

    path = work / f"z{i}.npz"
    with zipfile.ZipFile(path, "w") as zf:
        for k in ("w.loc", "w.scale"):
            buf = io.BytesIO()
            np.lib.format.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False, "shape": (1 << 40,)})
            buf.write(bytes(64))
            zf.writestr(f"{k}.npy", buf.getvalue())
    return path


def _npz_vocab(work: Path, i: int, vocab: list[str]) -> Path:
    path = work / f"v{i}.npz"
    np.savez(path, **{"w.loc": np.zeros((2, 2)), "w.scale": np.ones((2, 2)), "vocab": np.array(vocab)})
    return path


def _npz_values(work: Path, i: int, loc: np.ndarray, scale: np.ndarray) -> Path:
    path = work / f"n{i}.npz"
    np.savez(path, **{"w.loc": loc, "w.scale": scale})
    return path


def _bytes(work: Path, i: int, data: bytes) -> Path:
    path = work / f"b{i}.pt"
    path.write_bytes(data)
    return path


def _h5(work: Path, i: int, kind: str) -> Path:
    path = work / f"h{i}.h5"
    _posterior_h5(path, kind, work / "other.h5")
    return path


def _torch(work: Path, i: int, kind: str) -> Path:
    import pickle

    import torch

    path = work / f"t{i}.pt"
    if kind == "sparse":
        torch.save({"w": {"loc": torch.zeros(3, 3).to_sparse(), "scale": torch.ones(3, 3)}}, path)
    elif kind == "meta":
        torch.save({"w": {"loc": torch.zeros(3, device="meta"), "scale": torch.ones(3)}}, path)
    elif kind == "surrogate":
        torch.save({"w": {"loc": torch.zeros(2, 2), "scale": torch.ones(2, 2)}, "vocab": ["\ud800", "b"]}, path)
    else:

        class Evil:
            def __reduce__(self):
                return (os.system, (f"touch {work / 'pwned'}",))

        path.write_bytes(pickle.dumps({"w": Evil()}))
    return path


# ----------------------------------------------------------------------------- options and I/O


def hostile_options(work: Path, n: int, rng: random.Random):
    src = work / "small.npz"
    rng_np = np.random.default_rng(1)
    np.savez(src, **{"w.loc": rng_np.normal(size=(300, 8)), "w.scale": np.full((300, 8), 0.1)})
    bad = [
        ["--option", "seed=1e30", "--method", "pq"],
        ["--option", "max_level=40", "--method", "vbq"],
        ["--option", "trust=-1"],
        ["--option", "iterations=1.5"],
        ["--option", "transform=dct"],
        ["--option", "nonsense"],
        ["--option", "=3"],
        ["--option", "step=1e400"],
        ["--scheduler", "garbage"],
        ["--scheduler", "tcp://127.0.0.1:1"],
        ["--workers", "0"],
        ["--workers", "-3"],
        ["--workers", "100000"],
        ["--bits", "-1"],
        ["--bits", "nan"],
        ["--bits", "inf"],
        ["--bits", "1e300"],
        ["--bits", "0"],
        ["--lam", "nan"],
        ["--lam", "-1"],
        ["--lam", "inf"],
        ["--bits", "2", "--lam", "1"],
        ["--method", "nope"],
        ["--tensor", "missing"],
        ["--device", "tpu"],
        ["--vocab", "/nonexistent"],
        ["--method", "float16", "--bits", "2"],
        ["--method", "kmeans", "--stream"],
        ["--method", "pq", "--workers", "1"],
    ]
    for i in range(n):
        args = bad[i % len(bad)]
        out = work / f"opt{i}.bnc"
        kind, _ = cli(["pack", src, "-o", out, *args], work)
        if kind == "ok":
            kind = "accepted"
        yield f"option {' '.join(args)}", kind


def io_faults(work: Path, n: int, rng: random.Random):
    import bnncompress

    src = work / "io.npz"
    np.savez(src, **{"w.loc": np.random.default_rng(2).normal(size=(3000, 50)), "w.scale": np.full((3000, 50), 0.1)})
    good = work / "io-good.bnc"
    bnncompress.pack(src, good, lam=0.5)
    precious = good.read_bytes()
    for i in range(n):
        limit = rng.choice([0, 100, 2000, 4096, 20000, 60000, 150000])
        which = rng.choice(["pack", "unpack-npz", "unpack-pt", "unpack-w2v"])
        target = work / f"fault{i}"
        target.mkdir(exist_ok=True)
        dest = target / (
            "out.bnc" if which == "pack" else {"unpack-npz": "o.npz", "unpack-pt": "o.pt"}.get(which, "o.txt")
        )
        dest.write_bytes(precious)
        args = (
            ["pack", src, "-o", dest, "-f", "--lam", "0.1"] if which == "pack" else ["unpack", good, "-o", dest, "-f"]
        )
        if which == "unpack-w2v":
            args = ["unpack", good, "-o", dest, "-f", "--format", "word2vec", "--tensor", "w"]
        kind, err = cli(args, target, limit_bytes=limit)
        if kind in ("clean", "ok"):
            if leftovers(target):
                kind = "leftover"
            elif kind == "clean" and dest.read_bytes() != precious:
                kind = "clobbered"
        yield f"I/O fault ({which}, {limit} B)", kind
    for name, make in (("fifo", os.mkfifo), ("directory", os.mkdir)):
        path = work / f"special-{name}"
        make(path)
        kind, _ = cli(["pack", src, "-o", path, "-f", "--lam", "0.1"], work)
        yield f"output is a {name}", kind if kind != "ok" else "clobbered"
    link = work / "link.bnc"
    (work / "link-target").write_bytes(b"keep")
    link.symlink_to(work / "link-target")
    kind, _ = cli(["pack", src, "-o", link, "-f", "--lam", "0.1"], work)
    yield "output is a symlink", kind if (work / "link-target").read_bytes() == b"keep" else "clobbered"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases-per-kind", type=int, default=60, help="cases per kind (default: 60)")
    parser.add_argument("--workdir", type=Path, help="where to write the cases (default: a temporary directory)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--only", choices=("all", "round3", "earlier"), default="all", help="which groups to run")
    parser.add_argument("--skip", default="", help="skip the groups whose name contains this text")
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bnc-adversarial-"))
    work.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)
    n = args.cases_per_kind
    results: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    bad_cases = []
    earlier = (
        ("corrupted archives", corrupted_archives(work, n, rng)),
        ("forged archives", forged_archives(work, n, rng)),
        ("posterior files", hostile_posteriors(work, n, rng)),
        ("options", hostile_options(work, n // 2, rng)),
        ("I/O faults", io_faults(work, n // 2, rng)),
    )
    groups = {"all": (*earlier, *round3(work)), "round3": round3(work), "earlier": earlier}[args.only]
    for group, cases in groups:
        if args.skip and args.skip in group:
            continue
        for label, kind in cases:
            results[group][kind] += 1
            if kind in BAD:
                bad_cases.append((label, kind))
            print(f"{group:<20} {kind:<10} {label}", flush=True)
    if (work / "pwned").exists():
        bad_cases.append(("malicious pickle", "executed"))
    kinds = sorted({k for c in results.values() for k in c})
    print("\n| group | " + " | ".join(kinds) + " | total |")
    print("|---|" + "---|" * (len(kinds) + 1))
    for group, counts in results.items():
        print(f"| {group} | " + " | ".join(str(counts.get(k, 0)) for k in kinds) + f" | {sum(counts.values())} |")
    total = sum(sum(c.values()) for c in results.values())
    print(f"\n{total} hostile inputs; {len(bad_cases)} in a bad class: {bad_cases[:20]}")
    sys.exit(1 if bad_cases else 0)


if __name__ == "__main__":
    main()

"""Round 3 of the adversarial run: the everyday and hostile cases of issue 22, as generators for
``tests/adversarial.py`` (crash, hang, foreign bytes, clobbered files, silent wrong values, CLI
tracebacks, legitimate inputs refused, Python-API misuse, command-line conventions).

Each generator yields ``(label, class)`` with the classes of ``adversarial.py``; a case that must
succeed is ``ok`` when it did what it should and ``silent`` / ``refused`` when it did not.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import h5py
import numpy as np

EXAMPLE = Path(__file__).resolve().parent.parent / "data" / "example.pt"


def run(args: list, cwd: Path, env: dict | None = None, timeout: float = 60, stdin=None) -> subprocess.CompletedProcess:
    """Run ``python -m bnncompress.cli ARGS``; a timeout gives returncode None."""
    cmd = [sys.executable, "-m", "bnncompress.cli", *map(str, args)]
    try:
        return subprocess.run(
            cmd, cwd=cwd, capture_output=True, timeout=timeout, env={**os.environ, **(env or {})}, stdin=stdin
        )
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(cmd, None, b"", b"")


def classify(p: subprocess.CompletedProcess) -> str:
    """ok, clean (exit 2 and one line 'error: ...'), traceback, crash or hang."""
    if p.returncode is None:
        return "hang"
    err = p.stderr.decode(errors="replace").strip()
    if p.returncode < 0:
        return "crash"
    if "Traceback" in err:
        return "traceback"
    if p.returncode == 0:
        return "ok"
    lines = [line for line in err.splitlines() if not line.startswith("warning: ")]
    if p.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "):
        return "clean"
    return "traceback"


def must_refuse(p: subprocess.CompletedProcess) -> str:
    kind = classify(p)
    return "silent" if kind == "ok" else kind


def must_work(p: subprocess.CompletedProcess) -> str:
    kind = classify(p)
    return "refused" if kind == "clean" else kind


def _npz(path: Path, loc, scale, **extra) -> Path:
    np.savez(path, **{"w.loc": np.asarray(loc), "w.scale": np.asarray(scale)}, **extra)
    return path


def _decoded(path: Path, name: str = "w") -> np.ndarray:
    import bnncompress

    return np.asarray(bnncompress.load(path)[name])


# ----------------------------------------------------------------------------- crashes and hangs


def crashes_and_hangs(work: Path, repeats: int = 3):
    rng = np.random.default_rng(0)
    src = _npz(work / "huge.npz", rng.choice([-3e38, 3e38], (300, 8)).astype("f4"), np.full((300, 8), 1e37, np.float32))
    methods = ("vbq-transform", "vbq-direction", "vbq", "vbq-empirical", "uniform", "kmeans", "weighted-kmeans")
    for method in methods:
        for r in range(repeats):
            out = work / f"huge-{method}-{r}.bnc"
            p = run(["pack", src, "-o", out, "-f", "--method", method], work)
            kind = classify(p)
            if kind == "ok" and (b"Warning" in p.stderr or not np.isfinite(_decoded(out)).all()):
                kind = "silent"
            yield f"±3e38 means, scale 1e37 ({method})", kind
    d = work / "fifo-npy"
    d.mkdir(exist_ok=True)
    np.save(d / "w.scale.npy", np.ones((3, 2)))
    if not (d / "w.loc.npy").exists():
        os.mkfifo(d / "w.loc.npy")
    p = run(["pack", d, "-o", work / "f.bnc"], work, timeout=30)
    yield "FIFO named w.loc.npy in a .npy directory", must_refuse(p)
    fifo = work / "fifo.npz"
    if not fifo.exists():
        os.mkfifo(fifo)
    yield "FIFO as the posterior", must_refuse(run(["pack", fifo, "-o", work / "f2.bnc"], work, timeout=30))
    small = _npz(work / "sched.npz", rng.normal(size=(200, 8)), np.full((200, 8), 0.1))
    for label, server in (("HTTP server", _http_server), ("silent server", _silent_server)):
        port = server()
        p = run(["pack", small, "-o", work / "s.bnc", "-f", "--scheduler", f"tcp://127.0.0.1:{port}"], work, timeout=90)
        yield f"--scheduler at a {label}", must_refuse(p)
    for address in ("inproc://x", "ucx://127.0.0.1:1", "tls://127.0.0.1:1", "http://127.0.0.1:1"):
        p = run(["pack", small, "-o", work / "s.bnc", "-f", "--scheduler", address], work, timeout=90)
        yield f"--scheduler {address}", must_refuse(p)
    for var, value in (
        ("NUMBA_NUM_THREADS", "0"),
        ("NUMBA_DISABLE_JIT", "1"),
        ("NUMBA_THREADING_LAYER", "tbb"),
        ("NUMBA_THREADING_LAYER", "bogus"),
    ):
        p = run(["pack", small, "-o", work / "n.bnc", "-f", "--bits", "2"], work, env={var: value}, timeout=300)
        yield f"{var}={value}", classify(p) if classify(p) != "ok" else "ok"
    tiny = work / "tiny-tensors.bnc"
    if not tiny.exists():
        _many_tensor_archive(tiny, 200_000)
    start = time.perf_counter()
    p = run(["info", tiny], work, timeout=60)
    seconds = time.perf_counter() - start
    yield f"info on 200,000 one-element tensors ({seconds:.1f} s)", classify(p) if seconds < 10 else "hang"


def _many_tensor_archive(path: Path, count: int) -> None:
    import bnncompress

    post = {f"t{i}": (np.array([0.1 * (i % 7)]), np.array([0.5])) for i in range(count)}
    bnncompress.pack(post, path, method="float16")


def _serve(handler) -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)

    def loop():
        deadline = time.time() + 600
        sock.settimeout(5)
        while time.time() < deadline:
            try:
                conn, _ = sock.accept()
            except OSError:
                continue
            threading.Thread(target=handler, args=(conn,), daemon=True).start()

    threading.Thread(target=loop, daemon=True).start()
    return sock.getsockname()[1]


def _http_server() -> int:
    def answer(conn):
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi" * 4)
        time.sleep(30)
        conn.close()

    return _serve(answer)


def _silent_server() -> int:
    return _serve(lambda conn: time.sleep(120))


# ----------------------------------------------------------------------------- foreign bytes and clobbered files


def foreign_bytes(work: Path):
    rng = np.random.default_rng(1)
    outside = work / "outside.npy"
    np.save(outside, rng.normal(size=(4, 2)))
    for label, link in (("vocab.txt -> /etc/passwd", "vocab"), ("w.loc.npy -> a .npy outside", "loc")):
        d = work / f"links-{link}"
        d.mkdir(exist_ok=True)
        np.save(d / "w.scale.npy", np.ones((4, 2)))
        if link == "vocab":
            np.save(d / "w.loc.npy", rng.normal(size=(4, 2)))
            target, name = Path("/etc/passwd"), "vocab.txt"
        else:
            target, name = outside, "w.loc.npy"
        if not (d / name).is_symlink():
            (d / name).symlink_to(target)
        out = work / f"links-{link}.bnc"
        p = run(["pack", d, "-o", out, "-f"], work)
        kind = must_refuse(p)
        yield f"npy directory with {label}", kind


def clobbered(work: Path):
    corpus = work / "corpus.txt"
    corpus.write_text("the king and the queen rule the land\n" * 200)
    keep = corpus.read_bytes()
    p = run(["train", corpus, "-o", corpus, "-f", "--epochs", "1", "--dim", "8"], work)
    yield "train corpus.txt -o corpus.txt -f", "clobbered" if corpus.read_bytes() != keep else must_refuse(p)
    hard = work / "corpus-hardlink.txt"
    if not hard.exists():
        os.link(corpus, hard)
    p = run(["train", corpus, "-o", hard, "-f", "--epochs", "1", "--dim", "8"], work)
    yield "train -o a hard link to the corpus -f", "clobbered" if corpus.read_bytes() != keep else must_refuse(p)
    vec = work / "vec.txt"
    vec.write_text("3 2\nthe 0.1 0.2\nking 0.3 0.4\nqueen 0.5 0.6\n")
    vkeep = vec.read_bytes()
    p = run(["train", corpus, "--init", vec, "-o", vec, "-f", "--epochs", "1"], work)
    yield "train --init vec.txt -o vec.txt -f", "clobbered" if vec.read_bytes() != vkeep else must_refuse(p)
    emb = work / "emb.npz"
    _npz(emb, rng_normal((50, 4)), np.full((50, 4), 0.1), vocab=np.array([f"w{i}" for i in range(50)]))
    ekeep = emb.read_bytes()
    p = run(["sweep", emb, "--methods", "uniform", "--bits", "2", "-o", emb, "-f"], work)
    yield "sweep emb.npz -o emb.npz -f", "clobbered" if emb.read_bytes() != ekeep else must_refuse(p)
    p = run(["sweep", emb, "--methods", "uniform", "--bits", "2", "-o", work / "r.csv", "--plot", emb, "-f"], work)
    yield "sweep --plot names the posterior", "clobbered" if emb.read_bytes() != ekeep else classify(p)


def rng_normal(shape, seed=2):
    return np.random.default_rng(seed).normal(size=shape)


# ----------------------------------------------------------------------------- silent wrong values


def silent_values(work: Path):
    import torch

    import bnncompress

    words = np.array([b"king", b"queen", b"man"], dtype="S")
    src = _npz(work / "bytes-vocab.npz", rng_normal((3, 4)), np.full((3, 4), 0.1), vocab=words)
    out = work / "bytes-vocab.bnc"
    p = run(["pack", src, "-o", out, "-f"], work)
    kind = classify(p)
    if kind == "ok":
        kind = "ok" if list(bnncompress.load(out).vocab) == ["king", "queen", "man"] else "silent"
    yield "npz vocabulary of dtype S", kind
    yield (
        "pack(vocab=[b'king', ...])",
        _api(
            "import bnncompress, numpy as np\n"
            f"bnncompress.pack({{'w': (np.zeros((2, 2)), np.ones((2, 2)))}}, r'{work / 'bv.bnc'}',\n"
            "                 vocab=[b'king', b'man'])\n"
            f"v = list(bnncompress.load(r'{work / 'bv.bnc'}').vocab)\n"
            "print('OK' if v == ['king', 'man'] else 'WRONG ' + repr(v))",
            work,
        ),
    )
    named = work / "named-vocab.bnc"
    two = work / "named-vocab-src.npz"
    np.savez(two, **{f"{n}.{k}": rng_normal((3, 2)) ** 2 for n in ("vocab", "w") for k in ("loc", "scale")})
    bnncompress.pack(two, named, vocab=["a", "b", "c"], method="uniform", bits=8)
    npz = work / "named-vocab.npz"
    p = run(["unpack", named, "-o", npz, "-f"], work)
    kind = classify(p)
    if kind == "ok":
        a = bnncompress.load(named)
        with np.load(npz, allow_pickle=False) as z:
            kept = [k for k in z.files if z[k].dtype.kind == "f"]
            kind = "ok" if len(kept) == 2 and any(np.array_equal(z[k], a["vocab"]) for k in kept) else "silent"
    yield "npz export of a tensor named vocab", kind
    pt = work / "collide.pt"
    torch.save(
        {
            "w": {"loc": torch.zeros(2, 2), "scale": torch.ones(2, 2)},
            "w.loc": torch.ones(2, 2),
            "w.scale": torch.ones(2, 2),
        },
        pt,
    )
    yield "two tensors named w in a .pt", must_refuse(run(["pack", pt, "-o", work / "c.bnc", "-f"], work))
    h5 = work / "collide.h5"
    with h5py.File(h5, "w") as f:
        f["w/loc"], f["w/scale"] = np.zeros((2, 2)), np.ones((2, 2))
        f["w.loc"], f["w.scale"] = np.ones((2, 2)), np.ones((2, 2))
    yield "w/loc and w.loc in HDF5", must_refuse(run(["pack", h5, "-o", work / "c2.bnc", "-f"], work))
    loc = np.random.default_rng(3).normal(size=(3000, 8))
    loc[5, 3] = 30.0
    outlier = _npz(work / "outlier.npz", loc, np.full((3000, 8), 0.05))
    heavy = _npz(work / "heavy.npz", np.random.default_rng(4).standard_t(2, size=(5000, 20)), np.full((5000, 20), 0.02))
    for method in ("vbq-direction", "vbq", "vbq-empirical", "vbq-transform", "uniform"):
        out = work / f"outlier-{method}.bnc"
        kind = classify(run(["pack", outlier, "-o", out, "-f", "--method", method, "--lam", "0.1"], work))
        if kind == "ok":
            kind = "ok" if abs(_decoded(out)[5, 3] - 30.0) < 100 * 0.05 else "silent"
        yield f"one mean at 30 ({method}, lam 0.1)", kind
        out = work / f"heavy-{method}.bnc"
        p = run(["pack", heavy, "-o", out, "-f", "--method", method, "--bits", "4"], work)
        kind = classify(p)
        if kind == "ok":  # weights 100+ sd away must not be there, or be reported
            far = int((np.abs(_decoded(out) - np.load(heavy)["w.loc"]) > 100 * 0.02).sum())
            kind = "ok" if far == 0 or b"standard deviations" in p.stderr else "silent"
        yield f"Student-t(2) means at 4 bits ({method})", kind
    corpus = work / "corpus.txt"
    for label, extra in (("--lr inf", ["--lr", "inf"]), ("--lr 1e30", ["--lr", "1e30"])):
        yield f"train {label}", _train_output_packs(work, corpus, extra)
    for label, value in (("nan", "nan"), ("inf", "inf"), ("1e38", "1e38")):
        vec = work / f"init-{label}.txt"
        vec.write_text(f"2 2\nthe {value} 0.2\nking 0.3 0.4\n")
        yield f"train --init vectors holding {label}", _train_output_packs(work, corpus, ["--init", vec])
    p = run(["pack", EXAMPLE, "-o", work / "low.bnc", "-f", "--bits", "0.05"], work, timeout=120)
    kind = classify(p)
    if kind == "ok":
        kind = "ok" if b"warning" in p.stderr.lower() else "silent"
    yield "--bits 0.05 collapses rows", kind
    yield "Archive.rows() answers alike before and after decoding", _api(_ROWS_CHECK.replace("PATH", str(named)), work)


def _train_output_packs(work: Path, corpus: Path, extra: list) -> str:
    out = work / "trained.pt"
    p = run(["train", corpus, "-o", out, "-f", "--epochs", "1", "--dim", "2", *extra], work, timeout=120)
    kind = classify(p)
    if kind == "ok":  # it wrote a posterior: it must be one that packs
        kind = "ok" if classify(run(["pack", out, "-o", work / "trained.bnc", "-f"], work)) == "ok" else "silent"
    return kind


_ROWS_CHECK = """
import numpy as np, bnncompress
kinds = [0, -1, np.int64(2), [0, 2], np.array([[0, 1], [2, 0]]), slice(0, 2), slice(None, None, -1),
         np.array([True, False, True]), 1.0, "1", np.array([0.0, 1.0]), (0, 1), 3, -4, 2**63, [True, False]]
def answer(a, k):
    try:
        return ("ok", np.asarray(a.rows("w", k)).tolist())
    except Exception as e:
        return ("error", type(e).__name__)
before = [answer(bnncompress.load(r"PATH"), k) for k in kinds]
a = bnncompress.load(r"PATH"); full = np.asarray(a["w"])
after = [answer(a, k) for k in kinds]
def truth(k):
    try:
        if isinstance(k, (float, str, tuple)) or (isinstance(k, np.ndarray) and k.dtype.kind == "f"):
            return ("error", None)
        return ("ok", full[k].tolist())
    except Exception as e:
        return ("error", None)
bad = [(repr(k), b, c) for k, b, c in zip(kinds, before, after)
       if b[0] != c[0] or (b[0] == "ok" and b != c) or b[0] != truth(k)[0] or (b[0] == "ok" and b != truth(k))]
print("OK" if not bad else "WRONG " + repr(bad))
"""


def _api(code: str, work: Path, timeout: float = 120) -> str:
    try:
        p = subprocess.run([sys.executable, "-c", code], cwd=work, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "hang"
    if p.returncode < 0:
        return "crash"
    text = p.stdout.decode(errors="replace")
    return "ok" if p.returncode == 0 and "OK" in text and "WRONG" not in text else "silent"


# ----------------------------------------------------------------------------- tracebacks and refusals


def cli_tracebacks(work: Path):
    import bnncompress

    words = "the king and queen rule land".split() + [f"w{i}" for i in range(14)]
    cases = {
        "duplicated word": "3 2\nking 0.1 0.2\nking 0.3 0.4\nman 0.5 0.6\n",
        "blank lines": "2 2\n\nking 0.1 0.2\n\nman 0.3 0.4\n",
        "empty file": "",
    }
    for label, text in cases.items():
        path = work / f"vec-{label.replace(' ', '-')}.txt"
        path.write_text(text)
        yield f"eval on a word2vec file with {label}", classify(run(["eval", path], work))
        if label == "empty file":
            yield (
                "train --init on an empty file",
                classify(run(["train", work / "corpus.txt", "--init", path, "-o", work / "e.pt", "-f"], work)),
            )
    arch = work / "w2v.bnc"
    bnncompress.pack({"w": (rng_normal((20, 4)), np.full((20, 4), 0.1))}, arch, vocab=words, method="uniform", bits=8)
    own = work / "own.bin"
    run(["unpack", arch, "-o", own, "-f", "--format", "word2vec"], work)
    yield "eval on the tool's own unpack -o v.bin", must_work(run(["eval", own], work))
    yield (
        "train --init the tool's own unpack -o v.bin",
        must_work(run(["train", work / "corpus.txt", "--init", own, "-o", work / "i.pt", "-f", "--epochs", "1"], work)),
    )
    corpus = work / "corpus.txt"
    for args in (["--seed", "-1"], ["--dim", "1000000000"], ["--negatives", "10000000"], ["--device", "cuda"]):
        yield f"train {' '.join(args)}", classify(run(["train", corpus, "-o", work / "t.pt", "-f", *args], work))
    long_name = work / ("x" * 240 + ".bnc")
    small = _npz(work / "ln.npz", rng_normal((20, 4)), np.full((20, 4), 0.1))
    yield "an output name of 244 bytes", must_work(run(["pack", small, "-o", long_name, "-f"], work))
    yield "safetensors line vocabulary starting with [PAD]", _safetensors_pad(work)


def _safetensors_pad(work: Path) -> str:
    from safetensors.numpy import save_file

    path = work / "pad.safetensors"
    arr = np.zeros((3, 2), np.float32)
    save_file({"w.loc": arr, "w.scale": arr + 1}, str(path), metadata={"vocab": "[PAD]\nking\nman"})
    p = run(["pack", path, "-o", work / "pad.bnc", "-f"], work)
    kind = must_work(p)
    if kind == "ok":
        import bnncompress

        kind = "ok" if list(bnncompress.load(work / "pad.bnc").vocab) == ["[PAD]", "king", "man"] else "silent"
    return kind


_W = "{'w': (np.zeros((4, 2)), np.ones((4, 2)))}"
_API_MISUSE = {
    "pack(options='prune=0.1')": (f"pack({_W}, 'o.bnc', options='prune=0.1')", "options"),
    "pack(vocab=123)": (f"pack({_W}, 'o.bnc', vocab=123)", "vocab"),
    "pack(output=123)": (f"pack({_W}, 123)", "output"),
    "pack(progress=5)": (f"pack({_W}, 'o.bnc', progress=5)", "progress"),
    "pack(device='tpu')": (f"pack({_W}, 'o.bnc', device='tpu')", "device"),
    "load(None)": ("load(None)", ""),
    "load(b'...')": ("load(b'not an archive')", ""),
    "evaluate(a, restrict_vocab=2.5)": ("evaluate(load('a.bnc'), restrict_vocab=2.5)", "restrict_vocab"),
    "rows() with 2**63": ("load('a.bnc').rows('w', 2**63)", ""),
    "rows() with a 2-D float array": ("load('a.bnc').rows('w', np.zeros((2, 2)))", ""),
}


def api_misuse(work: Path):
    import bnncompress

    bnncompress.pack(
        {"w": (rng_normal((20, 4)), np.full((20, 4), 0.1))},
        work / "a.bnc",
        vocab=[f"w{i}" for i in range(20)],
        method="uniform",
        bits=8,
    )
    for label, (call, parameter) in _API_MISUSE.items():
        code = (
            "import numpy as np, bnncompress\nfrom bnncompress import *\nimport traceback\n"
            f"try:\n    {call}\n    print('ACCEPTED')\n"
            "except (TypeError, ValueError, IndexError, KeyError, bnncompress.BnnCompressError) as e:\n"
            "    tb = traceback.extract_tb(e.__traceback__)\n"
            "    deep = any(('numpy' in f.filename or 'h5py' in f.filename or 'gensim' in f.filename) for f in tb)\n"
            f"    named = {parameter!r} in str(e)\n"
            "    print('OK' if not deep and named else 'WRONG ' + type(e).__name__ + ': ' + str(e))\n"
        )
        p = subprocess.run([sys.executable, "-c", code], cwd=work, capture_output=True, timeout=120)
        text = p.stdout.decode(errors="replace")
        if "ACCEPTED" in text:
            kind = "silent"
        else:
            kind = "ok" if "OK" in text else ("traceback" if "WRONG" in text or p.returncode else "silent")
        yield f"API: {label}", kind


# ----------------------------------------------------------------------------- conventions


def conventions(work: Path):
    import bnncompress

    small = _npz(work / "conv.npz", rng_normal((200, 8)), np.full((200, 8), 0.1))
    p = run(["--version"], work)
    yield "bnncompress --version", "ok" if p.returncode == 0 and p.stdout.strip() else classify(p)
    p = subprocess.run([sys.executable, "-m", "bnncompress", "--help"], cwd=work, capture_output=True, timeout=60)
    yield "python -m bnncompress --help", "ok" if p.returncode == 0 and b"pack" in p.stdout else "refused"
    p = run([], work)
    yield "bare bnncompress", "ok" if b"error" not in (p.stdout + p.stderr).lower() else "refused"
    arch = work / "conv.bnc"
    bnncompress.pack(small, arch, vocab=None, method="uniform", bits=4)
    for cmd in (["info", arch, "-q"], ["unpack", arch, "-o", work / "conv-q.npz", "-f", "-q"]):
        p = run(cmd, work)
        yield f"{cmd[0]} -q", "ok" if classify(p) == "ok" and not p.stdout.strip() else "refused"
    p = run(["pack", small, "-o", "-", "--bits", "2"], work)
    ok = classify(p) == "ok" and p.stdout[:8] == b"\x89HDF\r\n\x1a\n" and not (work / "-").exists()
    yield "pack -o - writes the archive to stdout", "ok" if ok else "refused"
    with open(small, "rb") as fh:
        p = run(["pack", "-", "-o", work / "stdin.bnc", "-f"], work, stdin=fh)
    yield "pack - reads stdin (or refuses in one line)", classify(p)
    low = _npz(work / "conv-const.npz", np.zeros((300, 8)) + rng_normal((300, 1)), np.full((300, 8), 3.0))
    p = run(["pack", low, "-o", work / "cw.bnc", "-f", "--bits", "0.1"], work)
    warn_lines = [line for line in p.stderr.decode().splitlines() if "arning" in line]
    raw = any("warnings.warn" in line or ".py:" in line for line in warn_lines)
    once = len(warn_lines) == len(set(warn_lines)) and all(line.startswith("warning: ") for line in warn_lines)
    yield "a QualityWarning is one line, once", "ok" if classify(p) == "ok" and once and not raw else "silent"
    p = run(["pack", low, "-o", work / "cw.bnc", "-f", "--bits", "0.1", "-q"], work)
    yield "-q hides QualityWarnings", "ok" if classify(p) == "ok" and not p.stderr.strip() else "silent"
    d = work / "somedir"
    d.mkdir(exist_ok=True)
    p = run(["pack", small, "-o", d], work)
    yield "-o somedir says it is a directory", "ok" if b"directory" in p.stderr else "refused"
    start = time.perf_counter()
    p = run(["pack", EXAMPLE, "-o", work / "lam0.bnc", "--lam", "0"], work)
    yield f"--lam 0 refused before reading ({time.perf_counter() - start:.1f} s)", must_refuse(p)
    p = run(["unpack", arch, "-t", "nope", "-o", work / "nope.npz"], work)
    yield "unpack -t nope without stray quotes", "ok" if classify(p) == "clean" and b"''" not in p.stderr else "refused"
    bad_metavar = False
    for cmd in ("pack", "unpack", "info", "eval", "sweep", "train"):
        p = run([cmd, "--help"], work)
        bad_metavar |= b"list[" in p.stdout or b"<" in p.stdout and b">" in p.stdout and b"list" in p.stdout
    yield "help shows readable metavars", "refused" if bad_metavar else "ok"
    words = [f"w{i}" for i in range(200)]
    varch = work / "conv-vocab.bnc"
    bnncompress.pack(small, varch, vocab=words, method="uniform", bits=4)
    pt = work / "conv.pt"
    p = run(["unpack", varch, "-o", pt, "-f", "--format", "pt"], work)
    kind = classify(p)
    if kind == "ok":
        import torch

        state = torch.load(pt, weights_only=True)
        kind = "ok" if json.dumps(state, default=str).count("w199") else "silent"
    yield "unpack --format pt keeps the vocabulary", kind
    kv = work / "conv.kv"
    p = run(["unpack", varch, "-o", kv, "-f", "-t", "w"], work)
    kind = must_work(p)
    if kind == "ok":
        from gensim.models import KeyedVectors

        kind = "ok" if len(KeyedVectors.load(str(kv))) == 200 else "silent"
    yield "unpack -o x.kv (gensim native)", kind


def _guarded(cases):
    """The cases of a generator; an exception in the probe itself ends the group as one ``probe-error``."""
    try:
        yield from cases
    except Exception as exc:  # noqa: BLE001 - report and go on with the next group
        yield f"probe failed: {type(exc).__name__}: {str(exc)[:200]}", "probe-error"


def round3(work: Path):
    """Every group of round 3, as (group, generator) pairs."""
    return tuple(
        (group, _guarded(cases))
        for group, cases in (
            ("r3 crashes and hangs", crashes_and_hangs(work)),
            ("r3 foreign bytes", foreign_bytes(work)),
            ("r3 clobbered", clobbered(work)),
            ("r3 silent values", silent_values(work)),
            ("r3 tracebacks", cli_tracebacks(work)),
            ("r3 python API", api_misuse(work)),
            ("r3 conventions", conventions(work)),
        )
    )

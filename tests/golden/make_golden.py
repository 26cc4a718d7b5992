"""Write the golden archive of the current format version and the values it must decode to.

Run once when a new format version is introduced (never to "fix" a failing golden test):

    python tests/golden/make_golden.py

It writes tests/golden/v<N>.bnc and tests/golden/v<N>_expected.npz. Older versions' files are
kept forever: tests/test_golden.py checks that every one of them still decodes exactly.
"""

from pathlib import Path

import numpy as np

import bnncompress
from bnncompress.archive import FORMAT_VERSION

HERE = Path(__file__).parent


def main() -> None:
    rng = np.random.default_rng(2020)
    rows = 1100 if FORMAT_VERSION >= 3 else 30  # version 3: enough rows for per-column models and a rotation
    mixing = rng.normal(size=(4, 4))
    posterior = {
        "word_vectors": (rng.normal(size=(rows, 4)) @ mixing, rng.uniform(0.01, 1.0, size=(rows, 4))),
        "fc1.weight": (rng.normal(size=(3, 2, 2)).astype(np.float16), np.full((3, 2, 2), 0.05, np.float16)),
        "constant": (np.zeros(5), np.full(5, 3.0)),
    }
    vocab = [f"word{i}" for i in range(rows)]
    archive = HERE / f"v{FORMAT_VERSION}.bnc"
    # Version 2 added product-quantized tensors: the golden file has one (pq); the others fall back to k-means.
    # Version 3 added transform coding (per-column models, means, a float16 rotation): vbq-transform.
    method = {2: "pq", 3: "vbq-transform"}.get(FORMAT_VERSION, "vbq")
    bnncompress.pack(
        posterior, archive, vocab=vocab, lam=1.0 if FORMAT_VERSION < 3 else 0.05, method=method, device="cpu"
    )
    a = bnncompress.load(archive)
    np.savez(HERE / f"v{FORMAT_VERSION}_expected.npz", vocab=np.asarray(vocab), **{n: a[n] for n in a.names})
    print(f"wrote {archive} ({archive.stat().st_size} bytes)")


if __name__ == "__main__":
    main()

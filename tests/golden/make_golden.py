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
    dim = 4
    if FORMAT_VERSION >= 4:  # version 4 on: two blocks (2,048 rows of 32, then 52), one class each
        rows, dim = 2100, 32
    mixing = rng.normal(size=(dim, dim))
    scales = rng.uniform(0.05, 1.0, size=(rows, dim)) * np.linspace(0.5, 1.5, rows)[:, None]  # rarer rows: wider
    means = rng.normal(size=(rows, dim)) @ mixing
    if FORMAT_VERSION >= 5:  # (5 on) the second block's rows 100 times shorter: two classes code smaller than one
        means[2048:] *= 0.01
    posterior = {
        "word_vectors": (means, scales),
        "fc1.weight": (rng.normal(size=(3, 2, 2)).astype(np.float16), np.full((3, 2, 2), 0.05, np.float16)),
        "constant": (np.zeros(5), np.full(5, 3.0)),
    }
    vocab = [f"word{i}" for i in range(rows)]
    archive = HERE / f"v{FORMAT_VERSION}.bnc"
    # Version 2 added product-quantized tensors: the golden file has one (pq); the others fall back to k-means.
    # Version 3 added transform coding (per-column models, means, a float16 rotation): vbq-transform.
    # Version 4 added classed transform coding (models per block class as levels): vbq-transform, 2 classes.
    # Version 5 added class values (each class's own values, int8 corrections): the same, now the default.
    # Version 6 stores the rotation as Householder reflectors (half the int8 entries): the same, reflectors=true.
    # Version 7 stores one model as one-byte levels and float16 values: fc1.weight (one model), the default.
    method = {2: "pq", 3: "vbq-transform"}.get(FORMAT_VERSION, "vbq" if FORMAT_VERSION < 4 else "vbq-transform")
    options = {"classes": 2, "transform": "pca"} if FORMAT_VERSION >= 4 else None
    if FORMAT_VERSION >= 6:
        options["reflectors"] = True
    lam = 1.0 if FORMAT_VERSION < 3 else 0.05 if FORMAT_VERSION == 3 else 3.0
    bnncompress.pack(posterior, archive, vocab=vocab, lam=lam, method=method, options=options, device="cpu")
    a = bnncompress.load(archive)
    np.savez_compressed(HERE / f"v{FORMAT_VERSION}_expected.npz", vocab=np.asarray(vocab), **{n: a[n] for n in a.names})
    print(f"wrote {archive} ({archive.stat().st_size} bytes)")


if __name__ == "__main__":
    main()

"""RowReader: rows decoded alone, in batches, from block prefixes, from checkpoints or whole are the same bits."""

from __future__ import annotations

import dataclasses
import sys

import numpy as np
import pytest
import torch

import bnncompress
from bnncompress import _rows_kernels, coding
from bnncompress.quantizers.registry import METHODS
from bnncompress.records import columns, inverse_transform
from bnncompress.rowaccess import CHECKPOINT_SHARE, RowReader

ROWS, COLUMNS = 2300, 30  # blocks of 2184 rows, the last one short (116 rows)


@pytest.fixture(scope="module")
def posterior():
    params = torch.load("data/example.pt", weights_only=False)["params"]  # scales stored unconstrained (softplus)
    loc = params["AutoNormal.locs.word_vectors"][:ROWS, :COLUMNS].numpy().copy()
    loc[2184:] *= 0.01  # the short last block's rows shorter still: a class of their own codes smaller
    scale = torch.nn.functional.softplus(params["AutoNormal.scales.word_vectors"][:ROWS, :COLUMNS]).numpy()
    small_loc = params["AutoNormal.locs.context_vectors"][:300, :8].numpy()
    small_scale = torch.nn.functional.softplus(params["AutoNormal.scales.context_vectors"][:300, :8]).numpy()
    return {"word_vectors": (loc, scale), "fc": (small_loc, small_scale)}


@pytest.fixture(
    scope="module", params=[*METHODS, "vbq-transform/columns", "vbq-transform/classed", "vbq-transform/reflectors"]
)
def archive(request, posterior, tmp_path_factory):
    method, _, kind = request.param.partition("/")
    path = tmp_path_factory.mktemp("rows") / f"{method}{kind}.bnc"
    options = {"transform": "pca", "classes": 0 if kind == "columns" else 2}  # rotated; 2 blocks, a class each
    if kind == "classed":
        options["class_values"] = False  # format version 4 (the default: class-valued, version 5)
    if kind == "reflectors":
        options["reflectors"] = True  # class-valued, the rotation as reflectors (version 6)
    rate = {"bits": 2.0, "options": options} if method == "vbq-transform" else {}
    bnncompress.pack(posterior, path, method=method, **rate)
    return path


def _batches(n: int, block_rows: int) -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    edges = [e for e in (0, 1, block_rows - 1, block_rows, n - 2, n - 1) if e < n]
    return [
        np.array([n - 1]),
        np.array(edges + edges[::-1]),  # first/last rows of blocks and of the short last block, repeated
        rng.integers(0, n, 7),
        rng.integers(0, n, 3000),  # duplicates
        np.arange(n)[::-1],
    ]


def test_rows_equal_the_full_decode_for_every_method(archive):
    a = bnncompress.load(archive)
    if "transform" in archive.name:
        rec = a.record("word_vectors")
        stored = next((k for k in ("columns", "classed", "reflectors") if k in archive.name), "class-valued")
        kind = "class-valued" if stored == "reflectors" else stored
        classes = rec.classes if kind == "classed" else rec.class_values
        rotation = {"columns": rec.rotation, "reflectors": rec.reflectors}.get(stored, rec.rotation8)
        rotated = rotation is not None and (kind == "columns" or classes == 2)
        assert rec.kind.name == kind and rotated
    for name in a.names:
        reference = bnncompress.load(archive).reader(name)
        full = reference.all().reshape(reference.shape)
        assert np.array_equal(full, reference._decode(None).reshape(full.shape)), "fused != reference decode"
        assert np.array_equal(np.concatenate([v for _, v in reference.blocks()]), full)
        rec = a.record(name)
        fresh = RowReader(rec)  # small batches from block prefixes, then from checkpoints
        for batch in _batches(len(full), rec.block_rows):
            assert np.array_equal(fresh.rows(batch), full[batch]), (name, len(batch))
        checkpointed = RowReader(rec)
        if checkpointed._fused():
            checkpointed._decode_fused(None, values=False)
            assert checkpointed._checkpoints is not None
        for batch in _batches(len(full), rec.block_rows):
            assert np.array_equal(checkpointed.rows(batch), full[batch]), (name, len(batch))


def test_rows_before_numba_is_loaded_equal_the_full_decode(archive, monkeypatch):
    a = bnncompress.load(archive)
    fulls = {name: a.reader(name).all().reshape(a.reader(name).shape) for name in a.names}
    monkeypatch.delitem(sys.modules, "bnncompress._rows_kernels")  # constriction prefixes, numpy transforms
    monkeypatch.setattr(columns, "_KERNEL_PRODUCTS", 1 << 62)  # even for a whole tensor
    for name, full in fulls.items():
        reader = RowReader(a.record(name))
        for batch in _batches(len(full), a.record(name).block_rows):
            assert np.array_equal(reader.rows(batch), full[batch]), (name, len(batch))
        assert np.array_equal(RowReader(a.record(name)).all(), full.reshape(-1))
    assert "bnncompress._rows_kernels" not in sys.modules


def test_prefix_lookups_switch_to_checkpoints_after_a_record_worth_of_symbols(archive):
    rec = bnncompress.load(archive).record("word_vectors")
    reader = RowReader(rec)
    if not reader._fused():
        pytest.skip("not a kernel-decoded record kind")
    full = RowReader(rec).all().reshape(reader.shape)
    reader.rows(np.array([5]))
    assert reader._checkpoints is None  # a first lookup decodes a block prefix only
    for row in range(ROWS - 1, 0, -97):
        assert np.array_equal(reader.rows(np.array([row])), full[[row]])
    assert reader._checkpoints is not None


def test_a_small_record_served_for_long_switches_to_the_kernels(archive, monkeypatch):
    """Below the size that pays for numba's import, a reader serving many batches still loads the
    kernels (and its checkpoints) once it has decoded that much the slow way."""
    rec = bnncompress.load(archive).record("word_vectors")
    if not RowReader(rec)._fused():
        pytest.skip("not a kernel-decoded record kind")
    full = RowReader(rec).all().reshape(-1, COLUMNS)
    monkeypatch.delitem(sys.modules, "bnncompress._rows_kernels", raising=False)
    reader, everything = RowReader(rec), np.arange(ROWS)[::-1]
    assert rec.num_symbols < coding.NUMBA_DECODE_SYMBOLS and not reader._kernels_worth_it()
    for _ in range(-(-(1 << 22) // rec.num_symbols) + 2):
        assert np.array_equal(reader.rows(everything), full[everything])
    assert reader._checkpoints is not None


def test_checkpoints_stay_within_their_share_of_the_payload(archive):
    rec = bnncompress.load(archive).record("word_vectors")
    reader = RowReader(rec)
    if not reader._fused():
        pytest.skip("not a kernel-decoded record kind")
    reader.rows(np.arange(ROWS))  # a record's worth of symbols from prefixes
    assert reader._checkpoints is None
    reader.rows(np.array([7]))  # beyond it: the checkpoints
    every, _, states, positions = reader._checkpoints
    assert states.nbytes + positions.nbytes <= CHECKPOINT_SHARE * rec.payload_bytes
    assert every == 1 or rec.num_blocks * -(-rec.block_rows // (every - 1)) * 12 > CHECKPOINT_SHARE * rec.payload_bytes
    model = reader._kernel_tables()[2:]  # coder tables, block bases, value table
    tables = sum(a.nbytes for a in model if isinstance(a, np.ndarray)) + rec.offsets.nbytes
    assert 0 < reader.nbytes <= states.nbytes + positions.nbytes + tables


def test_corrupt_words_are_refused(archive):
    rec = bnncompress.load(archive).record("word_vectors")
    if not rec.kind.coded or len(rec.words) == 0:
        pytest.skip("no coded words")
    words = rec.words.copy()
    words[len(words) // 3] ^= np.uint32(0x5A5A5A5A)
    damaged = dataclasses.replace(rec, words=words)
    with pytest.raises(bnncompress.ArchiveError, match="corrupt"):
        RowReader(damaged).all()
    with pytest.raises(bnncompress.ArchiveError, match="corrupt"):
        RowReader(damaged).rows(np.arange(rec.shape[0]))  # whole blocks from prefixes: no words may be left
    checkpointed = RowReader(damaged)
    checkpointed.rows(np.array([0]))
    checkpointed._plain_symbols = rec.num_symbols
    with pytest.raises(bnncompress.ArchiveError, match="corrupt"):
        checkpointed.rows(np.array([1]))  # builds the checkpoints: the whole record checked


def test_a_symbol_with_no_value_is_refused_by_the_streamed_blocks_too(archive):
    """Coded words that decode to a symbol its model gives no weight (checksums intact): whole decodes,
    row lookups and the blocks served rows stream for norms and similarities all refuse them."""
    rec = bnncompress.load(archive).record("word_vectors")
    if not rec.kind.coded or len(rec.words) == 0:
        pytest.skip("no coded words")
    table, classes, d = np.asarray(rec.model_counts, np.float64), rec.block_classes, rec.symbols_per_row
    symbols = coding.decode_blocks(rec.words, rec.offsets, table, rec.num_symbols, rec.block_size, classes=classes)
    symbols = symbols.astype(np.int64)
    models = table.reshape((1,) * (3 - table.ndim) + table.shape)  # (classes, columns or 1, symbols)
    model = models[0 if classes is None else int(classes[0])]
    unused = [(j, k) for j in range(len(model)) for k in range(model.shape[1]) if model[j, k] == 0]
    if not unused:
        pytest.skip("every symbol has a weight")
    j, k = unused[0]
    symbols[5 * d + j if len(model) == d else 5 * d] = k  # row 5, block 0
    words, offsets = coding.encode_blocks(symbols, table, rec.block_size, classes)
    forged = dataclasses.replace(rec, words=words, offsets=offsets)
    for read in (lambda r: r.all(), lambda r: r.rows(np.array([5])), lambda r: next(iter(r.blocks()))):
        with pytest.raises(bnncompress.ArchiveError, match="corrupt"):
            read(RowReader(forged))  # (the blocks' path returned the row with a 0.0 for the symbol)


def test_the_kernels_number_the_transform_modes_as_the_record_kinds_do():
    from bnncompress.records import scalar

    assert (scalar.PLAIN, scalar.MEAN, scalar.ROTATED) == (
        _rows_kernels.PLAIN,
        _rows_kernels.MEAN,
        _rows_kernels.ROTATED,
    )


def test_inverse_transform_sums_in_one_order_in_numpy_and_in_the_kernel():
    rng = np.random.default_rng(0)
    for d in (4, 50, 101):
        y = rng.normal(size=(300, d))
        rotation = rng.normal(size=(d, d))
        mean = rng.normal(size=d).astype(np.float32)
        expected = np.empty((300, d), np.float32)
        for i in range(300):  # the definition: float64 products summed over k ascending
            acc = y[i, 0] * rotation[:, 0]
            for k in range(1, d):
                acc = acc + y[i, k] * rotation[:, k]
            expected[i] = acc + mean.astype(np.float64)
        kernel = np.empty_like(expected)
        _rows_kernels.inverse_transform_into(y, np.ascontiguousarray(rotation.T), mean.astype(np.float64), kernel)
        assert np.array_equal(kernel, expected)
        for rows in (1, 5, 300):
            assert np.array_equal(inverse_transform(y[:rows], mean, rotation), expected[:rows])


@pytest.mark.parametrize("alphabet", [9, 3000])  # uint8 and int32 lookup tables
def test_decode_prefixes_by_constriction_and_by_the_kernel_agree(monkeypatch, alphabet):
    rng = np.random.default_rng(2)
    counts = rng.integers(1, 50, size=(6, alphabet)) ** 3  # peaked
    symbols = np.stack([rng.choice(alphabet, size=500, p=c / c.sum()) for c in counts], axis=1)
    symbols = symbols.reshape(-1).astype(np.int32)
    counts = np.stack([np.bincount(symbols[m::6], minlength=alphabet) for m in range(6)])
    words, offsets = coding.encode_blocks(symbols, counts, 600)
    blocks, lengths = [4, 0, 2], [42, 600, 6]
    expected = np.concatenate([symbols[b * 600 : b * 600 + n] for b, n in zip(blocks, lengths)])
    assert np.array_equal(coding.decode_prefixes(words, offsets, counts, len(symbols), 600, blocks, lengths), expected)
    monkeypatch.setenv("BNNCOMPRESS_CODER", "constriction")
    assert np.array_equal(coding.decode_prefixes(words, offsets, counts, len(symbols), 600, blocks, lengths), expected)


def test_every_symbol_decoded_without_the_row_kernels_counts_towards_loading_them(tmp_path, monkeypatch):
    """A small record read where the row kernels are not loaded: lookups decode prefixes, then whole blocks,
    and ``blocks()`` (norms, most_similar) whole blocks; each decoded symbol counts towards loading the kernels
    (:data:`~bnncompress.rowaccess._IMPORT_PAYS`). A frequent word's lookup used to count only its row's prefix
    (84,000 whole-block lookups of 2.9 ms before row 0 switched), and ``blocks()`` counted nothing (never)."""
    from bnncompress import rowaccess

    bnncompress.pack("data/example.pt", tmp_path / "e.bnc", bits=2.0, tensors=["word_vectors"])
    monkeypatch.setattr(rowaccess, "_IMPORT_PAYS", 1 << 19)  # (2.6 of the record's 200,000 symbols)
    monkeypatch.delitem(sys.modules, "bnncompress._rows_kernels", raising=False)  # (as in a serving process)
    rec = bnncompress.load(tmp_path / "e.bnc").record("word_vectors")
    expected = bnncompress.load(tmp_path / "e.bnc")["word_vectors"]
    reader, lookups = RowReader(rec), 0
    while reader._checkpoints is None and lookups < 5000:
        np.testing.assert_array_equal(reader.rows(np.array([0])), expected[:1])
        lookups += 1
    whole_blocks = -(-(1 << 19) // (rec.block_rows * rec.symbols_per_row))
    assert reader._checkpoints is not None and lookups <= rec.num_symbols // rec.symbols_per_row + whole_blocks + 1
    monkeypatch.delitem(sys.modules, "bnncompress._rows_kernels", raising=False)
    reader, scans = RowReader(rec), 0
    while not reader._kernels_worth_it() and scans < 50:
        np.testing.assert_array_equal(np.concatenate([rows for _, rows in reader.blocks()]), expected)
        scans += 1
    assert scans == -(-(1 << 19) // rec.num_symbols)


def test_a_whole_decode_by_the_kernels_is_charged_its_values_not_symbols_it_never_holds(tmp_path, monkeypatch):
    """A 2.25e9-weight archive packed on a 23.5 GiB machine was refused there by load, info -q and unpack (16
    bytes a float32 weight: symbols, values, result), though the kernels' decode peaked at 10.7 GiB."""
    import bnncompress.decoded as decoded

    rng = np.random.default_rng(0)
    path = tmp_path / "w.bnc"
    loc, scale = rng.normal(size=(600, 50)).astype(np.float32), np.full((600, 50), 0.1, np.float32)
    bnncompress.pack({"w": (loc, scale)}, path, bits=2)
    monkeypatch.setattr(decoded, "available_memory", lambda: 600 * 50 * 10.0)  # 8 bytes a weight fit, 16 do not
    assert bnncompress.load(path)["w"].shape == (600, 50)  # (the kernels are loaded by the pack)
    monkeypatch.setenv("BNNCOMPRESS_CODER", "constriction")  # whole blocks of symbols first, then values
    with pytest.raises(bnncompress.ArchiveError, match=r"more than the 0.0 GiB of memory"):
        bnncompress.load(path)["w"]

"""Record kinds (bnncompress/records/): each round-trips through an archive and decodes rows and
blocks like the whole tensor; payload bytes are what the archive stores; a kind defined outside
the package is written and read without touching archive.py; decoding ignores the method."""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import json
from pathlib import Path

import h5py
import numpy as np
import pytest

import bnncompress
from bnncompress import coding, pipeline, tensorjob
from bnncompress.archive import read_archive, write_archive
from bnncompress.errors import ArchiveError
from bnncompress.records import (
    KINDS,
    ScalarGrid,
    SideArray,
    TensorRecord,
    base,
    max_table_entries,
    pack_half,
    payload_bytes,
    position_classes,
    raw_payload_bytes,
    register_record_kind,
    side_arrays,
    unpack_half,
)
from bnncompress.tasks import merge_classes

PACKAGE = Path(bnncompress.__file__).parent


def _posterior(rows: int = 5000, dim: int = 32, seed: int = 0, short_tail: bool = False) -> dict:
    """``short_tail``: the last coding block's rows (from 4,096 on) are 100 times shorter, so that a
    classed fit codes them with models of their own (two classes code smaller than one)."""
    rng = np.random.default_rng(seed)
    loc = rng.normal(size=(rows, dim)) @ rng.normal(size=(dim, dim)) / np.sqrt(dim)
    if short_tail:
        loc[4096:] *= 0.01
    return {"w": (loc, rng.uniform(0.05, 0.5, size=(rows, dim))), "b": (rng.normal(size=3), np.full(3, 1e-4))}


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    """One archive per method, each holding a 3-block tensor 'w' and a raw 3-value tensor 'b'."""
    root = tmp_path_factory.mktemp("kinds")
    paths = {}
    cases = (("uniform", "scalar", None), ("pq", "product", None), ("vbq-transform", "columns", {"classes": 0}))
    classed = (
        ("vbq-transform", "classed", {"classes": 2, "class_values": False}),
        ("vbq-transform", "class-valued", {"classes": 2, "transform": "pca", "reflectors": True}),  # version 6
    )
    levelled = (("vbq-transform", "levelled", None),)  # (version 7) rows too few for per-column models: one model
    for method, expected, options in cases + classed + levelled:
        paths[expected] = root / f"{expected}.bnc"
        post = _posterior(2000, 80) if expected == "levelled" else _posterior(short_tail=expected.startswith("class"))
        bnncompress.pack(post, paths[expected], method=method, options=options, lam=0.5, device="cpu")
    return paths


def _raw_record(name: str = "r") -> TensorRecord:
    values = np.arange(10, dtype=np.float32)
    return TensorRecord(
        name, (5, 2), "float32", "uniform", {}, coding.CODER_ID, grid=values, counts=np.zeros(0, np.uint8),
        words=np.zeros(0, np.uint32), block_rows=2, offsets=np.zeros(4, np.uint64), raw=True,
    )  # fmt: skip


def test_every_kind_round_trips_and_decodes_blocks_as_the_whole(packed, tmp_path):
    write_archive(tmp_path / "raw.bnc", [_raw_record()], None, "test", "0")
    cases = {**{kind: (path, "w") for kind, path in packed.items()}, "raw": (tmp_path / "raw.bnc", "r")}
    for kind, (path, name) in cases.items():
        a = bnncompress.load(path)
        rec = a.record(name)
        assert rec.kind is KINDS[kind] and rec.kind.name == kind
        whole = rec.values(coding.decode_blocks)
        np.testing.assert_array_equal(whole.reshape(rec.shape), a[name])
        blocks = list(range(rec.num_blocks))
        assert len(blocks) == 3, kind
        block_values = [rec.values(coding.decode_blocks, [b]) for b in blocks]
        np.testing.assert_array_equal(np.concatenate(block_values), whole)
        backwards = rec.values(coding.decode_blocks, blocks[::-1])
        np.testing.assert_array_equal(backwards, np.concatenate(block_values[::-1]))
        rows = [0, rec.block_rows, rec.shape[0] - 1]
        np.testing.assert_array_equal(a.rows(name, rows), a[name][rows])


def test_the_small_tensor_of_each_pack_is_raw(packed):
    for path in packed.values():
        rec = bnncompress.load(path).record("b")
        assert rec.kind is KINDS["raw"] and rec.raw and rec.payload_bytes == raw_payload_bytes(3, 1) == 12


def _stored_bytes(path: Path) -> dict[str, int]:
    """Per tensor: the bytes of its spans in every dataset, read from the file itself."""
    with h5py.File(path, "r") as f:
        manifest = json.loads(f["manifest"][()].tobytes())
        itemsize = {key: f[key].dtype.itemsize for key in ("words", "grid", "counts", "offsets")}
        itemsize.update({side.name: f[side.dataset].dtype.itemsize for side, _ in side_arrays() if side.dataset in f})
    return {
        entry["name"]: sum(entry[key][1] * size for key, size in itemsize.items() if key in entry)
        for entry in manifest["tensors"]
    }


def test_payload_bytes_are_the_bytes_the_archive_stores(packed):
    for path in packed.values():
        a = bnncompress.load(path)
        stored = _stored_bytes(path)
        for name in a.names:
            rec = a.record(name)
            assert rec.payload_bytes == stored[name], (path.name, name)
            blocks = rec.num_blocks
            side = sum(v.nbytes for v in rec.side.values())
            formula = payload_bytes(rec.words.nbytes, blocks, rec.counts.nbytes, rec.grid.nbytes, side)
            assert rec.payload_bytes == formula
        info = a.info()
        assert info["total"]["payload_bytes"] == sum(stored.values()) == a.payload_bytes


def test_a_transforms_side_arrays_count_in_the_raw_or_coded_choice(tmp_path, monkeypatch):
    # At this lambda the coded tensor costs 131,100 payload bytes, 128 of them its column means:
    # without them it would be smaller than its raw values (131,072 bytes), with them it is not,
    # so it must be stored raw (the choice once left the side arrays out).
    rng = np.random.default_rng(3)
    loc = rng.normal(size=(1024, 32)) @ rng.normal(size=(32, 32)) / np.sqrt(32)
    post, lam = {"t": (loc, np.full((1024, 32), 0.05))}, 4.366532719181361e-05
    v3 = {"classes": 0, "trust": 0.75}  # the per-column record and the trust the sizes above were measured with
    raw = raw_payload_bytes(1024 * 32, 1)
    with monkeypatch.context() as m:  # what the code costs: never raw
        m.setattr(pipeline, "raw_payload_bytes", lambda num_weights, blocks: 1 << 62)
        m.setattr(tensorjob, "raw_payload_bytes", lambda num_weights, blocks: 1 << 62)
        bnncompress.pack(post, tmp_path / "coded.bnc", method="vbq-transform", options=v3, lam=lam, device="cpu")
    coded = bnncompress.load(tmp_path / "coded.bnc").record("t")
    side = sum(a.nbytes for a in coded.side.values())
    assert coded.models == 32 and side > 0 and coded.payload_bytes - side < raw <= coded.payload_bytes
    bnncompress.pack(post, tmp_path / "t.bnc", method="vbq-transform", options=v3, lam=lam, device="cpu")
    assert bnncompress.load(tmp_path / "t.bnc").record("t").raw


class _Halved(ScalarGrid):
    """A toy kind: ``values = grid[symbols] / 2 + shift`` with a one-value side array."""

    name = "halved"
    mark = "halved"
    mark_type = bool
    absent = False
    version = 3
    side_arrays = (SideArray("shift", "shifts", "<f4"),)

    def checksum_fields(self, record):
        return ["halved"]

    def dequantize(self, record, symbols):
        return (record.grid[symbols] / 2 + record.side["shift"][0]).astype(np.float32)

    def validate(self, record, where):
        super().validate(record, where)
        if record.shift is None or len(record.shift) != 1:
            raise ArchiveError(f"{where}: a halved tensor needs one shift; the archive is damaged")


@pytest.fixture()
def own_registry(monkeypatch):
    """Register kinds for one test only."""
    for name in ("KINDS", "_BY_MARK", "_SIDE_ARRAYS", "_SIDE_KINDS"):
        monkeypatch.setattr(base, name, dict(getattr(base, name)))


def _halved_record() -> TensorRecord:
    rng = np.random.default_rng(1)
    shape, block_rows = (100, 4), 30
    symbols = rng.integers(0, 3, size=400).astype(np.int32)
    counts = np.bincount(symbols, minlength=3).astype(np.uint16)
    words, offsets = coding.encode_blocks(symbols, counts, block_rows * 4)
    grid = np.array([-1.0, 0.5, 4.0], np.float32)
    return TensorRecord(
        "h", shape, "float32", "made-up", {}, coding.CODER_ID, grid=grid, counts=counts, words=words,
        block_rows=block_rows, offsets=offsets, halved=True, shift=np.array([10.0], np.float32),
    ), (grid[symbols] / 2 + 10).reshape(shape)  # fmt: skip


def test_a_kind_defined_outside_the_package_writes_and_reads_back(own_registry, tmp_path):
    register_record_kind(_Halved)
    record, expected = _halved_record()
    assert record.kind.name == "halved" and record.halved and record.subvectors == 0
    path = tmp_path / "halved.bnc"
    write_archive(path, [record, _raw_record()], None, "test", "0")
    with h5py.File(path, "r") as f:
        assert f.attrs["format_version"] == 3 and f["shifts"][()].tolist() == [10.0]
    a = bnncompress.load(path)
    np.testing.assert_array_equal(a["h"], expected)
    np.testing.assert_array_equal(a.rows("h", [99, 0, 31]), expected[[99, 0, 31]])
    assert a.record("h").payload_bytes == _stored_bytes(path)["h"]
    base._BY_MARK.pop("halved")  # a reader that does not know the kind refuses it cleanly
    with pytest.raises(ArchiveError):
        read_archive(path)


def test_a_kind_registers_once_and_a_record_knows_only_registered_fields(own_registry):
    register_record_kind(_Halved)
    with pytest.raises(ValueError, match="registered already"):
        register_record_kind(_Halved)
    with pytest.raises(TypeError, match="unknown field 'colour'"):
        dataclasses.replace(_raw_record(), colour=1)


def test_decoding_depends_on_the_kind_not_the_method(packed, tmp_path):
    for kind, path in packed.items():
        a = bnncompress.load(path)
        renamed = dataclasses.replace(a.record("w"), method="no-such-method", params={"anything": [1, 2]})
        write_archive(tmp_path / f"{kind}.bnc", [renamed], None, "test", "0")
        np.testing.assert_array_equal(bnncompress.load(tmp_path / f"{kind}.bnc")["w"], a["w"])


def test_two_marks_and_foreign_side_arrays_are_refused(packed, tmp_path):
    rec = bnncompress.load(packed["columns"]).record("w")
    with pytest.raises(ArchiveError, match="several kinds"):  # the writer checks what it writes as a reader
        write_archive(tmp_path / "two.bnc", [dataclasses.replace(rec, raw=True)], None, "test", "0")
    scalar = bnncompress.load(packed["scalar"]).record("w")
    write_archive(tmp_path / "s.bnc", [dataclasses.replace(scalar, name="s"), rec], None, "test", "0")
    with h5py.File(tmp_path / "s.bnc", "r+") as f:  # give the scalar tensor the transform's mean
        manifest = json.loads(f["manifest"][()].tobytes())
        manifest["tensors"][0]["mean"] = manifest["tensors"][1]["mean"]
        raw = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
        del f["manifest"]
        f.create_dataset("manifest", data=np.frombuffer(raw, np.uint8))
        f.attrs["manifest_sha256"] = np.bytes_(hashlib.sha256(raw).hexdigest().encode())
    with pytest.raises(ArchiveError, match="scalar tensor with a 'mean' array"):
        read_archive(tmp_path / "s.bnc")


def _imports(path: Path) -> set[str]:
    """Every module a file imports (TYPE_CHECKING and function-local imports included), relative ones as written."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            names.add("." * node.level + (node.module or ""))
            names.update("." * node.level + a.name for a in node.names if not node.module)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


def test_geometry_and_record_kinds_do_not_import_the_coder_and_export_not_the_loader():
    for path in [PACKAGE / "geometry.py", *sorted((PACKAGE / "records").glob("*.py"))]:
        assert not {m for m in _imports(path) if m.endswith("coding") or m.endswith("_ans")}, path.name
    assert not {m for m in _imports(PACKAGE / "export.py") if m.endswith("loader")}
    assert not hasattr(coding, "row_size") and not hasattr(coding, "dequantize")


def test_classed_tables_that_would_outweigh_their_tensor_are_refused(packed, tmp_path):
    rec = bnncompress.load(packed["classed"]).record("w")
    d, rows = rec.shape[1], rec.shape[0]
    widths = np.ones(d, np.uint16)
    widths[0] = 60000  # one wide column: C x D x 60,000 table entries from a few hundred KB of levels
    grid = np.zeros(int(widths.sum()), np.float32)
    levels = np.full(2 * len(grid), 255, np.uint8)
    forged = dataclasses.replace(rec, grid=grid, widths=widths, levels=levels)
    assert 2 * d * 60000 > max_table_entries(rows, d)
    with pytest.raises(ArchiveError, match="outweigh"):
        write_archive(tmp_path / "wide.bnc", [forged], None, "test", "0")


def test_the_writer_merges_classes_whose_tables_would_outweigh_the_tensor():
    counts = np.zeros((8, 4, 30000), np.int64)
    for c in range(8):  # 30,000 rows, each class's 3,750 rows all different, from the other classes' too
        counts[c, :, c * 3750 : (c + 1) * 3750] = 1
    merged, blocks = merge_classes(counts, position_classes(16, 8), rows=30000)
    assert len(merged) == 2 and len(merged) * 4 * 30000 <= max_table_entries(30000, 4)
    assert merged.sum() == counts.sum()
    assert blocks.max() == len(merged) - 1 and np.all(np.diff(blocks) >= 0)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda r: {"widths": np.where(np.arange(len(r.widths)) == 0, 0, r.widths).astype(np.uint16)}, "widths"),
        (lambda r: {"levels": r.levels[:-1]}, "levels do not fit"),
        (lambda r: {"levels": np.zeros_like(r.levels)}, "has no symbol"),
        (lambda r: {"block_class": np.full_like(r.block_class, r.classes)}, "block classes"),
        (lambda r: {"block_class": r.block_class[:-1]}, "block classes"),
        (lambda r: {"rotation8": np.zeros(3, np.int8), "rotation_scale": np.ones(3, np.float32)}, "rotation"),
        (lambda r: {"rotation_scale": None, "rotation8": np.zeros(len(r.widths) ** 2, np.int8)}, "rotation"),
        (lambda r: {"counts": np.ones(3, np.uint8)}, "with counts"),
        (lambda r: {"grid": r.grid[:-1]}, "grid and column widths"),
    ],
    ids=["zero-width", "short-levels", "empty-model", "class-too-high", "short-classes", "rotation-size",
         "rotation-without-scales", "counts", "short-grid"],
)  # fmt: skip
def test_damaged_classed_records_are_refused(packed, tmp_path, change, message):
    rec = bnncompress.load(packed["classed"]).record("w")
    assert rec.classes == 2
    forged = dataclasses.replace(rec, **change(rec))
    with pytest.raises(ArchiveError, match=message):
        write_archive(tmp_path / "forged.bnc", [forged], None, "test", "0")


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda r: {"value_deltas": r.value_deltas[:-1]}, "corrections do not fit"),
        (lambda r: {"value_deltas": None}, "corrections do not fit"),
        (lambda r: {"value_units": r.value_units[:-1]}, "units are not"),
        (lambda r: {"value_units": -r.value_units - 1}, "units are not"),
        (lambda r: {"value_units": np.where(np.arange(len(r.value_units)) == 0, np.nan, r.value_units)}, "NaN or inf"),
        (lambda r: {"value_units": np.full_like(r.value_units, 3e38), "value_deltas": np.full_like(r.value_deltas, 99)},
         "not finite"),
        (lambda r: {"block_class": np.full_like(r.block_class, r.class_values)}, "block classes"),
        (lambda r: {"levels": r.levels[:-1]}, "levels do not fit"),
        (lambda r: {"reflectors": r.reflectors[:-1]}, "reflectors are not"),
        (lambda r: {"reflector_scales": r.reflector_scales[:-1]}, "reflectors are not"),
        (lambda r: {"reflector_scales": None}, "reflectors are not"),
        (lambda r: {"reflector_scales": np.full_like(r.reflector_scales, 3e38)}, "scale is not from 0 to 1"),
        (lambda r: {"rotation8": np.zeros(len(r.widths) ** 2, np.int8),
                    "rotation_scale": np.ones(len(r.widths), np.float32)}, "stored twice"),
    ],
    ids=["short-deltas", "no-deltas", "short-units", "negative-units", "nan-unit", "infinite-value", "class-too-high",
         "short-levels", "short-reflectors", "short-reflector-scales", "reflectors-without-scales",
         "huge-reflector-scales", "two-rotations"],
)  # fmt: skip
def test_damaged_class_valued_records_are_refused(packed, tmp_path, change, message):
    rec = bnncompress.load(packed["class-valued"]).record("w")
    assert rec.class_values == 2 and len(rec.value_deltas) == np.count_nonzero(rec.levels)
    assert len(rec.reflectors) == 32 * 31 // 2 and rec.rotation8 is None
    forged = dataclasses.replace(rec, **change(rec))
    with pytest.raises(ArchiveError, match=message):
        write_archive(tmp_path / "forged.bnc", [forged], None, "test", "0")


def _packed_half(values: np.ndarray) -> np.ndarray:
    return pack_half(np.asarray(values, np.float16))


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda r: {"counts": np.r_[np.uint16(300), r.counts[1:].astype(np.uint16)]}, "0 to 255"),
        (lambda r: {"counts": np.zeros_like(r.counts)}, "0 to 255 with one above 0"),
        (lambda r: {"grid": r.grid[:-1]}, "does not hold"),
        (lambda r: {"grid": np.r_[r.grid, np.float32(0)]}, "does not hold"),
        (lambda r: {"grid": _packed_half(np.r_[np.inf, r.kind.values16(r)[1:]])}, "not finite"),
        (lambda r: {"counts": np.r_[r.counts, np.uint8(9), np.uint8(9)]}, "does not hold"),
        (lambda r: {"levelled": 2}, "is not 1"),
        (lambda r: {"counts": np.ones(r.num_weights + 2, np.uint8), "grid": np.zeros(r.num_weights // 2 + 1, "f4")},
         "more symbols"),
    ],
    ids=["level-300", "no-level", "short-grid", "long-grid", "infinite-value", "levels-and-values", "mark-2",
         "too-wide"],
)  # fmt: skip
def test_damaged_levelled_records_are_refused(packed, tmp_path, change, message):
    rec = bnncompress.load(packed["levelled"]).record("w")
    assert rec.levelled == 1 and len(rec.grid) == -(-len(rec.counts) // 2) and rec.counts.dtype == np.uint8
    forged = dataclasses.replace(rec, **change(rec))
    with pytest.raises(ArchiveError, match=message):
        write_archive(tmp_path / "forged.bnc", [forged], None, "test", "0")


def test_a_levelled_records_pad_is_two_zero_bytes_not_a_negative_zero(packed, tmp_path):
    rec = bnncompress.load(packed["levelled"]).record("w")
    counts = rec.counts if len(rec.counts) % 2 else rec.counts[:-1]  # an odd K: a pad half after the values
    k = len(counts)
    halves = pack_half(rec.kind.values16(rec)[:k].astype(np.float16)).view("<u2").copy()
    assert len(halves) == k + 1 and halves[k] == 0
    zero_pad = dataclasses.replace(rec, counts=counts, grid=halves.view("<f4"))
    write_archive(tmp_path / "zero.bnc", [zero_pad], None, "t", "0")
    halves[k] = 0x8000  # -0.0 as float16: equal to 0 as a number, not as bytes
    forged = dataclasses.replace(rec, counts=counts, grid=halves.view("<f4"))
    with pytest.raises(ArchiveError, match="the pad is not 0"):
        write_archive(tmp_path / "forged.bnc", [forged], None, "t", "0")


@pytest.mark.parametrize("small_levels", [True, False], ids=["levelled", "scalar"])
def test_one_value_models_with_coded_words_are_refused(tmp_path, small_levels):
    """A tensor whose model has one symbol is coded in no words, and no reader reads any: a record that
    carries some anyway (1,000 words nobody would check) is damaged."""
    loc = np.random.default_rng(0).normal(size=(300, 4)).astype(np.float32)
    post = {"w": (loc, np.full(loc.shape, 1e3, np.float32))}  # so uncertain that one value codes it all
    bnncompress.pack(post, tmp_path / "one.bnc", lam=0.05, device="cpu", options={"small_levels": small_levels})
    rec = read_archive(tmp_path / "one.bnc").tensors[0]
    assert rec.kind.name == ("levelled" if small_levels else "scalar") and len(rec.counts) == 1 and len(rec.words) == 0
    junk = np.arange(1, 1001, dtype=np.uint32)
    offsets = np.r_[rec.offsets[:-1], np.uint64(len(junk))].astype(np.uint64)
    forged = dataclasses.replace(rec, words=junk, offsets=offsets)
    with pytest.raises(ArchiveError, match="coded words for one-value models"):
        write_archive(tmp_path / "forged.bnc", [forged], None, "t", "0")


def test_a_levelled_record_decodes_only_symbols_with_a_level(packed, tmp_path):
    """Levels are not counts: a reader checks that every decoded symbol has a nonzero level (and that
    the values are the float16 ones, exactly), not that the symbols add up to stored counts."""
    a = bnncompress.load(packed["levelled"])
    rec = a.record("w")
    values = rec.kind.values16(rec)
    np.testing.assert_array_equal(values, values.astype(np.float16).astype(np.float32))
    np.testing.assert_array_equal(np.unique(a["w"]), np.unique(values[rec.counts > 0]))
    symbols = coding.decode_blocks(rec.words, rec.offsets, rec.model_counts, rec.num_symbols, rec.block_size,
                                   classes=rec.block_classes)  # fmt: skip
    used = np.bincount(symbols, minlength=len(rec.counts))
    assert np.array_equal(used > 0, rec.counts > 0) and not np.array_equal(used, rec.counts)
    dropped = rec.counts.copy()
    dropped[np.argmax(used)] = 0  # the most used symbol loses its level
    write_archive(tmp_path / "dropped.bnc", [dataclasses.replace(rec, counts=dropped)], None, "test", "0")
    with pytest.raises(ArchiveError, match="does not decode|do not match"):
        bnncompress.load(tmp_path / "dropped.bnc")["w"]


def test_float16_values_pack_two_to_a_finite_float32():
    """Every pair of finite float16 values (the extremes, subnormals, signed zeros) packs into a finite
    float32 that the archive's finite-grid check accepts, and unpacks to the same values."""
    special = np.array([0.0, -0.0, 6e-8, -6e-8, 1e-4, 65504.0, -65504.0, 1.0, -1.0], np.float16)
    pairs = np.array(np.meshgrid(special, special)).reshape(2, -1).T.reshape(-1)
    packed = pack_half(pairs)
    assert np.all(np.isfinite(packed)) and len(packed) == len(pairs) // 2
    np.testing.assert_array_equal(unpack_half(packed, len(pairs)), pairs.astype(np.float32))
    assert len(pack_half(special[:3])) == 2 and unpack_half(pack_half(special[:3]), 3)[2] == special[2]


def test_class_values_decode_each_block_with_its_class(packed):
    """A class-valued record's two classes decode the same symbol to different values, and every path
    (whole, by blocks, rows) gives a block's rows its own class's values."""
    a = bnncompress.load(packed["class-valued"])
    rec = a.record("w")
    table, valid = rec.kind.class_table(rec)
    both = valid[0] & valid[1]
    assert both.any() and np.any(table[0][both] != table[1][both])
    symbols = coding.decode_blocks(rec.words, rec.offsets, rec.model_counts, rec.num_symbols, rec.block_size,
                                   classes=rec.block_classes)  # fmt: skip
    rows = symbols.reshape(rec.shape)
    last = rec.block_rows * (rec.num_blocks - 1)  # the short tail: its own class
    assert rec.block_classes[-1] != rec.block_classes[0]
    expected = rec.dequantize(rows[last:].reshape(-1), np.full(rec.shape[0] - last, rec.num_blocks - 1))
    np.testing.assert_array_equal(a["w"][last:].reshape(-1), expected)
    wrong = rec.dequantize(rows[last:].reshape(-1), np.zeros(rec.shape[0] - last, np.int64))
    assert not np.array_equal(wrong, expected)


@pytest.mark.parametrize("link", ["external", "soft"])
def test_a_classed_group_that_links_elsewhere_is_refused(packed, tmp_path, link):
    other, path = tmp_path / "other.bnc", tmp_path / "linked.bnc"
    path.write_bytes(Path(packed["classed"]).read_bytes())
    other.write_bytes(path.read_bytes())
    with h5py.File(path, "r+") as f:
        assert sorted(f["classed"]) == ["block_classes", "levels", "widths"] and len(f) <= 8
        f.move("classed", "elsewhere")
        f["classed"] = h5py.ExternalLink(str(other), "classed") if link == "external" else h5py.SoftLink("/elsewhere")
    with pytest.raises(ArchiveError, match="link to elsewhere"):
        bnncompress.load(path)

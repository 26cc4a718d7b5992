"""Hostile and unusual .pt files against the torch-free reader (bnncompress/sources/torchzip.py):
forged pickles and zip structures must raise NotPlain (torch's safe loader decides) or
PosteriorError, never run code, hang or allocate far beyond the file's size; valid files must read
as torch.load reads them."""

from __future__ import annotations

import contextlib
import copyreg
import pickle
import signal
import struct
import tracemalloc
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pyro.distributions.constraints as pc
import pytest
import torch
from torch.distributions import constraints as tc
from torch.distributions import transform_to

import bnncompress
from bnncompress import PosteriorError
from bnncompress.sources.torchzip import NotPlain, PickledConstraint, read_zip_pickle

REFUSED = (NotPlain, PosteriorError)


# --- tools: a tiny pickle assembler, a forged .pt writer, a deadline and a memory meter ---------------------------


def _global(module: str, name: str) -> bytes:
    return b"c" + f"{module}\n{name}\n".encode()


def _atom(obj) -> bytes:
    """The opcodes of a plain object (no PROTO, no STOP)."""
    return pickle.dumps(obj, protocol=2)[2:-1]


def _pid(key: str, numel: int, storage: str = "FloatStorage") -> bytes:
    return b"(" + _atom("storage") + _global("torch", storage) + _atom(key) + _atom("cpu") + _atom(numel) + b"t"


def _tensor(key: str, numel: int, offset, size, stride, metadata: bytes = b"") -> bytes:
    """``_rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict()[, metadata])``."""
    args = _pid(key, numel) + b"Q" + _atom(offset) + _atom(size) + _atom(stride) + b"\x89"
    hooks = _global("collections", "OrderedDict") + b")R"
    return _global("torch._utils", "_rebuild_tensor_v2") + b"(" + args + hooks + metadata + b"tR"


def _dict(**items: bytes) -> bytes:
    return b"}(" + b"".join(_atom(k) + v for k, v in items.items()) + b"u"


def _forge(path: Path, body: bytes, storages: dict[str, bytes] | None = None) -> Path:
    """A .pt zip whose data.pkl is ``PROTO 2 + body + STOP``."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", b"\x80\x02" + body + b".")
        archive.writestr("archive/byteorder", b"little")
        archive.writestr("archive/version", b"3\n")
        for key, data in (storages or {}).items():
            archive.writestr(f"archive/data/{key}", data)
    return path


def _patch_central(path: Path, member: str, field_offset: int, value: int) -> None:
    """Overwrite a 4-byte field of ``member``'s central directory entry."""
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        pos = archive.start_dir
    while True:
        pos = raw.index(b"PK\x01\x02", pos)
        name_length = struct.unpack("<H", raw[pos + 28 : pos + 30])[0]
        if raw[pos + 46 : pos + 46 + name_length] == member.encode():
            raw[pos + field_offset : pos + field_offset + 4] = struct.pack("<I", value)
            path.write_bytes(bytes(raw))
            return
        pos += 4


class _Deadline(BaseException):  # not an Exception: the reader's `except Exception` must not swallow it
    pass


@contextlib.contextmanager
def _deadline(seconds: float):
    def expire(*_):
        raise _Deadline(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _peak_bytes(function) -> tuple[int, object]:
    """Peak traced allocation (Python and numpy) while ``function`` runs, and its result or refusal."""
    tracemalloc.start()
    try:
        try:
            outcome = function()
        except REFUSED as exc:
            outcome = exc
        return tracemalloc.get_traced_memory()[1], outcome
    finally:
        tracemalloc.stop()


def _shared_tuples(depth: int):
    """A tuple DAG: 2**depth leaves, but only ``depth`` distinct tuples (linear in a pickle)."""
    node: tuple = (1,)
    for _ in range(depth):
        node = (node, node)
    return node


def _ulps(ours: np.ndarray, theirs: np.ndarray) -> np.ndarray:
    """|ours - theirs| in units of the last place of ``theirs`` (0 where both are the same, inf or nan)."""
    spacing = np.spacing(np.abs(theirs)).astype(np.float64)
    ours, theirs = ours.astype(np.float64), theirs.astype(np.float64)
    same = (ours == theirs) | (np.isnan(ours) & np.isnan(theirs))
    return np.where(same, 0.0, np.abs(ours - theirs) / spacing)


# --- bugs ---------------------------------------------------------------------------------------------------------


def test_a_negated_view_reads_with_its_sign_as_torch_loads_it(tmp_path):
    # torch.save records the neg bit in _rebuild_tensor_v2's 7th argument (metadata {'neg': True}); the reader drops it
    path = tmp_path / "neg.pt"
    torch.save({"n": torch.arange(1.0, 4.0)._neg_view()}, path)
    expected = torch.load(path, weights_only=True)["n"].resolve_neg().numpy()
    try:
        ours = read_zip_pickle(path)["n"]
    except NotPlain:
        return  # torch's loader reads it instead: also correct
    np.testing.assert_array_equal(ours, expected)  # [-1, -2, -3], not [1, 2, 3]


@pytest.mark.parametrize("damage", ["crc", "size"])
def test_a_damaged_pickle_member_raises_posterior_error(tmp_path, damage):
    bad = tmp_path / "bad.pt"
    torch.save({"w": {"loc": torch.arange(10.0), "scale": torch.ones(10)}}, bad)
    if damage == "crc":  # the key 'w' in data.pkl -> 'v': the member's CRC no longer holds (zipfile.BadZipFile)
        raw = bytearray(bad.read_bytes())
        at = raw.index(b"X\x01\x00\x00\x00w")
        raw[at + 5] = ord("v")
        bad.write_bytes(bytes(raw))
    else:  # data.pkl claims more bytes than the whole file holds (a bare EOFError)
        for field in (20, 24):  # compressed and uncompressed size
            _patch_central(bad, "bad/data.pkl", field, bad.stat().st_size)
    with pytest.raises(REFUSED):
        read_zip_pickle(bad)
    with pytest.raises(PosteriorError):  # torch's loader does not check CRCs: the reader must say so itself
        bnncompress.read_posterior(bad)


def test_a_data_pkl_header_offset_beyond_the_file_raises_posterior_error(tmp_path):
    path = tmp_path / "offset.pt"
    torch.save({"w": {"loc": torch.arange(10.0), "scale": torch.ones(10)}}, path)
    _patch_central(path, "offset/data.pkl", 42, path.stat().st_size + 1000)  # header_offset
    with pytest.raises(REFUSED):  # zipfile.BadZipFile ("Bad magic number for file header") escapes today
        read_zip_pickle(path)


def test_shared_tuples_are_walked_once_not_once_per_path(tmp_path):
    # 40 tuples in a few hundred bytes, 2**40 paths: _plain memoises lists and dicts but not tuples
    path = tmp_path / "dag.pt"
    _forge(path, _dict(w=_atom(_shared_tuples(40))))
    with _deadline(1.0):
        try:
            read = read_zip_pickle(path)
        except REFUSED:
            return
    node = read["w"]
    for _ in range(40):
        assert node[0] is node[1] or node[0] == node[1]
        node = node[0]


@pytest.mark.parametrize("where", ["persistent_id", "size"])
def test_refusal_messages_do_not_render_a_huge_pickled_object(tmp_path, where):
    # f"{pid!r:.60}" and f"{size!r:.40}" build the whole repr before truncating it: a tuple DAG of depth d in
    # O(d) pickle bytes has a repr of ~5 * 2**d characters (depth 16: ~0.5 MiB; depth 40: hangs, exhausts memory)
    dag = _atom(_shared_tuples(16))
    if where == "persistent_id":
        body = dag + b"Q"
    else:
        tensor = _pid("0", 4) + b"Q" + _atom(0) + dag + dag + b"\x89"
        body = _global("torch._utils", "_rebuild_tensor_v2") + b"(" + tensor + b"tR"
    path = _forge(tmp_path / "repr.pt", body, {"0": bytes(16)})
    peak, outcome = _peak_bytes(lambda: read_zip_pickle(path))
    assert isinstance(outcome, REFUSED)
    assert peak < 128 << 10, f"{peak / 2**10:.0f} KiB to refuse a {path.stat().st_size} byte file"


def _constraint_store(tmp_path: Path, constraint) -> Path:
    store = {
        "params": {"AutoNormal.locs.w": torch.zeros(3), "AutoNormal.scales.w": torch.zeros(3)},
        "constraints": {"AutoNormal.locs.w": tc.real, "AutoNormal.scales.w": constraint},
    }
    torch.save(store, tmp_path / "store.pt")
    return tmp_path / "store.pt"


def test_a_constraint_that_contains_itself_raises_posterior_error(tmp_path):
    loop = tc.independent(tc.real, 1)
    loop.base_constraint = loop  # pickled with a memo reference: the record's state holds the record
    path = _constraint_store(tmp_path, loop)
    read = read_zip_pickle(path)["constraints"]["AutoNormal.scales.w"]
    with pytest.raises(REFUSED):  # RecursionError today
        read.apply(np.zeros(3, np.float32))
    with pytest.raises(PosteriorError):
        bnncompress.read_posterior(path)


def test_a_lower_bound_too_big_for_a_float_raises_posterior_error(tmp_path):
    path = _constraint_store(tmp_path, tc.greater_than(10**400))
    with pytest.raises(PosteriorError):  # OverflowError from float(lower_bound) escapes today
        bnncompress.read_posterior(path)


def test_greater_than_a_negative_bound_is_within_one_ulp_of_transform_to(tmp_path):
    # torch computes exp(x) in float32, then adds float32(bound): near exp(x) == -bound the float64 sum rounded
    # once differs from it by thousands of ulps (and by ~1e34 ulps where torch's result is 0)
    x = torch.linspace(-0.01, 0.01, 2001)
    exact_exp = np.exp(x.numpy().astype(np.float64)).astype(np.float32)
    x = x[torch.from_numpy(exact_exp == torch.exp(x).numpy())]  # where torch's exp is correctly rounded
    constraint = tc.greater_than(-1.0)
    torch.save({"c": constraint, "x": x}, tmp_path / "c.pt")
    read = read_zip_pickle(tmp_path / "c.pt")
    assert _ulps(read["c"].apply(read["x"]), transform_to(constraint)(x).numpy()).max() <= 1


def test_a_forged_member_size_does_not_allocate_what_it_claims(tmp_path):
    # the central directory says data/0 holds 3.75 GiB; the file holds 40 bytes: np.empty(2 GiB) runs before the
    # read finds the member short (an untouched allocation here, a MemoryError -> torch fallback elsewhere)
    numel = 1 << 29
    path = _forge(tmp_path / "size.pt", _dict(w=_tensor("0", numel, 0, (numel,), (1,))), {"0": bytes(40)})
    _patch_central(path, "archive/data/0", 24, 0xF000_0000)  # uncompressed size
    peak, outcome = _peak_bytes(lambda: read_zip_pickle(path))
    assert isinstance(outcome, PosteriorError)
    assert peak < 64 << 20, f"{peak / 2**20:.0f} MiB allocated for a {path.stat().st_size} byte file"


def test_storages_that_share_their_bytes_are_not_read_many_times_over(tmp_path):
    # data/1.. are empty, their central directory entries patched to data/0's bytes: 40 tensors of 256 KiB each
    # from a file of a few KiB (each read into a copy of its own)
    count, numel = 40, 1 << 16
    tensors = {f"t{i}": _tensor(str(i), numel, 0, (numel,), (1,)) for i in range(count)}
    storages = {"0": bytes(4 * numel), **{str(i): b"" for i in range(1, count)}}
    path = _forge(tmp_path / "overlap.pt", _dict(**tensors), storages)
    with zipfile.ZipFile(path) as archive:
        first = archive.getinfo("archive/data/0").header_offset
    for key in range(1, count):
        for field, value in ((20, 4 * numel), (24, 4 * numel), (42, first)):  # sizes, local header offset
            _patch_central(path, f"archive/data/{key}", field, value)
    assert path.stat().st_size < 2 * 4 * numel
    peak, outcome = _peak_bytes(lambda: read_zip_pickle(path))
    assert isinstance(outcome, PosteriorError) and "declare more bytes than the file holds" in str(outcome)
    assert peak < 4 << 20, f"{peak / 2**20:.0f} MiB allocated for a {path.stat().st_size} byte file"


def test_shared_storages_are_refused_on_torchs_loader_route_too(tmp_path):
    # a bfloat16 storage first sent the file to torch.load, which read every member whole: 1.3 MB read as 1 GB
    count, numel = 40, 1 << 16
    bf16 = _global("torch._utils", "_rebuild_tensor_v2") + b"(" + _pid("b", 2, "BFloat16Storage")
    bf16 += b"Q" + _atom(0) + _atom((2,)) + _atom((1,)) + b"\x89" + _global("collections", "OrderedDict") + b")RtR"
    tensors = {"a": bf16, **{f"t{i}": _tensor(str(i), numel, 0, (numel,), (1,)) for i in range(count)}}
    storages = {"b": bytes(4), "0": bytes(4 * numel), **{str(i): b"" for i in range(1, count)}}
    path = _forge(tmp_path / "overlap.pt", _dict(**tensors), storages)
    with zipfile.ZipFile(path) as archive:
        first = archive.getinfo("archive/data/0").header_offset
    for key in range(1, count):
        for field, value in ((20, 4 * numel), (24, 4 * numel), (42, first)):
            _patch_central(path, f"archive/data/{key}", field, value)
    peak, outcome = _peak_bytes(lambda: bnncompress.read_posterior(path))
    assert isinstance(outcome, PosteriorError) and "sharing their bytes" in str(outcome), outcome
    assert peak < 4 << 20, f"{peak / 2**20:.0f} MiB allocated for a {path.stat().st_size} byte file"


def test_an_npz_whose_members_share_their_bytes_is_refused(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "p.npz", **{"w.loc": rng.normal(size=(50, 4)), "w.scale": np.full((50, 4), 0.1)})
    path = tmp_path / "p.npz"
    with zipfile.ZipFile(path) as archive:
        first = archive.getinfo("w.loc.npy")
    for field, value in ((20, first.compress_size), (24, first.file_size), (42, first.header_offset)):
        _patch_central(path, "w.scale.npy", field, value)
    with pytest.raises(PosteriorError, match="runs into the bytes of another member"):
        bnncompress.read_posterior(path)


def test_a_huge_memo_index_does_not_allocate(tmp_path):
    # LONG_BINPUT 2**23: the C unpickler grows its memo array to 2**24 pointers (128 MiB, zeroed) for 7 bytes
    path = _forge(tmp_path / "memo.pt", _dict(w=b"N" + b"r" + struct.pack("<I", 1 << 23)))
    peak, _ = _peak_bytes(lambda: read_zip_pickle(path))
    assert peak < 16 << 20, f"{peak / 2**20:.0f} MiB allocated for a {path.stat().st_size} byte file"


def test_an_ordered_dicts_pickled_state_cannot_hide_its_items(tmp_path):
    # BUILD {'items': OrderedDict} puts an instance attribute over OrderedDict.items, which _plain calls:
    # the reader returns OrderedDict() where torch.load returns OrderedDict(a=1)
    state = b"}" + _atom("items") + _global("collections", "OrderedDict") + b"s"
    body = _global("collections", "OrderedDict") + b")R(" + _atom("a") + _atom(1) + b"u" + state + b"b"
    path = _forge(tmp_path / "od.pt", body)
    assert dict(torch.load(path, weights_only=True)) == {"a": 1}
    try:
        read = read_zip_pickle(path)
    except REFUSED:
        return
    assert dict(OrderedDict.items(read)) == {"a": 1}


def test_the_copyreg_extension_cache_cannot_bypass_find_class(tmp_path):
    # EXT4 looks in copyreg's extension cache before find_class: once any pickle in the process has loaded a
    # registered extension, a file can call it through the restricted unpickler
    code = 0x7FFF_FF01
    ext = b"\x84" + struct.pack("<i", code) + b")R"  # EXT4 code, (), REDUCE: os.getcwd()
    copyreg.add_extension("os", "getcwd", code)
    try:
        pickle.loads(b"\x80\x02" + ext + b".")  # someone else's trusted pickle fills the cache
        path = _forge(tmp_path / "ext.pt", _dict(w=ext))
        with pytest.raises(NotPlain):
            read_zip_pickle(path)
    finally:
        copyreg.remove_extension("os", "getcwd", code)


def test_an_expanded_tensor_is_not_copied_out_to_its_full_size(tmp_path):
    # a valid file: one float expanded to 4096 x 4096 (stride 0) is 4 bytes on disk; the reader copies it to
    # 64 MiB (a (2**20, 2**20) expansion: 4 TiB, MemoryError). torch.load returns a view.
    path = tmp_path / "expand.pt"
    torch.save({"e": torch.tensor([2.5]).expand(4096, 4096)}, path)
    peak, outcome = _peak_bytes(lambda: read_zip_pickle(path))
    if isinstance(outcome, PosteriorError):
        return
    assert outcome["e"].shape == (4096, 4096) and np.all(outcome["e"][::512, ::512] == 2.5)
    assert peak < 16 << 20, f"{peak / 2**20:.0f} MiB for a {path.stat().st_size} byte file"


# --- what already holds -------------------------------------------------------------------------------------------


def test_valid_tensors_of_unusual_layouts_read_bit_identical(tmp_path):
    base = torch.randn(2, 3, 4, 5)
    obj = {
        "channels_last": base.contiguous(memory_format=torch.channels_last),
        "step": torch.arange(30.0)[1::3],
        "permuted": base.permute(3, 1, 0, 2),
        "expanded": torch.arange(3.0).unsqueeze(1).expand(3, 4),
        "size_one_dims": torch.randn(1, 5, 1).as_strided((1, 5, 1), (99, 1, 77)),
        "scalar_view": base[1, 2, 3, 4],
        "f16_slice": torch.randn(8, 8, dtype=torch.float16)[::2, 1::3],
        "f64": torch.randn(4, dtype=torch.float64),
        "i8": torch.arange(-5, 5, dtype=torch.int8),
        "i16": torch.arange(-5, 5, dtype=torch.int16),
        "empty_offset": torch.arange(10.0)[10:],
        "nonfinite": torch.tensor([float("inf"), float("-inf"), float("nan"), -0.0]),
    }
    path = tmp_path / "layouts.pt"
    torch.save(obj, path)
    ours, theirs = read_zip_pickle(path), torch.load(path, weights_only=True)
    assert ours.keys() == theirs.keys()
    for key, tensor in theirs.items():
        expected = tensor.numpy()
        assert ours[key].dtype == expected.dtype and ours[key].shape == expected.shape, key
        assert ours[key].tobytes() == np.ascontiguousarray(expected).tobytes(), key


@pytest.mark.parametrize(
    "size, stride, offset",
    [
        ((4,), (-1,), 3),
        ((4,), (1,), -1),
        ((5,), (1,), 0),
        ((2,), (1,), 3),
        ((1,) * 33, (1,) * 33, 0),
        ((2,), (1, 1), 0),
    ],
    ids=["negative stride", "negative offset", "past the end", "offset past the end", "33 dims", "ranks differ"],
)
def test_forged_layouts_are_refused_as_damaged(tmp_path, size, stride, offset):
    path = _forge(tmp_path / "layout.pt", _dict(w=_tensor("0", 4, offset, size, stride)), {"0": bytes(16)})
    with pytest.raises(PosteriorError, match="impossible layout|reaches element"):
        read_zip_pickle(path)


def test_a_state_dict_with_metadata_reads_as_torch_loads_it(tmp_path):
    torch.save(torch.nn.Linear(2, 3).state_dict(), tmp_path / "sd.pt")  # OrderedDict + BUILD {'_metadata': ...}
    ours, theirs = read_zip_pickle(tmp_path / "sd.pt"), torch.load(tmp_path / "sd.pt", weights_only=True)
    assert type(ours) is OrderedDict and list(ours) == list(theirs)
    assert all(np.array_equal(ours[k], theirs[k].numpy()) for k in theirs)


def test_forged_numel_beyond_the_member_is_refused(tmp_path):
    path = _forge(tmp_path / "numel.pt", _dict(w=_tensor("0", 1 << 40, 0, (4,), (1,))), {"0": bytes(16)})
    with pytest.raises(PosteriorError, match="shorter than it says"):
        read_zip_pickle(path)


def test_one_storage_declared_with_two_dtypes_falls_back(tmp_path):
    other = _tensor("0", 4, 0, (4,), (1,)).replace(b"FloatStorage", b"IntStorage")
    path = _forge(tmp_path / "two.pt", _dict(a=_tensor("0", 4, 0, (4,), (1,)), b=other), {"0": bytes(16)})
    with pytest.raises(NotPlain, match="declared twice"):
        read_zip_pickle(path)


@pytest.mark.parametrize(
    "body",
    [
        _global("os", "system") + _atom(("true",)) + b"R",  # REDUCE
        b"(" + _atom("true") + b"ios\nsystem\n",  # INST
        b"(" + _global("os", "system") + _atom("true") + b"o",  # OBJ
        _atom("os") + _atom("system") + b"\x93",  # STACK_GLOBAL
        _atom("builtins") + _atom("eval") + b"\x93" + _atom(("1",)) + b"R",
        _global("torch", "FloatStorage") + b"}" + _atom("dtype") + _atom("x") + b"sb",  # BUILD on a stand-in
        _global("torch._utils", "_rebuild_tensor_v2") + _atom((1, 0, (1,), (1,))) + b"R",  # no storage
        _global("torch._utils", "_rebuild_parameter") + _atom((1,)) + b"R",
        b"P0\n",  # PERSID: a text persistent id
        _atom(("storage", "FloatStorage", "0", "cpu", 4)) + b"Q",  # a storage kind that is a string
        _atom(("storage",) * 3) + b"Q",
        _global("torch.distributions.constraints", "_Real") + b")\x81" + _atom([1]) + b"b",  # NEWOBJ, list state
        _global("collections", "OrderedDict") + b")\x81" + _atom(frozenset({1})) + b"b",  # non-dict state
        b"\x8c\x04sets\x8c\x03set\x93)R",
        b"\x95\x00\x00\x00\x00\x00\x00\x00\x00",  # FRAME only: truncated
        b"h\xff",  # BINGET of nothing
    ],
    ids=lambda body: repr(body[:24]),
)
def test_forged_pickles_are_refused_without_running_anything(tmp_path, body):
    path = _forge(tmp_path / "forged.pt", body, {"0": bytes(16)})
    with pytest.raises(REFUSED):
        read_zip_pickle(path)


def test_a_tensor_as_a_dict_key_and_a_storage_in_the_result_fall_back(tmp_path):
    key_tensor = b"}" + _tensor("0", 4, 0, (4,), (1,)) + _atom(1) + b"s"
    bare_storage = _dict(w=_pid("0", 4) + b"Q")
    for i, body in enumerate([key_tensor, bare_storage]):
        with pytest.raises(NotPlain):
            read_zip_pickle(_forge(tmp_path / f"{i}.pt", body, {"0": bytes(16)}))


def test_deep_nesting_and_self_references_end_quickly(tmp_path):
    deep = _forge(tmp_path / "deep.pt", b"]" * 100_000 + b"a" * 99_999)
    with _deadline(1.5), pytest.raises(NotPlain):
        read_zip_pickle(deep)
    loop = _forge(tmp_path / "loop.pt", b"}r\x01\x00\x00\x00" + _atom("me") + b"j\x01\x00\x00\x00s")  # d["me"] = d
    read = read_zip_pickle(loop)
    assert read["me"] is read


def test_a_constraints_slot_state_is_merged_and_other_modules_refused(tmp_path):
    slotted = _global("torch.distributions.constraints", "_GreaterThan") + b")\x81"
    slotted += b"(N}" + _atom("lower_bound") + _atom(1.5) + b"stb"  # BUILD (None, {'lower_bound': 1.5})
    read = read_zip_pickle(_forge(tmp_path / "slots.pt", slotted))
    assert isinstance(read, PickledConstraint) and read.state == {"lower_bound": 1.5}
    np.testing.assert_array_equal(read.apply(np.zeros(2, np.float32)), [2.5, 2.5])
    for module, name in (
        ("pyro.distributions.constraints.evil", "_Real"),
        ("torch.distributions.constraints", "_SoftplusPositive"),  # a class named where it is not defined
        ("pyro.distributions.constraints", "_GreaterThan"),
    ):
        with pytest.raises(NotPlain, match="global"):
            read_zip_pickle(_forge(tmp_path / "evil.pt", _global(module, name) + b")\x81"))


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64])
@pytest.mark.parametrize(
    "constraint", [tc.positive, tc.greater_than(0.5), pc.softplus_positive, tc.independent(pc.softplus_positive, 1)]
)
def test_constraints_on_odd_values_match_transform_to(tmp_path, dtype, constraint):
    values = [-1e4, -100.0, -20.0, -1e-3, 0.0, 1e-3, 3.0, 19.99, 20.0, 20.01, 88.0, 89.0, 700.0, 710.0, 6e4]
    x = torch.tensor(values + [float("inf"), float("-inf"), float("nan")], dtype=dtype)
    torch.save({"c": constraint, "x": x, "empty": torch.zeros(0, 3, dtype=dtype)}, tmp_path / "c.pt")
    read = read_zip_pickle(tmp_path / "c.pt")
    ours = read["c"].apply(read["x"])
    assert ours.dtype == read["x"].dtype
    assert _ulps(ours, transform_to(constraint)(x).numpy()).max() <= 1
    assert read["c"].apply(read["empty"]).shape == (0, 3)


def test_a_big_endian_file_and_a_nested_data_pkl_go_to_torch(tmp_path):
    path = tmp_path / "big.pt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("big/data.pkl", b"\x80\x02N.")
        archive.writestr("big/byteorder", b"big")
    with pytest.raises(NotPlain, match="big-endian"):
        read_zip_pickle(path)
    nested = tmp_path / "nested.pt"
    with zipfile.ZipFile(nested, "w") as archive:
        archive.writestr("a/b/data.pkl", b"\x80\x02N.")
    with pytest.raises(NotPlain, match="data.pkl"):
        read_zip_pickle(nested)

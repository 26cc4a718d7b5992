""".pt files read without importing torch (bnncompress/sources/torchzip.py): the same arrays as
torch.load, the constraints Pyro's guides use, a fallback to torch's safe loader for the rest, and
refusals for tensors outside their storage."""

from __future__ import annotations

import io
import os
import pickle
import subprocess
import sys
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

EXAMPLE = Path(__file__).parent.parent / "data" / "example.pt"


def _arrays_equal(ours, theirs):
    if isinstance(theirs, torch.Tensor):
        expected = theirs.detach().numpy()
        return isinstance(ours, np.ndarray) and ours.dtype == expected.dtype and np.array_equal(ours, expected)
    if isinstance(theirs, dict):
        return (
            type(ours) is type(theirs)
            and ours.keys() == theirs.keys()
            and all(_arrays_equal(ours[k], theirs[k]) for k in theirs)
        )
    if isinstance(theirs, (list, tuple)):
        return type(ours) is type(theirs) and len(ours) == len(theirs) and all(map(_arrays_equal, ours, theirs))
    return ours == theirs


def test_tensors_of_every_layout_and_dtype_read_as_torch_loads_them(tmp_path):
    base = torch.arange(60, dtype=torch.float32).reshape(6, 10)
    obj = {
        "f32": torch.randn(5, 4),
        "f64": torch.randn(3, dtype=torch.float64),
        "f16": torch.randn(7, dtype=torch.float16),
        "i64": torch.arange(-3, 3),
        "i32": torch.arange(4, dtype=torch.int32),
        "u8": torch.arange(250, 256, dtype=torch.uint8),
        "bool": torch.tensor([True, False, True]),
        "transposed": base.t(),  # non-contiguous: strides (1, 10)
        "offset": base[2:, 3:7],  # a view into the middle of its storage
        "shared": [base[0], base[5]],  # two views of one storage
        "scalar": torch.tensor(2.5),
        "empty": torch.zeros(0, 3),
        "parameter": torch.nn.Parameter(torch.ones(2, 2)),
        "nested": OrderedDict(a=(torch.ones(1), "text", 3, None), b=[1.5, {"c": torch.zeros(2)}]),
    }
    path = tmp_path / "mixed.pt"
    torch.save(obj, path)
    ours = read_zip_pickle(path)
    expected = torch.load(path, weights_only=True)
    assert _arrays_equal(ours, expected)
    assert ours["transposed"].flags.c_contiguous  # copied out of the storage


def test_example_is_read_without_torch_and_matches_torchs_reading():
    code = (
        "import sys, bnncompress; p = bnncompress.read_posterior(sys.argv[1]); "
        "print('torch' in sys.modules, sorted(p.tensors))"
    )
    out = subprocess.run([sys.executable, "-c", code, str(EXAMPLE)], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False ['context_vectors', 'word_vectors']"
    ours = bnncompress.read_posterior(EXAMPLE)
    store = torch.load(EXAMPLE, weights_only=False)
    for name in ours.tensors:
        params = {k: v for k, v in store["params"].items() if k.endswith("." + name)}
        loc = params[f"AutoNormal.locs.{name}"].numpy()
        scale = transform_to(store["constraints"][f"AutoNormal.scales.{name}"])(params[f"AutoNormal.scales.{name}"])
        np.testing.assert_array_equal(ours.tensors[name].loc, loc)
        # float64 softplus rounded once against torch's float32 kernel: at most one unit in the last place
        ulps = np.abs(ours.tensors[name].scale.view(np.int32).astype(np.int64) - scale.numpy().view(np.int32))
        assert ulps.max() <= 1


@pytest.mark.parametrize(
    "constraint",
    [tc.real, tc.positive, tc.greater_than(2.0), pc.softplus_positive, tc.independent(tc.real, 1)],
    ids=["real", "positive", "greater_than", "softplus_positive", "independent"],
)
def test_the_constraints_of_pyros_guides_apply_as_transform_to(tmp_path, constraint):
    x = torch.linspace(-30.0, 30.0, 2001)
    torch.save({"c": constraint, "x": x}, tmp_path / "c.pt")
    read = read_zip_pickle(tmp_path / "c.pt")
    assert isinstance(read["c"], PickledConstraint)
    np.testing.assert_allclose(read["c"].apply(read["x"]), transform_to(constraint)(x).numpy(), rtol=2e-7, atol=0)


def test_other_constraints_and_dtypes_fall_back_to_torchs_loader(tmp_path):
    torch.save({"c": tc.interval(0.0, 2.0)}, tmp_path / "interval.pt")
    with pytest.raises(NotPlain, match="_Interval"):
        read_zip_pickle(tmp_path / "interval.pt")["c"].apply(np.zeros(2, np.float32))
    store = {
        "params": {"AutoNormal.locs.w": torch.zeros(3, 2), "AutoNormal.scales.w": torch.full((3, 2), -1.0)},
        "constraints": {"AutoNormal.locs.w": tc.real, "AutoNormal.scales.w": tc.interval(0.0, 2.0)},
    }
    torch.save(store, tmp_path / "store.pt")
    posterior = bnncompress.read_posterior(tmp_path / "store.pt")  # through torch: sigmoid(-1) * 2
    np.testing.assert_allclose(posterior.tensors["w"].scale, 2 / (1 + np.exp(1.0)), rtol=1e-6)
    torch.save({"w": {"loc": torch.zeros(2, dtype=torch.bfloat16), "scale": torch.ones(2)}}, tmp_path / "bf16.pt")
    with pytest.raises(NotPlain, match="global torch.BFloat16Storage"):
        read_zip_pickle(tmp_path / "bf16.pt")
    assert bnncompress.read_posterior(tmp_path / "bf16.pt").tensors["w"].loc.shape == (2,)


def _rewrite(src: Path, dst: Path, edit) -> None:
    """Copy a .pt zip with ``edit(name, data) -> (data, compress_type)`` applied to every member."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            data, kind = edit(info.filename, zin.read(info))
            zout.writestr(info.filename, data, compress_type=kind)


def test_tensors_outside_their_storage_are_refused_and_foreign_globals_never_run(tmp_path):
    good = tmp_path / "good.pt"
    torch.save({"w": {"loc": torch.arange(10.0), "scale": torch.ones(10)}}, good)
    stride_patched = tmp_path / "stride.pt"

    def widen_stride(name, data):  # the loc's stride (1,) -> (9,): element 81 of a storage of 10
        if name.endswith("data.pkl"):
            at = data.index(b"K\x01\x85")
            data = data[:at] + b"K\x09\x85" + data[at + 3 :]
        return data, zipfile.ZIP_STORED

    _rewrite(good, stride_patched, widen_stride)
    with pytest.raises(PosteriorError, match="reaches element 81 of a storage of 10"):
        read_zip_pickle(stride_patched)
    short = tmp_path / "short.pt"
    _rewrite(good, short, lambda n, d: (d[:8] if "/data/" in n else d, zipfile.ZIP_STORED))
    with pytest.raises(PosteriorError, match="shorter than it says"):
        read_zip_pickle(short)
    deflated = tmp_path / "deflated.pt"
    _rewrite(good, deflated, lambda n, d: (d, zipfile.ZIP_DEFLATED))
    with pytest.raises(NotPlain, match="compressed"):
        read_zip_pickle(deflated)

    class Evil:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "ran"),))

    evil = tmp_path / "evil.pt"

    def swap_pickle(name, data):
        return (pickle.dumps({"w": Evil()}, protocol=2) if name.endswith("data.pkl") else data), zipfile.ZIP_STORED

    _rewrite(good, evil, swap_pickle)
    with pytest.raises(NotPlain, match="global posix.system|global os.system"):
        read_zip_pickle(evil)
    with pytest.raises(PosteriorError, match="not allowed"):
        bnncompress.read_posterior(evil)
    assert not (tmp_path / "ran").exists()


def test_a_legacy_non_zip_file_is_read_by_torch(tmp_path):
    path = tmp_path / "legacy.pt"
    torch.save({"w": {"loc": torch.zeros(3), "scale": torch.ones(3)}}, path, _use_new_zipfile_serialization=False)
    with pytest.raises(NotPlain, match="not a zip file"):
        read_zip_pickle(path)
    assert bnncompress.read_posterior(path).tensors["w"].scale.tolist() == [1.0, 1.0, 1.0]


def test_pickle_may_not_set_the_state_of_a_tensor_and_shared_structure_is_kept(tmp_path):
    good = tmp_path / "good.pt"
    loop: list = [torch.ones(2)]
    loop.append(loop)
    torch.save({"w": {"loc": torch.arange(10.0), "scale": torch.ones(10)}, "loop": loop}, good)
    read = read_zip_pickle(good)
    assert read["loop"][1] is read["loop"] and read["loop"][0].tolist() == [1.0, 1.0]

    storage = object()

    class Reshaped:  # a tensor followed by BUILD: numpy's __setstate__ would take a state
        def __reduce__(self):
            args = (storage, 0, (10,), (1,), False, OrderedDict())
            return torch._utils._rebuild_tensor_v2, args, {"shape": (20,)}

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            return ("storage", torch.FloatStorage, "0", "cpu", 10) if obj is storage else None

    def swap_pickle(name, data):
        if name.endswith("data.pkl"):
            buffer = io.BytesIO()
            Pickler(buffer, protocol=2).dump({"w": {"loc": Reshaped(), "scale": Reshaped()}})
            data = buffer.getvalue()
        return data, zipfile.ZIP_STORED

    forged = tmp_path / "forged.pt"
    _rewrite(good, forged, swap_pickle)
    with pytest.raises(NotPlain, match="a state for a _Tensor"):
        read_zip_pickle(forged)


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_the_opcode_scan_walks_every_protocols_pickles(protocol):
    """The pre-scan skips each opcode's argument by its size: it reaches STOP on pickles of every
    protocol (text opcodes, frames, long strings and bytes) and refuses a memo index past the end."""
    from bnncompress.sources.picklescan import prescan

    obj = {"a": [1, -2, 2**40, -(2**70), 1.5, "x" * 300, b"y" * 70_000], ("t", 2): ({"nested": None}, True)}
    data = pickle.dumps([obj, obj, "é\n"], protocol=protocol)
    prescan(data)
    with pytest.raises(NotPlain, match="without STOP|truncated"):
        prescan(data[:-1])
    with pytest.raises(NotPlain, match="memo index beyond"):
        prescan(b"\x80\x02]r" + (2**20).to_bytes(4, "little") + b".")


def test_the_kernels_walk_over_a_pickle_refuses_what_the_python_walk_refuses():
    # the numba walk reads a large pickle (a big vocabulary); both must accept and refuse the same bytes
    import pickle
    import random

    from bnncompress.sources import _pickle_kernels
    from bnncompress.sources.picklescan import OPCODE_KINDS, NotPlain, _prescan_numba, _prescan_python

    kinds = ("UNKNOWN", "FIXED", "EXTENSION", "STOP", "MEMO_PUT", "ONE_LINE", "TWO_LINES", "TEXT_PUT", "LENGTH")
    assert [getattr(_pickle_kernels, k) for k in kinds + ("SIGNED_LENGTH",)] == list(range(10))
    assert sorted(set(OPCODE_KINDS.tolist())) == list(range(10))

    def outcome(walk, data):
        try:
            walk(data)
            return "passed"
        except NotPlain as exc:
            return str(exc)

    rng = random.Random(0)
    objects = [
        {"vocab": ["king", "queen", "é" * 300], "x": (1, 2.5, None, True), "n": -(2**70), "b": b"\x00" * 300},
        [list(range(300)), {"a": [1, 2], "b": {"c": "d" * 70000}}],
        ("t", 3, 2**40, -1, 1.5e300, "🙂"),
    ]
    seeds = [pickle.dumps(o, protocol=p) for o in objects for p in range(6)]
    seeds += [b"", b".", b"\x80\x02]r" + (2**20).to_bytes(4, "little") + b".", b"c__builtin__\nlen\n.", b"\x82\x01."]
    seeds += [b"p" + b"9" * 25 + b"\n.", b"p0007\n.", b"p\n.", b"p1_0\n.", b"X\xff\xff\xff\xff.", b"\x8e" + b"\xff" * 8]
    pieces = [bytes([b]) for b in range(256)] + [b"\n", b"9", b"\xff\xff\xff\x7f", b"\x00\x00\x00\x80"]
    cases = 0
    for seed in seeds:
        for _ in range(300):
            data = bytearray(seed)
            for _ in range(rng.randint(0, 3)):
                edit = rng.random()
                at = rng.randint(0, len(data))
                if edit < 0.3 and data:
                    data[min(at, len(data) - 1)] = rng.randint(0, 255)
                elif edit < 0.6:
                    data[at:at] = rng.choice(pieces)
                elif edit < 0.8:
                    del data[at:]
                else:
                    del data[at : at + rng.randint(1, 8)]
            data = bytes(data)
            assert outcome(_prescan_numba, data) == outcome(_prescan_python, data), data[:80]
            cases += 1
    for _ in range(3000):
        data = bytes(rng.randint(0, 255) for _ in range(rng.randint(0, 40)))
        assert outcome(_prescan_numba, data) == outcome(_prescan_python, data), data
    assert cases == 300 * len(seeds)


def test_a_process_with_numba_set_up_walks_small_pickles_in_the_kernel(monkeypatch):
    """Once numba's CPU target is set up (a pack ran), a vocabulary's pickle is walked by the kernel (0.2 ms), not in
    Python (11 ms for 20,000 words, every pack); a process without it keeps the Python walk."""
    import numba.np.arraymath  # noqa: F401  (what numba's first kernel call imports)

    from bnncompress.sources import open_posterior, picklescan

    def python_walk(data):
        raise AssertionError("walked in Python")

    monkeypatch.delitem(sys.modules, "bnncompress.sources._pickle_kernels", raising=False)
    monkeypatch.setattr(picklescan, "_prescan_python", python_walk)
    assert open_posterior(EXAMPLE).tensors
    monkeypatch.delitem(sys.modules, "numba.np.arraymath")
    monkeypatch.delitem(sys.modules, "bnncompress.sources._pickle_kernels")
    with pytest.raises(AssertionError, match="in Python"):
        picklescan.prescan(b"N.")


def _checkpoint(path: Path, value: float) -> None:
    """A trainer's checkpoint of two tensors, all ``value``, saved through a temporary file (each larger than a
    read buffer: the second is read from the file, not from bytes buffered with the first)."""
    torch.save({"a": torch.full((100, 100), value), "b": torch.full((100, 100), value)}, str(path) + ".tmp")
    os.replace(str(path) + ".tmp", path)


def _after_first_storage(monkeypatch, action) -> None:
    """Run ``action()`` once, right after the reader has read the file's first storage."""
    import bnncompress.sources.torchzip as torchzip

    real, calls = torchzip._read_member, []

    def read_then_act(*args, **kwargs):
        out = real(*args, **kwargs)
        calls.append(1)
        if len(calls) == 1:
            action()
        return out

    monkeypatch.setattr(torchzip, "_read_member", read_then_act)


def test_a_file_saved_over_the_path_while_it_is_read_is_read_in_one_version(tmp_path, monkeypatch):
    # (each storage was read by opening the path again: the second tensor came from the new file)
    path = tmp_path / "post.pt"
    _checkpoint(path, 1.0)
    _after_first_storage(monkeypatch, lambda: _checkpoint(path, 5.0))
    store = read_zip_pickle(path)
    assert [float(store[k].mean()) for k in "ab"] == [1.0, 1.0]


@pytest.mark.parametrize("clock", ["fine", "coarse"])
def test_a_file_written_in_place_while_it_is_read_is_refused(tmp_path, monkeypatch, clock):
    path = tmp_path / "post.pt"
    _checkpoint(path, 1.0)
    _checkpoint(tmp_path / "next.pt", 5.0)
    other = (tmp_path / "next.pt").read_bytes()
    assert len(other) == path.stat().st_size
    os.utime(path, ns=(10**18, 10**18))

    def write_in_place():  # torch.save(obj, path) truncates and rewrites the same file
        with open(path, "r+b") as fh:
            fh.write(other)
        if clock == "coarse":  # a kernel that stamps times once a tick (1-4 ms) may leave them as they were
            os.utime(path, ns=(10**18, 10**18))

    _after_first_storage(monkeypatch, write_in_place)
    with pytest.raises(PosteriorError, match="changed while it was read" if clock == "fine" else "its checksum"):
        read_zip_pickle(path)


def test_a_storage_that_does_not_match_its_checksum_is_refused(tmp_path):
    path = tmp_path / "post.pt"
    _checkpoint(path, 1.0)
    with zipfile.ZipFile(path) as archive:
        info = next(i for i in archive.infolist() if "/data/" in i.filename)
    data = bytearray(path.read_bytes())
    name_length, extra_length = (int.from_bytes(data[info.header_offset + k :][:2], "little") for k in (26, 28))
    data[info.header_offset + 30 + name_length + extra_length] ^= 0x40  # one bit of the first value
    path.write_bytes(bytes(data))
    with pytest.raises(PosteriorError, match="does not match its checksum"):
        read_zip_pickle(path)


@pytest.mark.skipif(not hasattr(torch.serialization, "set_crc32_options"), reason="torch < 2.5 always writes them")
def test_a_file_saved_without_checksums_is_read_by_torchs_loader(tmp_path):
    # (zipfile refused its first member: "'p.pt' is a damaged zip file (Bad CRC-32 ...)", which torch.load reads)
    loc = torch.randn(30, 4)
    torch.serialization.set_crc32_options(False)
    try:
        torch.save({"w.loc": loc, "w.scale": torch.full((30, 4), 0.1)}, tmp_path / "p.pt")
    finally:
        torch.serialization.set_crc32_options(True)
    with pytest.raises(NotPlain, match="without checksums"):
        read_zip_pickle(tmp_path / "p.pt")
    assert np.array_equal(bnncompress.read_posterior(tmp_path / "p.pt").tensors["w"].loc, loc.numpy())

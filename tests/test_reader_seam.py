"""The reader seam: a posterior file's format is detected once per pack and gives a typed reader;
every tensor of every source is a TensorPosterior; a new format is one module and one table entry."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import bnncompress
from bnncompress import packing, sources
from bnncompress.posterior import Posterior, StoredTensor, TensorPosterior
from bnncompress.sources import FORMATS, PosteriorReader, SourceFormat, detect, open_posterior, register_format
from bnncompress.sources.reader import Probe
from bnncompress.sources.stored import FileArray, FileTensor

from .test_streaming import write_hdf5, write_npy_dir, write_safetensors

WORDS = ["a", "b", "c", "d", "e", "f"]


@pytest.fixture()
def arrays():
    rng = np.random.default_rng(3)
    return rng.normal(size=(6, 4)).astype(np.float32), rng.uniform(0.05, 1, size=(6, 4)).astype(np.float32)


def _write_pt(path, tensors, vocab):
    pairs = {n: {"loc": torch.from_numpy(loc), "scale": torch.from_numpy(scale)} for n, (loc, scale) in tensors.items()}
    torch.save({**pairs, "vocab": vocab}, path)
    return path


def _write_npz(path, tensors, vocab):
    flat = {f"{n}.{k}": v for n, (loc, scale) in tensors.items() for k, v in (("loc", loc), ("scale", scale))}
    np.savez(path, vocab=np.array(vocab), **flat)
    return path


def _write_state_dict_safetensors(path, tensors, vocab):
    """An AutoNormal state dict (not flat loc/scale pairs): read whole through the container rules."""
    from safetensors.numpy import save_file

    flat = {}
    for n, (loc, scale) in tensors.items():
        flat[f"locs.{n}_unconstrained"] = loc
        flat[f"scales.{n}_unconstrained"] = np.log(np.expm1(scale)).astype(np.float32)  # softplus inverse
    save_file(flat, str(path))
    return path


FILES = {
    "torch": (_write_pt, "p.pt"),
    "npz": (_write_npz, "p.npz"),
    "safetensors": (write_safetensors, "p.safetensors"),
    "safetensors-whole": (_write_state_dict_safetensors, "n.safetensors"),
    "npy-directory": (write_npy_dir, "post"),
    "hdf5": (write_hdf5, "p.h5"),
}
STREAMED = {"safetensors", "npy-directory", "hdf5"}


def _count_detection(monkeypatch) -> dict[str, int]:
    """Count calls of detect() and of every format's detector."""
    calls = {"detect": 0}
    real = sources.detect

    def counted_detect(path):
        calls["detect"] += 1
        return real(path)

    def counted(fmt):
        def detector(probe):
            calls[fmt.name] = calls.get(fmt.name, 0) + 1
            return fmt.detector(probe)

        return SourceFormat(fmt.name, detector, fmt.reader)

    monkeypatch.setattr(sources, "detect", counted_detect)
    monkeypatch.setattr(sources, "FORMATS", [counted(f) for f in FORMATS])
    return calls


@pytest.mark.parametrize("kind", sorted(FILES))
@pytest.mark.parametrize("stream", [None, False, True])
def test_a_file_is_detected_once_per_pack(tmp_path, arrays, monkeypatch, kind, stream):
    write, name = FILES[kind]
    src = write(tmp_path / name, {"w": arrays}, WORDS)
    calls = _count_detection(monkeypatch)
    bnncompress.pack(src, tmp_path / "out.bnc", bits=2.0, method="vbq", stream=stream)
    assert calls.pop("detect") == 1
    assert calls and all(n == 1 for n in calls.values()), calls  # each detector tried at most once
    assert bnncompress.load(tmp_path / "out.bnc")["w"].shape == arrays[0].shape


@pytest.mark.parametrize("kind", sorted(FILES))
def test_detect_returns_a_reader_of_its_format(tmp_path, arrays, kind):
    write, name = FILES[kind]
    reader = detect(write(tmp_path / name, {"w": arrays}, WORDS))
    assert isinstance(reader, PosteriorReader)
    expected = next(f for f in FORMATS if f.name == kind.removesuffix("-whole"))
    assert type(reader) is expected.reader
    assert reader.read().vocab in (WORDS, None)


def _all_sources(tmp_path, arrays, trained):
    for kind, (write, name) in FILES.items():
        yield kind, write(tmp_path / name, {"w": arrays}, WORDS)
    yield "dict", {"w": arrays}
    yield "posterior", Posterior({"w": TensorPosterior(*arrays)})
    yield "live guide", trained["guide"]


def test_posterior_tensors_are_all_tensor_posteriors_for_every_source(tmp_path, arrays, trained):
    for kind, source in _all_sources(tmp_path, arrays, trained):
        read = bnncompress.read_posterior(source)
        assert {type(t) for t in read.tensors.values()} == {TensorPosterior}, kind
        assert read.in_memory, kind
        opened = open_posterior(source)
        assert all(isinstance(t, TensorPosterior) for t in opened.tensors.values()), kind
        assert opened.in_memory == (kind not in STREAMED), kind
        for name, t in opened.tensors.items():  # one contract: rows, and whole values, alike
            loc, scale = t.read(0, t.num_rows)
            assert np.array_equal(loc, read.tensors[name].loc.reshape(-1)), kind
            assert np.array_equal(scale, read.tensors[name].scale.reshape(-1)), kind
            assert np.array_equal(t.loc, read.tensors[name].loc), kind
            assert t.shape == read.tensors[name].shape and t.dtype == read.tensors[name].dtype, kind


@pytest.mark.parametrize("stream", [False, True])
def test_the_pipeline_gets_tensor_posteriors_without_rewrapping(tmp_path, arrays, monkeypatch, stream):
    src = write_npy_dir(tmp_path / "post", {"w": arrays})
    seen = []
    real = packing.quantize_and_code

    def spy(tensors, *args):
        seen.extend(tensors.values())
        return real(tensors, *args)

    monkeypatch.setattr(packing, "quantize_and_code", spy)
    bnncompress.pack(src, tmp_path / "out.bnc", bits=2.0, stream=stream)
    assert len(seen) == 1 and isinstance(seen[0], TensorPosterior)
    assert isinstance(seen[0], FileTensor) is stream  # streamed: the file's tensor itself; else read whole


# A toy posterior format, defined outside the package: "TOYPOST1", rows and columns as two
# little-endian uint32, then the float32 means and the float32 scales, C order.
TOY_MAGIC = b"TOYPOST1"


def _is_toy(probe: Probe) -> bool:
    return probe.head.startswith(TOY_MAGIC)


class ToyReader(PosteriorReader):
    def open(self) -> Posterior:
        header = self.path.read_bytes()[:16]
        shape = (int.from_bytes(header[8:12], "little"), int.from_bytes(header[12:16], "little"))
        n = 4 * shape[0] * shape[1]
        loc = FileArray(str(self.path), 16, shape, "<f4")
        scale = FileArray(str(self.path), 16 + n, shape, "<f4")
        return Posterior({"toy": FileTensor("toy", loc, scale, f"toy file '{self.path.name}'")}, None, "toy")


def _write_toy(path, loc, scale):
    rows, cols = loc.shape
    path.write_bytes(
        TOY_MAGIC + rows.to_bytes(4, "little") + cols.to_bytes(4, "little") + loc.tobytes() + scale.tobytes()
    )
    return path


def test_a_new_format_is_one_reader_and_one_table_entry(tmp_path, synthetic, monkeypatch):
    loc, scale = (np.ascontiguousarray(a, dtype=np.float32) for a in synthetic)
    src = _write_toy(tmp_path / "posterior.toy", loc, scale)
    with pytest.raises(bnncompress.PosteriorError, match="not a known posterior format"):
        detect(src)
    monkeypatch.setattr(sources, "FORMATS", list(FORMATS))
    register_format(SourceFormat("toy", _is_toy, ToyReader))
    assert isinstance(detect(src), ToyReader)
    with pytest.raises(bnncompress.OptionError, match="already registered"):
        register_format(SourceFormat("toy", _is_toy, ToyReader))
    bnncompress.pack(src, tmp_path / "whole.bnc", bits=2.0, stream=False)
    bnncompress.pack(src, tmp_path / "streamed.bnc", bits=2.0, stream=True)
    bnncompress.pack({"toy": (loc, scale)}, tmp_path / "memory.bnc", bits=2.0)
    whole = (tmp_path / "whole.bnc").read_bytes()
    assert whole == (tmp_path / "streamed.bnc").read_bytes()
    memory = bnncompress.load(tmp_path / "memory.bnc")
    assert np.array_equal(bnncompress.load(tmp_path / "whole.bnc")["toy"], memory["toy"])


def test_a_stored_tensor_checks_what_it_reads(tmp_path):
    loc = np.zeros((3, 2), np.float32)
    scale = np.array([[1, 1], [1, -1], [1, 1]], np.float32)
    t = ToyReader(_write_toy(tmp_path / "p.toy", loc, scale)).open().tensors["toy"]
    assert isinstance(t, StoredTensor) and not t.in_memory and repr(t) == "FileTensor(shape=(3, 2), dtype='float32')"
    assert t.read(0, 1)[1].tolist() == [1.0, 1.0]
    with pytest.raises(bnncompress.PosteriorError, match="scale of 'toy' has 1 NaN/inf or non-positive"):
        t.read(0, 3)

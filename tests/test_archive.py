import tempfile
import zlib

import h5py
import numpy as np
import pytest
import torch

import bnncompress
from bnncompress import ArchiveError, archive, gzipped
from bnncompress.archive import FORMAT_VERSION
from bnncompress.inmemory import fit_in_memory
from bnncompress.posterior import TensorPosterior
from bnncompress.quantizers import VBQ


@pytest.fixture()
def packed(tmp_path, synthetic):
    loc, scale = synthetic
    vocab = [f"w{i}" for i in range(loc.shape[0])]
    post = {"word_vectors": (loc, scale), "bias": (loc[:, 0].copy(), scale[:, 0].copy())}
    path = tmp_path / "a.bnc"
    result = bnncompress.pack(post, path, vocab=vocab, lam=0.05, method="vbq", device="cpu")
    return path, result, post, vocab


def test_round_trip_is_bit_exact(packed):
    path, _, post, vocab = packed
    a = bnncompress.load(path)
    assert a.names == ["word_vectors", "bias"] and a.vocab == vocab
    for name, (loc, scale) in post.items():
        expected = (
            fit_in_memory(VBQ(device="cpu"), TensorPosterior(loc, scale)).quantize(0.05).values().reshape(loc.shape)
        )
        np.testing.assert_array_equal(a[name], expected)


@pytest.mark.parametrize("tensors, weights", [(10, 1000), (40, 100_000), (100, 10_000)])
def test_overhead_stays_bounded_with_many_tensors(tmp_path, tensors, weights):
    rng = np.random.default_rng(0)
    post = {f"layer{i}.weight": (rng.normal(size=weights), np.full(weights, 0.1)) for i in range(tensors)}
    bnncompress.pack(post, tmp_path / "many.bnc", bits=2.0)
    a = bnncompress.load(tmp_path / "many.bnc")
    assert a.file_bytes - a.payload_bytes <= 16 * 1024 + 0.01 * a.file_bytes
    assert len(a.names) == tensors


def test_file_size_is_payload_plus_bounded_overhead(packed):
    path, result, _, _ = packed
    a = bnncompress.load(path)
    size = path.stat().st_size
    assert size == result.file_bytes == a.file_bytes
    assert a.payload_bytes == result.payload_bytes
    overhead = size - a.payload_bytes - a.vocab_bytes
    assert 0 < overhead <= 16 * 1024 + 0.01 * size
    info = a.info()
    assert info["total"]["payload_bits_per_weight"] == pytest.approx(8 * a.payload_bytes / a.num_weights)
    assert sum(t["payload_bytes"] for t in info["tensors"]) == a.payload_bytes


def test_conversions(packed):
    path, _, _, vocab = packed
    a = bnncompress.load(path)
    kv = a.to_keyed_vectors()
    np.testing.assert_array_equal(kv[vocab[5]], a["word_vectors"][5])
    emb = a.to_embedding("word_vectors")
    assert isinstance(emb, torch.nn.Embedding) and emb.weight.shape == (len(vocab), 50)
    sd = a.state_dict()
    assert set(sd) == {"word_vectors", "bias"} and sd["bias"].dtype == torch.float32


def test_original_dtype_is_restored(tmp_path):
    post = {
        "h": (torch.randn(100, 3, dtype=torch.float64), torch.full((100, 3), 0.1, dtype=torch.float64)),
        "b": (torch.randn(64).to(torch.bfloat16), torch.full((64,), 0.1).to(torch.bfloat16)),
    }
    bnncompress.pack(post, tmp_path / "d.bnc", lam=0.1)
    a = bnncompress.load(tmp_path / "d.bnc")
    assert a["h"].dtype == np.float64 and a.state_dict()["b"].dtype == torch.bfloat16


def _corrupt(path, offset_from_end=None, truncate=None):
    data = bytearray(path.read_bytes())
    if truncate is not None:
        data = data[:truncate]
    else:
        data[-offset_from_end] ^= 0xFF
    path.write_bytes(bytes(data))


def test_flipped_payload_byte_fails_the_checksum(packed):
    path = packed[0]
    with h5py.File(path, "r") as f:
        offset = f["words"].id.get_offset()
    data = bytearray(path.read_bytes())
    data[offset + 100] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(ArchiveError, match="checksum"):
        bnncompress.load(path)


@pytest.mark.parametrize("keep", [0.1, 0.5, 0.9, 0.999])
def test_truncated_archive(packed, keep):
    path = packed[0]
    _corrupt(path, truncate=int(path.stat().st_size * keep))
    with pytest.raises(ArchiveError):
        bnncompress.load(path)


def test_unknown_version_and_altered_attributes(packed, tmp_path):
    path = packed[0]
    with h5py.File(path, "r+") as f:
        f.attrs["format_version"] = np.int64(FORMAT_VERSION + 1)
    with pytest.raises(ArchiveError, match="reads versions 1 to 7 — upgrade bnncompress"):
        bnncompress.load(path)
    for never in (0, -1):  # no archive was ever written with such a version: damaged, not new
        with h5py.File(path, "r+") as f:
            f.attrs["format_version"] = np.int64(never)
        with pytest.raises(ArchiveError, match=f"format version {never};.* — the archive is damaged$"):
            bnncompress.load(path)
    with h5py.File(path, "r+") as f:
        f.attrs["format_version"] = np.int64(FORMAT_VERSION)
        f.attrs["manifest_sha256"] = np.bytes_(b"0" * 64)
    with pytest.raises(ArchiveError, match="manifest checksum"):
        bnncompress.load(path)


def test_not_an_archive(tmp_path):
    (tmp_path / "x.bnc").write_text("nope")
    with pytest.raises(ArchiveError, match="not a bnncompress archive"):
        bnncompress.load(tmp_path / "x.bnc")
    with pytest.raises(ArchiveError, match="does not exist"):
        bnncompress.load(tmp_path / "missing.bnc")
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = np.arange(3)
    with pytest.raises(ArchiveError, match="not a bnncompress archive"):
        bnncompress.load(tmp_path / "other.h5")


def test_same_input_gives_identical_bytes(tmp_path, synthetic):
    loc, scale = synthetic
    bnncompress.pack({"w": (loc, scale)}, tmp_path / "1.bnc", lam=0.1)
    bnncompress.pack({"w": (loc, scale)}, tmp_path / "2.bnc", lam=0.1)
    assert (tmp_path / "1.bnc").read_bytes() == (tmp_path / "2.bnc").read_bytes()


def test_rows_and_vector_decode_only_their_blocks(packed, monkeypatch):
    from bnncompress import coding, geometry

    path, _, _, vocab = packed
    full = bnncompress.load(path)["word_vectors"]
    a = bnncompress.load(path)
    assert (
        a.record("word_vectors").block_rows == geometry.BLOCK_SYMBOLS // 50
        and len(a.record("word_vectors").offsets) == 3
    )
    decoded_blocks = []
    real = coding.decode_prefixes

    def spy(*args, **kwargs):
        decoded_blocks.append(args[5] if len(args) > 5 else kwargs.get("blocks"))
        return real(*args, **kwargs)

    monkeypatch.setattr(coding, "decode_prefixes", spy)
    np.testing.assert_array_equal(a.vector(vocab[1500]), full[1500])
    np.testing.assert_array_equal(a.rows("word_vectors", [3, 1999, -1, 3]), full[[3, 1999, -1, 3]])
    assert decoded_blocks == [[1], [0, 1]]
    with pytest.raises(bnncompress.OptionError, match="out of range"):
        a.rows("word_vectors", [2000])
    with pytest.raises(bnncompress.OptionError, match="not in the archive's vocabulary"):
        a.vector("no-such-word")


def test_a_bfloat16_tensor_has_the_same_values_on_every_path(tmp_path):
    # numpy has no bfloat16: numpy paths give float32 holding bfloat16 values, as torch's cast rounds them
    rng = np.random.default_rng(0)
    loc = torch.tensor(rng.normal(size=(300, 8))).to(torch.bfloat16)
    bnncompress.pack({"w": (loc, torch.full((300, 8), 0.05).to(torch.bfloat16))}, tmp_path / "b.bnc", lam=0.1)
    a = bnncompress.load(tmp_path / "b.bnc")
    as_torch = a.state_dict()["w"]
    assert as_torch.dtype == torch.bfloat16 and a["w"].dtype == np.float32
    np.testing.assert_array_equal(a["w"], as_torch.float().numpy())
    np.testing.assert_array_equal(a.rows("w", [0, 299]), as_torch[[0, 299]].float().numpy())
    np.testing.assert_array_equal(a.embedding("w")(torch.tensor([7])).numpy(), as_torch[[7]].float().numpy())
    a.export(tmp_path / "b.npz")
    np.testing.assert_array_equal(np.load(tmp_path / "b.npz")["w"], as_torch.float().numpy())


def test_an_image_hdf5_1_14_cannot_read_back_is_told_as_such_not_as_a_damaged_file(tmp_path, monkeypatch):
    import h5py

    from bnncompress import archive as archive_module

    def fails(opener, path, file_bytes):  # what HDF5 1.14 said of its own in-memory image
        raise bnncompress.ArchiveError(
            f"archive '{path}' is corrupt or truncated (metadata checksum); re-create it with bnncompress pack"
        )

    monkeypatch.setattr(archive_module, "_read_hdf5", fails)
    monkeypatch.setattr(h5py.version, "hdf5_version_tuple", (1, 14, 6))
    monkeypatch.setattr(h5py.version, "hdf5_version", "1.14.6")
    with pytest.raises(bnncompress.ArchiveError) as caught:
        bnncompress.pack({"w": (np.zeros((8, 2)), np.ones((8, 2)))}, tmp_path / "w.bnc", lam=1.0)
    said = str(caught.value)
    assert said.startswith("nothing written") and "re-create" not in said, said
    assert said.endswith("with HDF5 1.14.6 the writer's images do not read back: install h5py>=3.16 (HDF5 2))"), said


def test_the_hdf5_hint_is_for_an_image_hdf5_could_not_open_only(monkeypatch):
    import h5py

    from bnncompress.hdf5checks import image_hint

    monkeypatch.setattr(h5py.version, "hdf5_version_tuple", (1, 14, 6))
    assert "install h5py>=3.16" in image_hint("archive 'a' is corrupt or truncated (metadata checksum)")
    assert image_hint("tensor 'w': the grid holds NaN") == ""  # (a plug-in's values: not HDF5's doing)
    monkeypatch.setattr(h5py.version, "hdf5_version_tuple", (2, 0, 0))
    assert image_hint("archive 'a' is corrupt or truncated (metadata checksum)") == ""


@pytest.mark.parametrize("words", [["w0"], [f"{w}{i:06d}" for i in range(110_000) for w in ("king", "ünï", "日本")]])
def test_a_vocabulary_chunk_made_beforehand_makes_the_file_hdf5s_filter_makes(words, monkeypatch):
    """A large vocabulary's chunk is written as made beforehand (a pack makes it while it quantizes, with zlib where it
    deflates as HDF5's): the archive's bytes are those of the filter writing the dataset; a small one's is None."""
    rng = np.random.default_rng(0)
    post = {"word_vectors": (rng.normal(size=(3, 4)), rng.uniform(0.1, 1, size=(3, 4)))}
    with tempfile.TemporaryDirectory() as tmp:
        bnncompress.pack(post, f"{tmp}/a.bnc", vocab=["a", "b", "c"], lam=0.5, method="uniform")
        records = archive.read_archive(f"{tmp}/a.bnc").tensors
    stored = gzipped.StoredVocabulary.of(words).chunk_meanwhile()
    direct = archive.archive_image(records, stored, "src", "0")
    large = len(stored.raw) >= gzipped.MEANWHILE_BYTES
    assert (stored.chunk() is not None) == large
    assert not large or zlib.decompress(stored.chunk()) == "\n".join(words).encode()
    monkeypatch.setattr(gzipped.StoredVocabulary, "chunk", lambda self: None)  # the filter writes the dataset
    assert archive.archive_image(records, words, "src", "0") == direct

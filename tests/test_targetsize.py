"""Packing to a target archive size: the file at most the size and within 2% below it, vocabulary and container
included; sizes read with units; sizes out of reach refused in one line."""

from __future__ import annotations

import threading
from fractions import Fraction

import numpy as np
import pytest
from typer.testing import CliRunner

import bnncompress
from bnncompress import gzipped, packing, targetsize
from bnncompress.cli import app
from bnncompress.errors import ArgumentTypeError, OptionError, RateControlError
from bnncompress.sources import open_posterior


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("4096", 4096),
        ("200K", 204_800),
        ("200k", 204_800),
        ("200KiB", 204_800),
        ("200KB", 200_000),
        ("200 kb", 200_000),
        ("1.5M", 1_572_864),
        ("1.5MB", 1_500_000),
        ("2G", 2 * 1024**3),
        ("1e3", 1000),
        ("10B", 10),
        (".5K", 512),
        ("1000.9", 1000),  # whole bytes, rounded down: the size is a maximum
        ("2.01KB", 2010),  # (exactly: a float product gave 2,009)
        ("8.11KB", 8110),
        (2**63 - 1, 2**63 - 1),
        (3000, 3000),
        (2500.7, 2500),
        (np.int64(77), 77),
        (Fraction(10**18 + 1), 10**18 + 1),  # (exactly, not through a float)
        (Fraction(7, 2), 3),
        ("9.2233720368547758e18", 9_223_372_036_854_775_800),
    ],
)
def test_sizes_are_read_with_units(text, expected):
    assert targetsize.parse_size(text) == expected


@pytest.mark.parametrize(
    "text",
    ["", "K", "12Q", "1.5.2M", "-5", "0", "0.5", "inf", "nan", "1e30", "1e400", "5 M B", 0, -3, 10**400, 2**63]
    + ["0" * 5000 + "12", "१२३", "12\xa0K", Fraction(10**400, 3), np.uint64(2**63)],  # (a ValueError, an OverflowError)
)
def test_sizes_that_mean_nothing_are_refused(text):
    with pytest.raises(OptionError, match="size"):
        targetsize.parse_size(text)


@pytest.mark.parametrize("value", [True, [1000], None, b"100K"])
def test_sizes_of_other_types_are_refused(value):
    with pytest.raises(ArgumentTypeError, match="size"):
        targetsize.parse_size(value)


@pytest.mark.parametrize("size", [30_000, 60_000, "100KB", "200K"])
def test_the_example_lands_within_two_percent_below_the_size(tmp_path, size):
    out = tmp_path / "s.bnc"
    r = bnncompress.pack("data/example.pt", out, size=size)  # 4,000 words: the vocabulary is 17 KB of the file
    target = targetsize.parse_size(size)
    assert 0.98 * target <= out.stat().st_size == r.file_bytes <= target
    assert r.target_size == target and not r.target_missed and r.target_bits is None
    a = bnncompress.load(out)
    assert len(a.vocab) == 4000 and a["word_vectors"].shape == (4000, 50)


def _tiny():
    """Three small tensors: the container is most of the archive, so the first archive measured is off."""
    rng = np.random.default_rng(1)
    shapes = {"conv.weight": (8, 1, 3, 3), "fc.weight": (10, 256), "fc.bias": (10,)}
    return {n: (rng.normal(size=s), rng.uniform(0.05, 0.8, size=s)) for n, s in shapes.items()}


@pytest.fixture()
def coded_lambdas(monkeypatch) -> list[float]:
    """The lambda of every coding pass a pack to a size makes, in order."""
    lambdas: list[float] = []
    original = targetsize.code_jobs
    monkeypatch.setattr(targetsize, "code_jobs", lambda jobs, lam, *a, **k: lambdas.append(lam) or original(
        jobs, lam, *a, **k))  # fmt: skip
    return lambdas


@pytest.mark.parametrize("size", [3_300, 4_000, 6_000])
def test_a_small_model_whose_container_outweighs_its_payload_lands_below_the_size(tmp_path, size, coded_lambdas):
    r = bnncompress.pack(_tiny(), tmp_path / "t.bnc", size=size)
    assert 0.98 * size <= (tmp_path / "t.bnc").stat().st_size == r.file_bytes <= size
    assert 2 <= len(coded_lambdas) <= targetsize.MAX_PASSES  # the first archive measured missed: its tensors' entries


def test_sizes_just_above_the_smallest_archive_land_in_the_window(tmp_path):
    """A first pass far above them measured more bytes besides the payload than the smallest archives have: sizes
    the largest lambdas reach were refused, or packed more than 2% below with a note that no lambda came closer."""
    smallest = bnncompress.pack(_tiny(), tmp_path / "top.bnc", lam=1e24).file_bytes
    for size in (smallest + 15, smallest + 40, smallest + 80):
        r = bnncompress.pack(_tiny(), tmp_path / "t.bnc", size=size)
        assert 0.98 * size <= r.file_bytes <= size and not r.target_missed
    with pytest.raises(RateControlError, match="below the smallest archive this posterior packs to"):
        bnncompress.pack(_tiny(), tmp_path / "t.bnc", size=smallest - 40)


def test_a_size_inside_a_jump_of_the_rate_packs_the_largest_archive_below_it(tmp_path):
    """k-means on the example jumps from 69 KB to 19 KB between two lambdas: a size between them was refused
    ("the smallest was 69,144"), the same lambda coded four times."""
    r = bnncompress.pack("data/example.pt", tmp_path / "k.bnc", size=50_000, method="kmeans")
    assert r.file_bytes <= 50_000 and r.target_missed
    assert any(w.startswith("target missed: the archive is") for w in r.warnings)


def test_a_size_just_above_the_largest_archive_is_refused_after_one_pass(tmp_path, coded_lambdas):
    """Within 2% of the largest payload rate control returns the end of lambda's range without raising: the
    smallest lambda was coded six times, then written far below the size with a note blaming a jump."""
    largest = bnncompress.pack(_tiny(), tmp_path / "max.bnc", lam=1e-24).file_bytes
    with pytest.raises(RateControlError, match=f"more than this method packs this posterior to .about {largest:,}"):
        bnncompress.pack(_tiny(), tmp_path / "t.bnc", size=int(largest * 1.025))
    assert len(coded_lambdas) == len(set(coded_lambdas)) <= 2


def test_no_pack_to_a_size_codes_a_lambda_twice(tmp_path, coded_lambdas):
    """Rate control's exp(log(lam)) differs in the last digit (9.999999999999981e23 for 1e24): near repeats were
    coded as new, and the lambda's digits in the manifest changed the archive's bytes."""
    for size in (2_700, 2_900, 3_300, 8_000, 10_000):
        coded_lambdas.clear()
        try:
            bnncompress.pack(_tiny(), tmp_path / "t.bnc", size=size, force=True)
        except RateControlError:
            pass
        lambdas = coded_lambdas
        assert len(lambdas) == len(set(lambdas)) and all(float(f"{lam:.4g}") == lam for lam in lambdas), lambdas


def test_sizes_out_of_reach_are_one_line_and_write_nothing(tmp_path):
    out = tmp_path / "x.bnc"
    with pytest.raises(RateControlError, match=r"no more than an archive of no tensors takes \(2,"):
        bnncompress.pack(_tiny(), out, size=2_000)
    with pytest.raises(RateControlError, match="more than this method packs this posterior to"):
        bnncompress.pack(_tiny(), out, size="1M")
    assert not out.exists()


def test_a_size_goes_alone_and_not_with_a_fixed_rate(tmp_path):
    for rate in ({"bits": 2.0}, {"lam": 0.5}):
        with pytest.raises(OptionError, match="only one of bits, size and lam"):
            bnncompress.pack(_tiny(), tmp_path / "x.bnc", size=5000, **rate)
    with pytest.raises(OptionError, match="fixed rate; give no bits, size or lam"):
        bnncompress.pack(_tiny(), tmp_path / "x.bnc", size=5000, method="float16")


def test_the_archive_is_what_the_size_pass_measured_supports_included(tmp_path, monkeypatch):
    """The bytes measured are the bytes written: the records' supports (a model's constrained sites) count."""
    measured = []
    original = targetsize.code_to_size

    def spy(jobs, size, measure, report):
        def recording(records):
            measured.append(measure(records))
            return measured[-1]

        return original(jobs, size, recording, report)

    monkeypatch.setattr(packing, "code_to_size", spy)
    post = open_posterior(_tiny())
    bounds = np.random.default_rng(2).normal(size=(10, 256)).round(6).tolist()  # ~20 KB of JSON in the manifest
    post.supports["fc.weight"] = {"constraint": "greater_than", "lower_bound": bounds}
    r = bnncompress.pack(post, tmp_path / "p.bnc", size=18_000)
    assert r.file_bytes in measured and 0.98 * 18_000 <= r.file_bytes == (tmp_path / "p.bnc").stat().st_size <= 18_000
    assert (bnncompress.load(tmp_path / "p.bnc")["fc.weight"] > np.array(bounds)).all()


def test_the_command_line_takes_a_size_and_maps_errors_to_its_flags(tmp_path):
    runner = CliRunner()
    out = tmp_path / "c.bnc"
    ok = runner.invoke(app, ["pack", "data/example.pt", "-o", str(out), "--size", "50K"])
    assert ok.exit_code == 0, ok.output
    assert "(target 51,200)" in ok.output and out.stat().st_size <= 51_200
    bad = runner.invoke(app, ["pack", "data/example.pt", "-o", str(tmp_path / "d.bnc"), "--size", "50Q"])
    assert bad.exit_code == 2 and "cannot read the size '50Q'" in bad.output and "Traceback" not in bad.output
    both = runner.invoke(app, ["pack", "data/example.pt", "-o", str(tmp_path / "d.bnc"), "--size", "5K", "--bits", "2"])
    assert both.exit_code == 2 and "give only one of --bits, --size and --lam" in both.output
    small = runner.invoke(app, ["pack", "data/example.pt", "-o", str(tmp_path / "d.bnc"), "--size", "10K"])
    assert small.exit_code == 2 and "ask for a larger --size" in small.output
    assert not (tmp_path / "d.bnc").exists()


def test_a_pack_to_a_size_compresses_its_vocabulary_once(tmp_path, monkeypatch, coded_lambdas):
    """Each pass's archive is measured, and the archive written: one gzip of the vocabulary for all of them (made so
    from MEANWHILE_BYTES on: the example's 4,000 words stand in for a large vocabulary)."""
    monkeypatch.setattr(gzipped, "MEANWHILE_BYTES", 1)
    made = []
    original = gzipped.gzip_chunk
    monkeypatch.setattr(gzipped, "gzip_chunk", lambda raw: made.append(len(raw)) or original(raw))
    r = bnncompress.pack("data/example.pt", tmp_path / "v.bnc", size=30_000)  # 4,000 words: 17 KB of the file
    assert len(coded_lambdas) >= 2 and r.file_bytes <= 30_000  # (a second pass: the measure is made twice or more)
    assert made == [len("\n".join(bnncompress.load(tmp_path / "v.bnc").vocab).encode())]


def test_a_failure_making_the_vocabulary_chunk_on_its_thread_is_no_traceback(tmp_path, monkeypatch):
    """The chunk's thread had no handler: a MemoryError there printed 'Exception in thread' and its traceback (with
    -q too), and the pack went on. The pack makes the chunk itself then (and would say its error as its own)."""
    original = gzipped.gzip_chunk

    def fails_on_its_thread(raw):
        if threading.current_thread().name == "bnncompress-vocabulary":
            raise MemoryError
        return original(raw)

    monkeypatch.setattr(gzipped, "MEANWHILE_BYTES", 1)  # (the example's vocabulary stands in for a large one)
    unhandled = []  # (what Python prints as "Exception in thread ..." and a traceback)
    monkeypatch.setattr(threading, "excepthook", lambda args: unhandled.append(args.exc_type))
    monkeypatch.setattr(gzipped, "gzip_chunk", fails_on_its_thread)
    bnncompress.pack("data/example.pt", tmp_path / "v.bnc", lam=1.0)
    assert len(bnncompress.load(tmp_path / "v.bnc").vocab) == 4000 and unhandled == []


def test_hdf5_never_deflates_the_vocabulary_on_a_thread_of_its_own(tmp_path, monkeypatch):
    """h5py holds its lock for a whole HDF5 call: a chunk deflated by HDF5 on the vocabulary's thread stopped every
    other HDF5 read of the process meanwhile (a streamed HDF5 posterior's fit 2.2 -> 7.1 s), and a pack that failed
    meanwhile hung at exit, the thread frozen holding the lock (second review). zlib makes it there; where zlib would
    make other bytes than HDF5's filter, HDF5 makes it on the pack's own thread, when the archive is written."""
    monkeypatch.setattr(gzipped, "MEANWHILE_BYTES", 1)  # (the example's vocabulary stands in for a large one)
    deflated_by_hdf5 = []
    original = gzipped._hdf5_chunk
    monkeypatch.setattr(gzipped, "_hdf5_chunk", lambda raw: deflated_by_hdf5.append(threading.current_thread().name)
                        or original(raw))  # fmt: skip
    bnncompress.pack("data/example.pt", tmp_path / "z.bnc", lam=1.0)
    assert "bnncompress-vocabulary" not in deflated_by_hdf5
    monkeypatch.setattr(gzipped, "zlib_deflates_as_hdf5", lambda: False)  # (as with a zlib-ng Python)
    threads = set(threading.enumerate())
    bnncompress.pack("data/example.pt", tmp_path / "h.bnc", lam=1.0)
    assert deflated_by_hdf5[-1] == threading.current_thread().name and set(threading.enumerate()) <= threads
    assert (tmp_path / "h.bnc").read_bytes() == (tmp_path / "z.bnc").read_bytes()


def test_a_small_vocabulary_is_deflated_by_hdf5_as_before_with_no_check_of_zlib(tmp_path, monkeypatch):
    """Comparing zlib with HDF5's deflate costs about 30 ms once per process (a command packs once): more than making
    a small vocabulary's chunk saves (third review: the example's first pack 88-97 -> 111-127 ms)."""
    monkeypatch.setattr(gzipped, "zlib_deflates_as_hdf5", lambda: pytest.fail("zlib compared for 4,000 words"))
    threads = []
    original = gzipped.StoredVocabulary.chunk_meanwhile
    monkeypatch.setattr(gzipped.StoredVocabulary, "chunk_meanwhile", lambda v: threads.append(v._maker) or original(v))
    bnncompress.pack("data/example.pt", tmp_path / "s.bnc", lam=1.0)
    assert len(bnncompress.load(tmp_path / "s.bnc").vocab) == 4000 and threads == [[]]

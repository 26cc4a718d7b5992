"""Posterior files saved over while they are opened, and other source edges of the stop-50 hunts: each
reader parses a header through one open file and reads its rows only from that file (an HDF5 or
safetensors file renamed over the path in between was read through the old header: another file's
bytes, loc and scale swapped), HDF5 groups tied under two names, a negative .npy shape, a damaged
HDF5 chunk, a carriage return inside a vocabulary file's word, a vocabulary that passes over
``word_vectors``."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import struct
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest
from safetensors.numpy import save_file

import bnncompress
import bnncompress.sources.hdf5 as hdf5_source
import bnncompress.sources.safetensors as safetensors_source
from bnncompress import PosteriorError
from bnncompress.errors import QualityWarning
from bnncompress.posterior import stamp_of
from bnncompress.sources import open_posterior, read_posterior
from bnncompress.sources.npy import npy_array

LOC = np.linspace(1, 2, 32, dtype=np.float32).reshape(8, 4)
SCALE = np.full((8, 4), 0.1, np.float32)


def _replacing(monkeypatch, module, name: str, newer, path) -> None:
    """``module.name`` renames ``newer`` over ``path`` on its first call (a writer saving a new version then)."""
    original = getattr(module, name)

    def racing(*args, **kwargs):
        if os.path.exists(newer):
            os.replace(newer, path)
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, racing)


@pytest.mark.parametrize("stream", [False, True])
def test_a_safetensors_file_saved_over_its_path_after_its_header_was_read_is_refused(tmp_path, monkeypatch, stream):
    path, newer = tmp_path / "p.safetensors", tmp_path / "newer.safetensors"
    save_file({"w.loc": LOC, "w.scale": SCALE}, str(path))
    # the same posterior, scale stored first: read through the old header, loc and scale came out swapped
    n = int.from_bytes(path.read_bytes()[:8], "little")
    header = json.dumps(
        {
            "w.scale": {"dtype": "F32", "shape": [8, 4], "data_offsets": [0, 128]},
            "w.loc": {"dtype": "F32", "shape": [8, 4], "data_offsets": [128, 256]},
        },
        separators=(",", ":"),
    ).encode()
    header += b" " * (n - len(header))
    newer.write_bytes(struct.pack("<Q", len(header)) + header + SCALE.tobytes() + LOC.tobytes())
    _replacing(monkeypatch, safetensors_source, "_safetensors_entry", newer, path)
    with pytest.raises(PosteriorError, match="changed|replaced"):
        bnncompress.pack(path, tmp_path / "o.bnc", method="float16", stream=stream)
    assert not (tmp_path / "o.bnc").exists()


def test_an_hdf5_file_saved_over_its_path_after_its_checks_is_refused_not_read_unchecked(tmp_path, monkeypatch):
    secret, path, forged = tmp_path / "secret.h5", tmp_path / "p.h5", tmp_path / "forged.h5"
    with h5py.File(secret, "w") as f:
        f["data"] = np.full((8, 4), 1000.0, np.float32)
    with h5py.File(path, "w") as f:
        f["w/loc"], f["w/scale"] = LOC, SCALE
    with h5py.File(forged, "w") as f:  # its loc a virtual dataset of another file's bytes (refused when checked)
        layout = h5py.VirtualLayout((8, 4), "f4")
        layout[:] = h5py.VirtualSource(str(secret), "data", (8, 4))
        f.create_virtual_dataset("w/loc", layout)
        f["w/scale"] = SCALE
    _replacing(monkeypatch, hdf5_source, "check_pair", forged, path)
    with pytest.raises(PosteriorError, match="changed|replaced"):
        bnncompress.pack(path, tmp_path / "o.bnc", method="float16")
    monkeypatch.undo()
    with pytest.raises(PosteriorError, match="VirtualDataset|virtual|another file|elsewhere"):
        bnncompress.pack(path, tmp_path / "o.bnc", method="float16")


def test_an_npy_file_saved_over_its_path_after_its_header_was_read_is_refused(tmp_path, monkeypatch):
    np.save(tmp_path / "w.loc.npy", LOC)
    np.save(tmp_path / "w.scale.npy", SCALE)
    np.save(tmp_path / "newer.npy", LOC * 1000)
    import bnncompress.sources.npy as npy_source

    _replacing(monkeypatch, npy_source, "FileArray", tmp_path / "newer.npy", tmp_path / "w.loc.npy")
    with pytest.raises(PosteriorError, match="changed|replaced"):
        bnncompress.pack(tmp_path, tmp_path / "o.bnc", method="float16")


def test_an_hdf5_group_tied_under_two_names_packs_both_names(tmp_path):
    rng = np.random.default_rng(0)
    with h5py.File(tmp_path / "p.h5", "w") as f:
        f["enc/loc"], f["enc/scale"] = rng.normal(size=(64, 8)).astype(np.float32), np.full((64, 8), 0.01, np.float32)
        f["dec"] = f["enc"]  # a hard link: one group, two names (tied weights)
        f["enc/self"] = f["enc"]  # and a group that contains itself: listed, not entered again
    bnncompress.pack(tmp_path / "p.h5", tmp_path / "o.bnc", method="float16")
    a = bnncompress.load(tmp_path / "o.bnc")
    assert sorted(a.names) == ["dec", "enc"]
    np.testing.assert_array_equal(a["dec"], a["enc"])


def test_an_hdf5_file_of_groups_linked_under_ever_more_names_is_refused(tmp_path):
    with h5py.File(tmp_path / "p.h5", "w") as f:
        group = f.create_group("g0")
        for i in range(1, 30):  # 2^29 names for one pair
            group["a"] = group["b"] = f.create_group(f"n{i}")
            group = f[f"n{i}"]
        group["loc"], group["scale"] = np.zeros((2, 2), np.float32), np.ones((2, 2), np.float32)
    with pytest.raises(PosteriorError, match="names"):
        read_posterior(tmp_path / "p.h5")


def test_a_damaged_hdf5_chunk_is_one_posterior_error_not_an_os_error(tmp_path):
    path = tmp_path / "p.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("w/loc", data=LOC, chunks=(8, 4), fletcher32=True)
        f["w/scale"] = SCALE
        offset = f["w/loc"].id.get_chunk_info(0).byte_offset
    data = bytearray(path.read_bytes())
    data[offset + 5] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(PosteriorError, match="cannot be read.*damaged"):
        bnncompress.pack(path, tmp_path / "o.bnc", method="float16")


def test_an_npy_header_with_a_negative_size_is_refused(tmp_path):
    for name, values in (("w.loc.npy", LOC), ("w.scale.npy", SCALE)):  # (both: shapes that agree)
        np.save(tmp_path / name, values)
        raw = (tmp_path / name).read_bytes()
        forged = raw.replace(b"(8, 4)", b"(-8,4)")  # (as long: the header keeps its length)
        assert forged != raw
        (tmp_path / name).write_bytes(forged)
    with pytest.raises(PosteriorError, match="negative"):
        read_posterior(tmp_path)


def test_a_carriage_return_inside_a_vocabulary_files_word_is_refused_not_a_line_break(tmp_path):
    (tmp_path / "vocab.txt").write_bytes(b"king\nque\ren\nman\n")  # three lines; read as four words, rows shifted
    vectors = {"word_vectors": (np.zeros((4, 2)), np.ones((4, 2)))}
    with pytest.raises(PosteriorError, match="control character"):
        bnncompress.pack(vectors, tmp_path / "v.bnc", vocab=tmp_path / "vocab.txt")
    (tmp_path / "mac.txt").write_bytes(b"king\rqueen\rman\rwoman\r")  # classic Mac line ends are still lines
    bnncompress.pack(vectors, tmp_path / "v.bnc", vocab=tmp_path / "mac.txt", lam=0.01)
    assert bnncompress.load(tmp_path / "v.bnc").vocab == ["king", "queen", "man", "woman"]


def test_a_vocabulary_that_does_not_fit_word_vectors_but_another_tensor_is_said(tmp_path):
    posterior = {"word_vectors": (np.zeros((6, 2)), np.ones((6, 2))), "context": (np.zeros((5, 2)), np.ones((5, 2)))}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        bnncompress.pack(posterior, tmp_path / "v.bnc", vocab=list("abcde"), lam=0.01)
        bnncompress.pack(posterior, tmp_path / "w.bnc", vocab=list("abcdef"), lam=0.01)
    said = [str(w.message) for w in caught if w.category is QualityWarning and "does not fit" in str(w.message)]
    assert len(said) == 1 and "'word_vectors' (6 rows)" in said[0] and "'context'" in said[0]


def test_a_constraint_that_does_not_fit_its_tensor_is_one_posterior_error_on_torchs_path_too(tmp_path):
    import torch
    from torch.distributions import constraints

    params = {"AutoNormal.locs.x": torch.tensor(0.5), "AutoNormal.scales.x": torch.tensor(0.3), "p": torch.ones(3) / 3}
    # (the simplex sends the file to torch's loader; independent(real, 1) needs a dimension the 0-d loc lacks)
    kinds = {"AutoNormal.locs.x": constraints.independent(constraints.real, 1), "p": constraints.simplex}
    torch.save({"params": params, "constraints": kinds}, tmp_path / "store.pt")
    with pytest.raises(PosteriorError, match="does not fit its tensor"):
        read_posterior(tmp_path / "store.pt")


def test_an_npz_saved_over_its_path_while_it_is_checked_is_not_seen(tmp_path, monkeypatch):
    import bnncompress.sources.npz as npz_source

    np.savez(tmp_path / "p.npz", **{"w.loc": LOC, "w.scale": SCALE})
    np.savez(tmp_path / "newer.npz", **{"w.loc": LOC * 1000, "w.scale": SCALE})  # (unchecked: any contents)
    _replacing(monkeypatch, npz_source, "_check_npz_member", tmp_path / "newer.npz", tmp_path / "p.npz")
    bnncompress.pack(tmp_path / "p.npz", tmp_path / "o.bnc", method="float16")
    np.testing.assert_allclose(bnncompress.load(tmp_path / "o.bnc")["w"], LOC, rtol=1e-3)  # the file checked


def test_each_read_checks_the_file_it_opened_against_the_file_whose_header_was_read(tmp_path):
    # (a file swapped in for the read and back before the checks around it: only the open file tells)
    np.save(tmp_path / "w.loc.npy", LOC)
    np.save(tmp_path / "w.scale.npy", SCALE)
    with h5py.File(tmp_path / "p.h5", "w") as f:
        f["w/loc"], f["w/scale"] = LOC, SCALE
    other = stamp_of(os.stat(tmp_path / "w.scale.npy"))  # another file's stamp
    array = npy_array(tmp_path / "w.loc.npy")
    np.testing.assert_array_equal(array.rows(0, 2), LOC[:2].reshape(-1))
    with pytest.raises(PosteriorError, match="replaced or written while it was read"):
        dataclasses.replace(array, stamp=other).rows(0, 2)
    tensor = open_posterior(tmp_path / "p.h5").tensors["w"]
    np.testing.assert_array_equal(tensor._read(0, 2)[0], LOC[:2])
    with pytest.raises(PosteriorError, match="replaced or written while it was read"):
        dataclasses.replace(tensor, stamp=other)._read(0, 2)


@pytest.mark.parametrize("driver", ["stdio", "core"])
def test_hdf5_posteriors_and_archives_read_whatever_hdf5_driver_says(tmp_path, driver):
    with h5py.File(tmp_path / "p.h5", "w") as f:
        f["w/loc"], f["w/scale"] = LOC, SCALE
    script = (  # (HDF5 reads HDF5_DRIVER when it starts: a process of its own; that driver's handle is no descriptor)
        "import sys, bnncompress; p, o = sys.argv[1:]; bnncompress.pack(p, o, method='float16', stream=True); "
        "print(bnncompress.load(o)['w'][0, 0])"
    )
    env = {**os.environ, "HDF5_DRIVER": driver}
    run = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "p.h5"), str(tmp_path / "o.bnc")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-500:]
    assert float(run.stdout) == pytest.approx(LOC[0, 0], rel=1e-3)


def _fifo_over(path) -> None:
    fifo = f"{path}.fifo"
    os.mkfifo(fifo)
    os.replace(fifo, path)


@pytest.fixture
def no_hang():
    """A test that would block for ever fails after 20 s instead."""

    def hung(*_):
        raise TimeoutError("blocked in open()")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(20)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="POSIX FIFOs")
def test_a_fifo_put_at_a_checked_path_is_refused_not_waited_on(tmp_path, monkeypatch, no_hang):
    import bnncompress.inputfiles as inputfiles

    (tmp_path / "vocab.txt").write_text("a\nb\n")
    checked = inputfiles.input_file

    def racing(path, what, within=None):
        found = checked(path, what, within)
        _fifo_over(path)  # after the check, before the open
        return found

    monkeypatch.setattr(inputfiles, "input_file", racing)
    with pytest.raises(PosteriorError, match="not a regular file"):
        bnncompress.vocabulary.read_vocab(tmp_path / "vocab.txt")


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="symbolic links")
@pytest.mark.parametrize("kernel", [True, False], ids=["openat2", "without-openat2"])
def test_a_link_in_a_posterior_directory_turned_outwards_as_it_is_opened_is_refused(tmp_path, monkeypatch, kernel):
    import bnncompress.inputfiles as inputfiles

    inside, outside = tmp_path / "posterior", tmp_path / "secret.txt"
    inside.mkdir()
    np.save(inside / "w.loc.npy", LOC)
    np.save(inside / "w.scale.npy", SCALE)
    outside.write_text("\n".join(f"secret{i}" for i in range(8)) + "\n")
    (inside / "words.txt").write_text("\n".join(f"w{i}" for i in range(8)) + "\n")
    (inside / "vocab.txt").symlink_to("words.txt")  # a link that stays inside: accepted
    assert read_posterior(inside).vocab == [f"w{i}" for i in range(8)]

    def turn_outwards():
        (inside / "vocab.txt").unlink()
        (inside / "vocab.txt").symlink_to(outside)

    if kernel:  # the kernel resolves beneath the directory: a link turned outwards just before is refused
        if inputfiles.open_beneath(inside, "words.txt", os.O_RDONLY) is None:
            pytest.skip("no openat2 here")
        opener = inputfiles.open_beneath

        def racing(directory, name, flags):
            if os.path.basename(name) == "vocab.txt":
                turn_outwards()
            return opener(directory, name, flags)

        monkeypatch.setattr(inputfiles, "open_beneath", racing)
        with pytest.raises(PosteriorError, match="outside the directory"):
            read_posterior(inside)
        return
    monkeypatch.setattr(inputfiles, "open_beneath", lambda *args: None)  # (an older kernel: check, open, check)
    checked = inputfiles.input_file

    def racing_check(path, what, within=None):
        found = checked(path, what, within)
        if path.name == "vocab.txt":  # the link turned outwards between the check and the open
            turn_outwards()
        return found

    monkeypatch.setattr(inputfiles, "input_file", racing_check)
    with pytest.raises(PosteriorError, match="changed while it was opened"):
        read_posterior(inside)
    monkeypatch.setattr(inputfiles, "input_file", checked)
    with pytest.raises(PosteriorError, match="outside the directory"):
        read_posterior(inside)


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="symbolic links")
def test_links_inside_by_absolute_path_or_through_dotdot_are_read_and_those_out_refused(tmp_path):
    inside = tmp_path / "posterior"
    inside.mkdir()
    np.save(inside / "w.loc.npy", LOC)
    np.save(inside / "real.npy", SCALE)
    (inside / "w.scale.npy").symlink_to(inside / "real.npy")  # absolute, inside: the kernel says EXDEV to it
    (inside / "words.txt").write_text("\n".join(f"w{i}" for i in range(8)) + "\n")
    (inside / "vocab.txt").symlink_to(f"../{inside.name}/words.txt")
    p = read_posterior(inside)
    np.testing.assert_array_equal(p.tensors["w"].scale, SCALE)
    assert p.vocab == [f"w{i}" for i in range(8)]
    (tmp_path / "words.txt").write_text("\n".join(f"secret{i}" for i in range(8)) + "\n")
    (inside / "vocab.txt").unlink()
    (inside / "vocab.txt").symlink_to("../words.txt")
    with pytest.raises(PosteriorError, match="'vocab.txt' is a symbolic link to .*outside the directory"):
        read_posterior(inside)


def test_an_archive_saved_over_twice_while_it_is_opened_is_read_with_its_own_size(tmp_path, monkeypatch):
    import bnncompress.archive as archive_module

    path, small = tmp_path / "a.bnc", tmp_path / "small.bnc"
    rng = np.random.default_rng(0)
    bnncompress.pack({"w": (rng.normal(size=(2000, 20)), np.full((2000, 20), 0.05))}, path, method="float16")
    bnncompress.pack({"w": (rng.normal(size=(20, 4)), np.full((20, 4), 0.05))}, small, method="float16")
    checked = archive_module.open_unreplaced

    def racing(where, opened, error):  # two saves over the path: the first file's inode number free again (ext4)
        if small.exists():
            (tmp_path / "b.tmp").write_bytes(b"B")
            os.replace(tmp_path / "b.tmp", path)
            (tmp_path / "c.tmp").write_bytes(small.read_bytes())  # (made now: it may get the first file's inode)
            small.unlink()
            os.replace(tmp_path / "c.tmp", path)
        return checked(where, opened, error)

    monkeypatch.setattr(archive_module, "open_unreplaced", racing)
    a = bnncompress.load(path)
    assert a.shape("w") == (20, 4) and a.file_bytes == path.stat().st_size


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="POSIX FIFOs")
@pytest.mark.parametrize("kind", ["safetensors", "npz", "pt"])
def test_a_fifo_put_at_a_posterior_files_path_after_it_was_probed_is_refused(tmp_path, monkeypatch, no_hang, kind):
    import torch

    from bnncompress.sources import reader

    path = tmp_path / f"p.{kind}"
    pairs = {"w.loc": LOC, "w.scale": SCALE}
    if kind == "safetensors":
        save_file(pairs, str(path))
    elif kind == "npz":
        np.savez(path, **pairs)
    else:
        torch.save({k: torch.from_numpy(v) for k, v in pairs.items()}, path)
    probed = reader.Probe.of.__func__

    def racing(cls, where, given=None):
        found = probed(cls, where, given)
        _fifo_over(where)
        return found

    monkeypatch.setattr(reader.Probe, "of", classmethod(racing))
    with pytest.raises(PosteriorError, match="not a regular file"):
        read_posterior(path)


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts /proc/self/fd")
def test_a_directory_put_at_a_checked_path_leaks_no_descriptor(tmp_path, monkeypatch):
    import bnncompress.inputfiles as inputfiles

    checked = inputfiles.input_file

    def racing(path, what, within=None):
        found = checked(path, what, within)
        path.unlink()
        path.mkdir()
        return found

    monkeypatch.setattr(inputfiles, "input_file", racing)
    before = len(os.listdir("/proc/self/fd"))
    for i in range(20):
        (tmp_path / f"v{i}.txt").write_text("a\n")
        with pytest.raises(PosteriorError, match=f"v{i}.txt.*not a regular file"):
            bnncompress.vocabulary.read_vocab(tmp_path / f"v{i}.txt")
    assert len(os.listdir("/proc/self/fd")) <= before + 2


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="symbolic links")
def test_links_that_the_kernel_will_not_follow_from_the_directory_are_read_as_the_system_resolves_them(tmp_path):
    """Review of the openat2 change: a link retried by its target read as text took '..' after a linked
    subdirectory lexically (another file, silently), and chains and aliases of the directory were refused."""
    d = tmp_path / "post"
    (d / "deep" / "er").mkdir(parents=True)
    np.save(d / "w.loc.npy", LOC)
    np.save(d / "real.npy", SCALE)
    (d / "abs").symlink_to(d / "real.npy")
    (d / "w.scale.npy").symlink_to("abs")  # a chain: relative, then absolute
    (d / "words.txt").write_text("decoy0\ndecoy1\n")
    (d / "deep" / "words.txt").write_text("\n".join(f"w{i}" for i in range(8)) + "\n")
    (d / "sub").symlink_to("deep/er")
    os.symlink(f"{d}/sub/../words.txt", d / "vocab.txt")  # the system: deep/words.txt (sub's parent is deep)
    (tmp_path / "alias").symlink_to(d)
    for given in (d, tmp_path / "alias"):
        p = read_posterior(given)
        assert p.vocab == [f"w{i}" for i in range(8)]
        np.testing.assert_array_equal(p.tensors["w"].scale, SCALE)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs")
def test_a_fifo_in_a_posterior_directory_is_refused_without_opening_it(tmp_path):
    """Opened for reading before its type was known, a FIFO released a writer blocked on it (review)."""
    d = tmp_path / "post"
    d.mkdir()
    np.save(d / "w.loc.npy", LOC)
    os.mkfifo(d / "w.scale.npy")
    released = threading.Event()

    def writer():
        fd = os.open(d / "w.scale.npy", os.O_WRONLY)  # blocks until the FIFO is opened for reading
        released.set()
        os.close(fd)

    threading.Thread(target=writer, daemon=True).start()
    time.sleep(0.1)
    with pytest.raises(PosteriorError, match="w.scale.npy' is not a regular file"):
        read_posterior(d)
    assert not released.wait(0.3)
    os.close(os.open(d / "w.scale.npy", os.O_RDONLY | os.O_NONBLOCK))  # (lets the writer go)


def test_rows_are_read_again_beneath_the_directory(tmp_path, monkeypatch):
    """The rows of a .npy were read by opening its path again, following links anywhere (review)."""
    import bnncompress.inputfiles as inputfiles

    d = tmp_path / "post"
    d.mkdir()
    np.save(d / "w.loc.npy", LOC)
    np.save(d / "w.scale.npy", SCALE)
    seen = []
    opener = inputfiles.open_input
    monkeypatch.setattr(
        sys.modules["bnncompress.sources.stored"], "open_input", lambda *a: seen.append(a[2]) or opener(*a)
    )
    np.testing.assert_array_equal(read_posterior(d).tensors["w"].scale, SCALE)  # (its rows: read again)
    assert len(seen) == 2 and all(Path(w) == d for w in seen)


@pytest.mark.parametrize("sandboxed", [False, True], ids=["one-file-denied", "sandbox"])
def test_openat2_is_given_up_only_when_it_is_refused_as_such(tmp_path, monkeypatch, sandboxed):
    """One file denied (a fanotify listener's EPERM) turned openat2 off for the whole process (review);
    a sandbox that refuses openat2 itself leaves the check, open, check."""
    import ctypes
    import errno as errnos

    import bnncompress.openbeneath as openbeneath

    d = tmp_path / "post"
    d.mkdir()
    np.save(d / "w.loc.npy", LOC)
    np.save(d / "w.scale.npy", SCALE)
    probe = openbeneath.open_beneath(d, "w.loc.npy", os.O_RDONLY)
    if probe is None:
        pytest.skip("no openat2 here")
    os.close(probe)
    monkeypatch.setattr(openbeneath, "_openat2", openbeneath._openat2)  # (given back after the test)
    real = openbeneath._call

    def call(dir_fd, name, flags):
        if name == b"w.scale.npy" or (sandboxed and name == b"."):
            ctypes.set_errno(errnos.EPERM)
            return -1
        return real(dir_fd, name, flags)

    monkeypatch.setattr(openbeneath, "_call", call)
    if sandboxed:
        np.testing.assert_array_equal(read_posterior(d).tensors["w"].scale, SCALE)  # (the path's open)
        assert openbeneath._openat2 is None
    else:
        with pytest.raises(PosteriorError, match=r"w.scale.npy' \(Operation not permitted\)"):
            read_posterior(d)
        assert openbeneath._openat2 is not None


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="symbolic links")
@pytest.mark.parametrize("given", ["absolute", "relative"])
def test_a_link_out_through_a_linked_subdirectory_is_refused_not_read_as_a_decoy_inside(tmp_path, monkeypatch, given):
    """Second review: a link's target read as text had '..' collapsed without following 'sub' (a decoy inside
    was read, silently), and a directory given as a relative path had it joined twice."""
    d = tmp_path / "post"
    d.mkdir()
    np.save(d / "w.loc.npy", LOC)
    np.save(d / "w.scale.npy", SCALE)
    (tmp_path / "elsewhere" / "deep").mkdir(parents=True)
    (tmp_path / "elsewhere" / "v.txt").write_text("".join(f"secret{i}\n" for i in range(8)))
    (d / "v.txt").write_text("".join(f"decoy{i}\n" for i in range(8)))  # what '..' taken as text would name
    (d / "elsewhere").mkdir()  # and what a relative directory joined twice would name
    (d / "elsewhere" / "v.txt").write_text("".join(f"decoy{i}\n" for i in range(8)))
    (d / "sub").symlink_to("../elsewhere/deep")
    (d / "vocab.txt").symlink_to("sub/../v.txt")  # the system: elsewhere/v.txt, outside
    assert (d / "vocab.txt").read_text().startswith("secret")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(PosteriorError, match="vocab.txt' is a symbolic link to .*outside the directory"):
        read_posterior(d if given == "absolute" else Path("post"))
    (d / "vocab.txt").unlink()
    (d / "vocab.txt").symlink_to("../elsewhere/v.txt")
    with pytest.raises(PosteriorError, match="vocab.txt' is a symbolic link to .*outside the directory"):
        read_posterior(d if given == "absolute" else Path("post"))

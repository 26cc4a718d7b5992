"""Legitimate files the stricter input checks of stop 50 refused (the stop-51 review): a file under another
process's lease (Samba's oplocks, an NFS server's delegations), a posterior directory reached through
``/proc/PID/root`` (a container's file system), an HDF5 checkpoint whose group is linked under a dozen
names; and what the review of those fixes found (a link out of a directory seen through /proc/PID/root let in,
a small HDF5 file of names looked up for minutes)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np
import pytest
from safetensors.numpy import save_file

import bnncompress
from bnncompress.openbeneath import open_beneath
from bnncompress.sources import read_posterior

LOC = np.linspace(1, 2, 32, dtype=np.float32).reshape(8, 4)
SCALE = np.full((8, 4), 0.1, np.float32)

_HOLDER = textwrap.dedent(
    """
    import fcntl, os, signal, sys, time
    fd = os.open(sys.argv[1], os.O_RDWR)
    def release(*_):  # a lease holder told of a break flushes, then lets go
        time.sleep(0.3)
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)
    signal.signal(signal.SIGIO, release)
    try:
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_WRLCK)
    except OSError as exc:
        print("no lease", exc, flush=True)
        sys.exit(0)
    print("leased", flush=True)
    time.sleep(20)
    """
)


def _leased(path: Path) -> subprocess.Popen:
    """A child process holding a write lease on ``path`` (released 0.3 s after the kernel asks)."""
    if not hasattr(__import__("fcntl"), "F_SETLEASE"):
        pytest.skip("no file leases here")
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(path)], stdout=subprocess.PIPE, text=True)
    line = holder.stdout.readline()
    if not line.startswith("leased"):
        holder.wait()
        pytest.skip(f"this file system gives no leases ({line.strip()})")
    return holder


@pytest.mark.parametrize("kind", ["safetensors", "vocabulary", "archive", "npy"])
def test_a_file_under_another_processs_lease_is_read_once_the_holder_lets_go(tmp_path, kind):
    # the non-blocking open (a FIFO must not hang) failed at once with EAGAIN: "cannot read ... (Resource
    # temporarily unavailable)", where a plain open waits for the lease to be broken
    save_file({"w.loc": LOC, "w.scale": SCALE}, tmp_path / "p.safetensors")
    (tmp_path / "npy").mkdir()
    np.save(tmp_path / "npy" / "w.loc.npy", LOC)
    np.save(tmp_path / "npy" / "w.scale.npy", SCALE)
    (tmp_path / "vocab.txt").write_text("".join(f"w{i}\n" for i in range(8)))
    bnncompress.pack(tmp_path / "p.safetensors", tmp_path / "a.bnc", method="float16")
    leased = {
        "safetensors": tmp_path / "p.safetensors",
        "vocabulary": tmp_path / "vocab.txt",
        "archive": tmp_path / "a.bnc",
        "npy": tmp_path / "npy" / "w.loc.npy",
    }[kind]
    holder = _leased(leased)
    try:
        if kind == "archive":
            np.testing.assert_array_equal(bnncompress.load(tmp_path / "a.bnc")["w"], LOC)
        elif kind == "npy":
            np.testing.assert_array_equal(read_posterior(tmp_path / "npy").tensors["w"].loc, LOC)
        else:
            vocab = tmp_path / "vocab.txt" if kind == "vocabulary" else None
            p = read_posterior(tmp_path / "p.safetensors", vocab=vocab)
            np.testing.assert_array_equal(p.tensors["w"].loc, LOC)
    finally:
        holder.kill()
        holder.wait()


@contextlib.contextmanager
def _another_namespace(mount: Path, setup: str) -> Iterator[Path]:
    """``mount`` as a process in another mount namespace sees it (a tmpfs there, filled by the shell command
    ``setup``), through ``/proc/PID/root``; skipped where no namespace can be made."""
    if shutil.which("unshare") is None:
        pytest.skip("no unshare here")
    mount.mkdir(parents=True, exist_ok=True)
    other = subprocess.Popen(
        ["unshare", "-m", "--propagation", "private", "sh", "-c",
         f"mount -t tmpfs tmpfs {mount} && {setup} && echo ready && exec sleep 30"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )  # fmt: skip
    try:
        if other.stdout.readline().strip() != "ready":
            pytest.skip("cannot make a mount namespace here (not root?)")
        yield Path(f"/proc/{other.pid}/root") / str(mount).lstrip("/")
    finally:
        other.kill()
        other.wait()


def _posterior_source(root: Path, scale: str = "w.scale.npy", vocab: str = "vocab.txt") -> tuple[Path, Path]:
    """A .npy posterior directory to copy into another mount namespace, and where to mount it there."""
    source = root / "src"
    source.mkdir()
    np.save(source / "w.loc.npy", LOC)
    np.save(source / scale, SCALE)
    (source / vocab).write_text("".join(f"w{i}\n" for i in range(8)))
    return source, root / "mnt"


def test_a_posterior_directory_in_another_mount_namespace_is_read_through_proc_pid_root(tmp_path):
    # realpath() reads /proc/PID/root as "/", so the check compared the open file with another path
    # ("changed while it was opened (another file or link at its path now)") although nothing changed
    source, mount = _posterior_source(tmp_path)
    with _another_namespace(mount, f"cp -r {source} {mount}/post") as seen:
        if not (seen / "post" / "w.loc.npy").exists() or (mount / "post").exists():
            pytest.skip("the other namespace's files are not where expected")
        p = read_posterior(seen / "post")
        np.testing.assert_array_equal(p.tensors["w"].loc, LOC)
        assert p.vocab == [f"w{i}" for i in range(8)]


def test_a_link_out_of_a_directory_in_another_mount_namespace_is_still_refused(tmp_path):
    # there w.scale.npy is a link to a file outside the directory, here the same path is a file of its own:
    # comparing the open file with the kernel's path (not realpath's) let the outside file in (review)
    secret, mount = tmp_path / "secret.npy", tmp_path / "mnt"
    np.save(secret, np.full((8, 4), 42.0, np.float32))
    (mount / "post").mkdir(parents=True)  # our side: ordinary files
    np.save(mount / "post" / "w.loc.npy", LOC)
    np.save(mount / "post" / "w.scale.npy", SCALE)
    np.save(tmp_path / "loc.npy", LOC)
    setup = (
        f"mkdir {mount}/post && cp {tmp_path}/loc.npy {mount}/post/w.loc.npy && ln -s {secret} {mount}/post/w.scale.npy"
    )
    with _another_namespace(mount, setup) as seen:
        with pytest.raises(bnncompress.PosteriorError, match="w.scale.npy"):
            read_posterior(seen / "post")


def test_an_hdf5_checkpoint_group_linked_under_a_dozen_names_is_read(tmp_path):
    # a checkpoint's group of tensors also linked as best, ema, last ... (hard links): a group of 100 under 6 names
    # was refused as "groups linked under ever more names"; links doubling at every level still are
    # (test_source_replaced)
    rng = np.random.default_rng(0)
    names = ["best", "ema", "final", "latest", "swa", "step1000", "step2000", "step3000", "a", "b", "c"]
    with h5py.File(tmp_path / "c.h5", "w") as f:
        group = f.create_group("model")
        for i in range(40):
            group[f"t{i:03d}/loc"] = rng.normal(size=(4, 4)).astype(np.float32)
            group[f"t{i:03d}/scale"] = np.full((4, 4), 0.1, np.float32)
        for name in names:
            f[name] = group
    p = read_posterior(tmp_path / "c.h5")
    assert len(p.names) == 40 * (len(names) + 1)
    np.testing.assert_array_equal(p.tensors["ema/t007"].loc, p.tensors["model/t007"].loc)


def test_a_small_hdf5_file_whose_links_only_add_names_is_refused_quickly(tmp_path):
    # 5,000 links to one dataset in a group, the group under 64 more names (a 0.2 MB file): allowing 64 names
    # per link walked looked up 320,000 names (16 s; 3 MB of such links: 6 minutes and 1 GB) (review)
    with h5py.File(tmp_path / "n.h5", "w", libver="latest") as f:
        group = f.create_group("a")
        group["x"] = np.zeros(1, np.float32)
        for i in range(5000):
            group[f"{i:05d}"] = group["x"]
        for j in range(64):
            f[f"b{j:02d}"] = group
    with pytest.raises(bnncompress.PosteriorError, match="ever more names"):
        read_posterior(tmp_path / "n.h5")


def test_an_hdf5_file_of_links_with_long_full_names_is_refused_quickly(tmp_path):
    # every link's full name repeats its groups' names: 400 links in a group named by 64 KB build 26 MB of names
    # from a small file (a 1 MB name and 4,000 links: 18 s and 4 GB) (review)
    with h5py.File(tmp_path / "l.h5", "w", libver="latest") as f:
        group = f.create_group("x" * 65536)
        group["d"] = np.zeros(1, np.float32)
        for i in range(400):
            group[str(i)] = group["d"]
    assert (tmp_path / "l.h5").stat().st_size < 200_000
    with pytest.raises(bnncompress.PosteriorError, match="far longer than the file"):
        read_posterior(tmp_path / "l.h5")


def test_links_between_files_of_a_directory_in_another_mount_namespace_are_read_there(tmp_path):
    # through /proc/PID/root a relative link was refused as broken, and an absolute one was read on this
    # side of the namespace (another file, or none); the kernel now opens both beneath the directory
    source, mount = _posterior_source(tmp_path, scale="real-scale.npy", vocab="words.txt")
    setup = (
        f"cp -r {source} {mount}/post && ln -s real-scale.npy {mount}/post/w.scale.npy"
        f" && ln -s {mount}/post/words.txt {mount}/post/vocab.txt"
    )
    with _another_namespace(mount, setup) as seen:
        if not (seen / "post" / "w.loc.npy").exists() or (mount / "post").exists():
            pytest.skip("the other namespace's files are not where expected")
        fd = open_beneath(seen, "post", os.O_RDONLY | os.O_DIRECTORY)
        if fd is None:
            pytest.skip("no openat2 here")
        os.close(fd)
        p = read_posterior(seen / "post")
        np.testing.assert_array_equal(p.tensors["w"].scale, SCALE)
        assert p.vocab == [f"w{i}" for i in range(8)]

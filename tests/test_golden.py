"""Every archive version ever written keeps decoding to exactly the same values."""

import dataclasses
import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

import bnncompress
from bnncompress.archive import FORMAT_VERSION, READABLE_VERSIONS

from .forging import rewrite_manifest

GOLDEN = Path(__file__).parent / "golden"


def test_every_readable_version_has_a_golden_archive():
    assert set(READABLE_VERSIONS) == {int(p.stem[1:]) for p in GOLDEN.glob("v*.bnc")}
    assert FORMAT_VERSION in READABLE_VERSIONS


@pytest.mark.parametrize("archive", sorted(GOLDEN.glob("v*.bnc")), ids=lambda p: p.stem)
def test_golden_archive_decodes_to_known_values(archive):
    a = bnncompress.load(archive)
    with np.load(archive.with_name(f"{archive.stem}_expected.npz"), allow_pickle=False) as expected:
        assert a.vocab == expected["vocab"].tolist()
        assert sorted(a.names) == sorted(k for k in expected.files if k != "vocab")
        for name in a.names:
            assert a[name].dtype == expected[name].dtype
            np.testing.assert_array_equal(a[name], expected[name])


def test_a_side_array_newer_than_the_archives_version_is_refused(tmp_path):
    # the golden version 6 archive relabelled version 5, its checksum as a version 5 writer makes it (no
    # reflectors): the reader skipped the reflectors' spans and decoded without the rotation (46.8 off)
    path = tmp_path / "v5.bnc"
    shutil.copy(GOLDEN / "v6.bnc", path)
    record = bnncompress.load(path).record("word_vectors")
    without = dataclasses.replace(record, reflectors=None, reflector_scales=None)
    with h5py.File(path, "r+") as f:
        f.attrs["format_version"] = np.int64(5)
        assert json.loads(f["manifest"][()].tobytes())["tensors"][0]["sha256"] == record.checksum()

    def relabel(manifest):
        manifest["tensors"][0]["sha256"] = without.checksum()

    rewrite_manifest(path, relabel)
    with pytest.raises(bnncompress.ArchiveError, match="'reflector_scales' is not part of format version 5"):
        bnncompress.load(path)

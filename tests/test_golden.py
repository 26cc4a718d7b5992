"""Every archive version ever written keeps decoding to exactly the same values."""

from pathlib import Path

import numpy as np
import pytest

import bnncompress
from bnncompress.archive import FORMAT_VERSION, READABLE_VERSIONS

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

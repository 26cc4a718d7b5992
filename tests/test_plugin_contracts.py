"""A plug-in's contract slips are refused in one line before anything is written, and what it may do is
decoded its own way (a second plug-in hunt: side arrays its record did not store, a record kind's own
dequantize skipped by the row kernels, quality judged on values that do not decode, row classes that
differ from the blocks' classes, a random assign, a subclass of the default or of pq refused)."""

from __future__ import annotations

import dataclasses
import importlib
from typing import ClassVar

import numpy as np
import pytest

import bnncompress
from bnncompress.archive import write_archive
from bnncompress.errors import OptionError
from bnncompress.quantizers import (
    METHODS,
    FittedQuantizer,
    ProductQuantization,
    Quantizer,
    TransformVBQ,
    Uniform,
    register_quantizer,
)
from bnncompress.quantizers.uniform import FittedUniform
from bnncompress.records import Classed, register_record_kind
from bnncompress.records import base as records_base

STEP, K = 0.05, 401  # a per-column plug-in's grid: -10 .. 10 in every column


@pytest.fixture
def registered():
    """Registers plug-in classes for one test, and removes them after it."""
    names = []

    def register(cls):
        names.append(cls.name)
        return register_quantizer(cls)

    yield register
    for name in names:
        METHODS.pop(name, None)


def _posterior(rows=2000, d=16, offset=0.0, scale=0.05):
    loc = (offset + np.random.default_rng(0).normal(size=(rows, d))).astype(np.float32)
    return {"w": (loc, np.full_like(loc, scale))}, loc


class _Columns(FittedQuantizer):
    """Per-column models with a 'mean' side array; ``centred`` False forgets to take the mean off."""

    centred = True
    row_class = None  # (block classes 0: a function of the row that disagrees with them)

    def __init__(self, shape, mean):
        self.shape, self.mean = shape, mean

    def models(self, state):
        return self.shape[-1]

    def side_arrays(self):
        return {"mean": self.mean}

    def assign(self, block, state):
        columns = (np.arange(len(block.loc)) if block.positions is None else block.positions) % self.shape[-1]
        y = block.loc - self.mean[columns] if self.centred else block.loc
        return np.clip(np.rint(y / STEP) + K // 2, 0, K - 1).astype(np.int32)

    def grid(self, state):
        return np.tile(((np.arange(K) - K // 2) * STEP).astype(np.float32), self.shape[-1])

    def params(self, state):
        return {"step": STEP}

    @property
    def classes(self):
        return 2 if self.row_class else 0

    def row_classes(self, block):
        return None if self.row_class is None else self.row_class(block.first_row + np.arange(block.num_rows))

    def block_classes(self, num_blocks):
        return None if self.row_class is None else np.zeros(num_blocks, np.uint8)


def _columns_method(fitted: type[_Columns]) -> type[Quantizer]:
    class Columns(Quantizer):
        name: ClassVar[str] = "x-columns"

        def statistics(self, block):
            return block.loc.reshape(-1, block.row_size).astype(np.float64).sum(0), block.num_rows

        def fit(self, shape, stats, rows):
            return fitted(shape, (sum(s[0] for s in stats) / sum(s[1] for s in stats)).astype(np.float32))

    return Columns


def test_quality_is_judged_on_the_values_a_per_column_plugin_decodes_to(tmp_path, registered):
    # the base reconstruct gave per-column values without the mean: a right plug-in was said to be 253 sds
    # off, and one that forgot to centre (decoded 5 off, 250 sds) was not
    post, loc = _posterior(3000, 8, offset=5.0, scale=0.02)
    registered(_columns_method(_Columns))
    r = bnncompress.pack(post, tmp_path / "right.bnc", method="x-columns", lam=1.0)
    assert np.abs(bnncompress.load(r.path)["w"] - loc).max() < STEP and not r.warnings, r.warnings
    registered(_columns_method(type("Uncentred", (_Columns,), {"centred": False})))
    r = bnncompress.pack(post, tmp_path / "wrong.bnc", method="x-columns", lam=1.0)
    assert np.abs(bnncompress.load(r.path)["w"] - loc).max() > 4
    assert any("more than 100 posterior standard deviations" in w for w in r.warnings), r.warnings


def test_row_classes_that_are_not_their_blocks_classes_are_refused(tmp_path, registered):
    # rows were counted in one class's models and coded with another's: an archive that `info` read and no
    # load could decode, exit 0
    registered(_columns_method(type("Alternating", (_Columns,), {"row_class": staticmethod(lambda r: r % 2)})))
    out = tmp_path / "a.bnc"
    with pytest.raises(OptionError, match=r"'x-columns' \(a plug-in\) returned row_classes\(\) that are not"):
        bnncompress.pack(_posterior()[0], out, method="x-columns", lam=1.0)
    assert not out.exists()


class _Centred(FittedUniform):
    """Quantizes loc - 5 and returns the 5 as a 'mean' that a one-model (scalar) record does not store."""

    def __init__(self, fitted):
        self.__dict__.update(fitted.__dict__)
        self.low, self.high = fitted.low - 5.0, fitted.high - 5.0

    def assign(self, block, state):
        return super().assign(dataclasses.replace(block, loc=block.loc - np.float32(5)), state)

    def side_arrays(self):
        return {"mean": np.full(self.shape[-1], 5.0, np.float32)}


class _Random(FittedUniform):
    def assign(self, block, state):  # stochastic rounding: the coding pass assigns other symbols than it counted
        noise = np.random.default_rng().uniform(-0.2, 0.2, len(block.loc)).astype(np.float32)
        return super().assign(dataclasses.replace(block, loc=block.loc + noise), state)


@pytest.mark.parametrize(
    "fitted, message",
    [
        (_Centred, "returned side array\\(s\\) mean that its tensor's record \\(scalar\\) does not store"),
        (_Random, "returned other indices from assign\\(\\) for the same block and lambda"),
    ],
)
def test_a_plugin_whose_archive_would_decode_otherwise_is_refused(tmp_path, registered, fitted, message):
    # the mean was dropped (decoded 5 off, exit 0); random indices made an archive no load could decode
    @registered
    class Wrapping(Uniform):
        name: ClassVar[str] = "x-wrapping"

        def fit(self, shape, stats, rows):
            fit = super().fit(shape, stats, rows)
            return fitted(fit) if fitted is _Centred else _as(fit, fitted)

    out = tmp_path / "keep.bnc"
    out.write_bytes(b"the user's file")
    with pytest.raises(OptionError, match=message):
        bnncompress.pack(_posterior(offset=5.0)[0], out, method="x-wrapping", lam=0.5)
    assert out.read_bytes() == b"the user's file"


def _as(fit, cls):
    fit.__class__ = cls
    return fit


class _PlusOne(Classed):
    """A record kind deriving from the classed one that decodes its own way (values + 1)."""

    name, mark, version = "x-plus-one", "x_plus_one", 4

    def dequantize(self, record, symbols):
        return super().dequantize(record, symbols) + np.float32(1)


def test_a_record_kind_deriving_from_a_packages_decodes_by_its_own_dequantize(tmp_path, monkeypatch):
    # the row kernels decoded it with the inherited value table: +1 or +0 depending on whether they were loaded
    for registry in ("KINDS", "_BY_MARK", "_SIDE_ARRAYS", "_SIDE_KINDS"):  # (registered for this test only)
        monkeypatch.setattr(records_base, registry, dict(getattr(records_base, registry)))
    register_record_kind(_PlusOne)
    post, loc = _posterior(3000, 16)
    source = bnncompress.load(bnncompress.pack(post, tmp_path / "c.bnc", lam=0.3).path)
    record = source.record("w")
    assert record.kind.name == "classed"
    marks = dict(record.marks)
    mine = dataclasses.replace(record, marks=marks, x_plus_one=marks.pop("classes"))
    write_archive(tmp_path / "plus.bnc", [mine], None, "test", "0")
    importlib.import_module("bnncompress._rows_kernels")  # (loaded: the path that skipped dequantize)
    a = bnncompress.load(tmp_path / "plus.bnc")
    np.testing.assert_array_equal(a["w"], source["w"] + np.float32(1))
    np.testing.assert_array_equal(a.rows("w", [0, 1, 2999]), source["w"][[0, 1, 2999]] + np.float32(1))
    assert isinstance(records_base.KINDS["x-plus-one"], _PlusOne)


@pytest.mark.parametrize("base", [TransformVBQ, ProductQuantization])
def test_a_plugin_deriving_from_a_package_method_packs_as_that_method(tmp_path, registered, base):
    # a do-nothing subclass of the default was refused where a tensor fell back to one model ('fallback' is a
    # reserved param), and one of pq by the check of one index per weight
    registered(type("Derived", (base,), {"name": "x-derived"}))
    rng = np.random.default_rng(0)
    post = {name: (rng.normal(size=shape), np.full(shape, 0.05)) for name, shape in [("a", (300, 40)), ("b", (40,))]}
    mine = bnncompress.pack(post, tmp_path / "x.bnc", method="x-derived", lam=1.0)
    theirs = bnncompress.pack(post, tmp_path / "p.bnc", method=base.name, lam=1.0)
    assert mine.payload_bytes == theirs.payload_bytes
    for name in post:
        np.testing.assert_array_equal(bnncompress.load(mine.path)[name], bnncompress.load(theirs.path)[name])


def test_a_plugins_params_and_options_cannot_rebuild_another_method(tmp_path, registered):
    # params() naming 'method' or an option: from_config(record) rebuilt uniform, or coarse=7 for coarse=3;
    # an option JSON cannot store failed after the whole pack with a TypeError
    extra: dict = {}

    @registered
    @dataclasses.dataclass(frozen=True)
    class Coarse(Uniform):
        name: ClassVar[str] = "x-coarse"
        coarse: float = 3.0

        def fit(self, shape, stats, rows):
            return _as(super().fit(shape, stats, rows), _Extra)

    class _Extra(FittedUniform):
        def params(self, state):
            return {**super().params(state), **extra}

    post = _posterior()[0]
    for params, message in (({"method": "uniform"}, "'method', a name the archive reads"), ({"coarse": 7}, "option")):
        extra.update(params)
        with pytest.raises(OptionError, match=message):
            bnncompress.pack(post, tmp_path / "c.bnc", method="x-coarse", lam=1.0)
        extra.clear()
    with pytest.raises(OptionError, match="an option JSON cannot store"):
        bnncompress.pack(post, tmp_path / "c.bnc", method="x-coarse", lam=1.0, options={"coarse": np.float32(2)})
    with pytest.raises(ValueError, match="cannot be named 'method'"):
        register_quantizer(
            dataclasses.make_dataclass(
                "Named", [("method", str, "x")], bases=(Uniform,), frozen=True, namespace={"name": "x-named"}
            )
        )


def test_a_plugins_own_exception_is_one_line_naming_it(tmp_path, registered):
    @registered
    class Broken(Uniform):
        name: ClassVar[str] = "x-broken"

        def fit(self, shape, stats, rows):
            raise RuntimeError("plugin failed\nsecond line")

    with pytest.raises(OptionError, match=r"method 'x-broken' \(a plug-in\) failed: RuntimeError: plugin failed; fix"):
        bnncompress.pack(_posterior()[0], tmp_path / "b.bnc", method="x-broken", lam=1.0)

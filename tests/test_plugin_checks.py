"""What a method from outside the package returns is checked before it reaches a kernel or an archive
(a plug-in hunt): indices outside its grid, params named as the archive's own fields, values JSON
cannot store, side arrays their stored type cannot hold; a reader refuses a record field it does not know."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import numpy as np
import pytest

import bnncompress
from bnncompress.errors import ArchiveError, OptionError
from bnncompress.quantizers import METHODS, Uniform, register_quantizer
from bnncompress.quantizers.uniform import FittedUniform

from .forging import rewrite_manifest


def _posterior():
    loc = np.random.default_rng(0).normal(size=(64, 8)).astype(np.float32)
    return {"w": (loc, np.full_like(loc, 0.1))}


def test_a_record_field_this_reader_does_not_know_is_refused(tmp_path):
    """A plug-in's record kind (marked 'halved') was read as the scalar grid: values doubled, exit 0."""
    path = bnncompress.pack(_posterior(), tmp_path / "a.bnc", method="uniform", lam=1.0).path

    def edit(manifest):
        manifest["tensors"][0]["halved"] = True

    rewrite_manifest(path, edit)
    with pytest.raises(ArchiveError, match="field 'halved' is not one this bnncompress knows"):
        bnncompress.load(path)


def test_an_option_cannot_take_a_name_the_archive_reads():
    """An option 'support' was stored in the record's params and applied on load as a Pyro constraint."""
    with pytest.raises(ValueError, match="cannot be named 'support'"):

        @register_quantizer
        @dataclasses.dataclass(frozen=True)
        class Clipped(Uniform):
            name: ClassVar[str] = "x-clipped"
            support: float = 3.0

    assert "x-clipped" not in METHODS


def _uniform_fitted_as(method: str, fitted_class: type) -> None:
    """Register plug-in ``method``: uniform, its fit made a ``fitted_class`` (the test pops it from METHODS)."""

    @register_quantizer
    class Plugin(Uniform):
        name: ClassVar[str] = method

        def fit(self, shape, stats, rows):
            fitted = super().fit(shape, stats, rows)
            fitted.__class__ = fitted_class
            return fitted


class _Bad(FittedUniform):
    mode = ""

    def assign(self, block, state):
        indices = super().assign(block, state)
        if self.mode == "outside":
            indices = indices + len(self.grid(state))  # the count kernel wrote past its table
        if self.mode == "float":
            indices = indices.astype(np.float64)
        return indices

    def params(self, state) -> dict[str, Any]:
        extra = {"support": {"constraint": "positive"}} if self.mode == "support" else {}
        extra |= {"scale": np.float32(1)} if self.mode == "numpy" else {}
        return {**super().params(state), **extra}

    def side_arrays(self):
        return {"mean": np.full(8, 0.1, np.float64)} if self.mode == "mean" else {}


@pytest.mark.parametrize(
    "mode, message",
    [
        ("outside", "returned from assign"),
        ("float", "returned from assign"),
        ("support", "with 'support', a name the archive reads"),
        ("numpy", "that JSON cannot store"),
        ("mean", "side array 'mean' with values its stored type float32 cannot hold exactly"),
    ],
)
def test_a_plugins_output_is_checked_before_it_is_written(tmp_path, mode, message):
    _uniform_fitted_as("x-bad", type("Bad", (_Bad,), {"mode": mode}))

    out = tmp_path / "keep.bnc"
    out.write_bytes(b"the user's file")
    try:
        with pytest.raises(OptionError, match=rf"method 'x-bad' \(a plug-in\) .*{message}"):
            bnncompress.pack(_posterior(), out, method="x-bad", lam=1.0)
    finally:
        METHODS.pop("x-bad")
    assert out.read_bytes() == b"the user's file"


def test_a_class_defined_again_registers_again():
    """importlib.reload or a notebook cell run twice raised 'already registered'."""
    for _ in range(2):

        @register_quantizer
        class Again(Uniform):
            name: ClassVar[str] = "x-again"

    assert METHODS.pop("x-again") is Again


class NamedOtherwise(Uniform):  # an entry point's class whose method name is not the entry point's
    name: ClassVar[str] = "x-other-name"


@pytest.mark.parametrize(
    "value, message",
    [
        ("no_such_module_here:Method", "cannot be loaded \\(ModuleNotFoundError"),
        ("tests.test_plugin_checks:NamedOtherwise", "names a class whose method name is 'x-other-name'"),
    ],
)
def test_an_entry_point_that_does_not_give_its_method_is_one_line(monkeypatch, value, message):
    import importlib.metadata

    from bnncompress.quantizers import get_quantizer, registry

    entry = importlib.metadata.EntryPoint(name="x-entry", value=value, group=registry.ENTRY_POINT_GROUP)
    monkeypatch.setattr(registry.metadata, "entry_points", lambda group=None, **kw: [entry])
    with pytest.raises(OptionError, match=f"entry point 'x-entry' \\({value}\\) {message}"):
        get_quantizer("x-entry")
    assert "x-entry" not in METHODS and "x-other-name" not in METHODS


def test_an_invalid_archive_is_not_written_and_not_called_damaged(tmp_path):
    """A method's NaN grid was refused as 'dataset grid holds NaN...; the archive is damaged' while the file at
    the path, the user's, was intact: the message blamed the file."""

    class NanGrid(FittedUniform):
        def grid(self, state):
            return np.full_like(super().grid(state), np.nan)

    _uniform_fitted_as("x-nan", NanGrid)

    out = tmp_path / "keep.bnc"
    out.write_bytes(b"the user's file")
    try:
        with pytest.raises(ArchiveError, match="nothing written: the archive made for it is invalid") as caught:
            bnncompress.pack(_posterior(), out, method="x-nan", lam=1.0)
    finally:
        METHODS.pop("x-nan")
    assert "damaged" not in str(caught.value) and out.read_bytes() == b"the user's file"


def test_a_plugin_subclassing_the_transform_writes_the_same_record(tmp_path):
    """The checked fit hid the transform's class values: a plug-in deriving from it wrote another record kind."""
    from bnncompress.quantizers.transform import TransformVBQ

    @register_quantizer
    @dataclasses.dataclass(frozen=True, eq=False, repr=False)
    class Mine(TransformVBQ):
        name: ClassVar[str] = "x-transform"

    rng = np.random.default_rng(0)
    loc = rng.normal(size=(20000, 16)) * np.linspace(1, 0.1, 20000)[:, None]
    posterior = {"w": (loc, np.exp(rng.normal(-2, 0.3, size=loc.shape)) * np.linspace(0.2, 1, 20000)[:, None])}
    try:
        made = {
            m: bnncompress.pack(posterior, tmp_path / f"{m}.bnc", method=m, lam=0.1, options={"classes": 8}).path
            for m in ("vbq-transform", "x-transform")
        }
    finally:
        METHODS.pop("x-transform")
    own, plugin = (bnncompress.load(made[m]) for m in ("vbq-transform", "x-transform"))
    assert own.record("w").marks == plugin.record("w").marks and "class_values" in own.record("w").marks
    assert np.array_equal(own["w"], plugin["w"])

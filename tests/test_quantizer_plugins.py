"""Quantizers as plug-ins: a registry filled where methods are defined, configs that round-trip,
fitted state as named values, one in-memory driver (the pipeline's job), named quality checks."""

import dataclasses
import importlib.metadata
import subprocess
import sys
from typing import ClassVar

import numpy as np
import pytest

import bnncompress
from bnncompress.inmemory import InMemoryFit, fit_in_memory
from bnncompress.posterior import TensorPosterior
from bnncompress.quantizers import (
    DEFAULT_METHOD,
    METHODS,
    Uniform,
    from_config,
    get_config,
    get_quantizer,
    register_quantizer,
    registry,
)
from bnncompress.quantizers.entropy_constrained import EmpiricalPass, VBQPass
from bnncompress.quantizers.pq import PQState
from bnncompress.quantizers.transform import ColumnValues, SeedGrid
from bnncompress.tasks import CHECKED, Quality
from bnncompress.tensorjob import TensorJob

#: Options other than every default, for every method of the package.
NON_DEFAULT = {
    "vbq-transform": {
        "transform": "pca",
        "trust": 0.5,
        "row_weight": 1.0,
        "iterations": 2,
        "centroids": False,
        "step": 0.7,
    },
    "vbq-direction": {
        "trust": 0.5,
        "row_weight": 0.25,
        "iterations": 1,
        "centroids": False,
        "max_level": 8,
        "cap": 2.0,
    },
    "vbq": {"max_level": 7},
    "vbq-empirical": {"trust": 0.9, "row_weight": 0.5, "iterations": 4, "centroids": True, "max_level": 9, "cap": 1.5},
    "uniform": {},
    "kmeans": {"prune": 0.2},
    "weighted-kmeans": {"prune": 0.3},
    "pq": {"seed": 7},
    "float16": {},
}


@pytest.fixture
def plugin():
    """A method defined outside the package, registered for one test."""

    @register_quantizer
    class Coarse(Uniform):
        name: ClassVar[str] = "x"
        default_lam: ClassVar[float] = 0.5

    yield Coarse
    METHODS.pop("x")


def test_every_method_module_registers_itself_and_the_listing_is_unchanged():
    listed = "vbq-transform vbq-direction vbq vbq-empirical uniform kmeans weighted-kmeans pq float16"
    assert list(METHODS) == listed.split()
    assert DEFAULT_METHOD == "vbq-transform" and set(NON_DEFAULT) == set(METHODS)
    source = open(registry.__file__.replace("registry.py", "__init__.py")).read()
    assert "register_quantizer(" not in source  # no registration tuple: each module decorates its class


def test_a_method_defined_outside_the_package_packs_and_decodes_in_a_process_that_never_saw_it(tmp_path, plugin):
    rng = np.random.default_rng(0)
    loc = rng.normal(size=(64, 8)).astype(np.float32)
    r = bnncompress.pack({"w": (loc, np.full_like(loc, 0.1))}, tmp_path / "x.bnc", method="x")
    expected = bnncompress.load(r.path)["w"]
    assert bnncompress.load(r.path).record("w").method == "x" and len(np.unique(expected)) > 1
    np.save(tmp_path / "expected.npy", expected)
    code = (
        "import sys, numpy as np, bnncompress\n"
        "from bnncompress.quantizers import METHODS\n"
        "assert 'x' not in METHODS\n"
        f"got = bnncompress.load({str(r.path)!r})['w']\n"
        f"np.testing.assert_array_equal(got, np.load({str(tmp_path / 'expected.npy')!r}))\n"
        "print('decoded', 'x' in METHODS)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.split() == ["decoded", "False"], done.stdout + done.stderr


def test_a_registered_name_cannot_be_taken_by_another_class(plugin):
    with pytest.raises(ValueError, match="already registered"):

        @register_quantizer
        class Other(Uniform):
            name: ClassVar[str] = "x"


def test_a_method_named_by_an_entry_point_is_loaded_when_first_asked_for(monkeypatch):
    entry = importlib.metadata.EntryPoint(
        name="x-entry", value="tests.test_quantizer_plugins:EntryPointMethod", group=registry.ENTRY_POINT_GROUP
    )
    monkeypatch.setattr(
        registry.metadata, "entry_points", lambda group=None, **kw: [entry] if group == entry.group else []
    )
    try:
        assert type(get_quantizer("x-entry")).__name__ == "EntryPointMethod" and "x-entry" in METHODS
    finally:
        METHODS.pop("x-entry", None)
    with pytest.raises(bnncompress.OptionError, match="unknown method 'nope'"):
        get_quantizer("nope")


class EntryPointMethod(Uniform):  # not registered here: the entry point names it
    name: ClassVar[str] = "x-entry"


@pytest.mark.parametrize("method", list(NON_DEFAULT))
def test_every_method_rebuilds_from_its_config_with_non_default_options(method):
    q = get_quantizer(method, **NON_DEFAULT[method])
    assert from_config(get_config(q)) == q
    assert q.options() == {**get_quantizer(method).options(), **NON_DEFAULT[method]}  # every option was changed
    if NON_DEFAULT[method]:
        assert q != get_quantizer(method) and get_quantizer(method) == get_quantizer(method)
        assert all(f"{k}={v!r}" in repr(q) for k, v in NON_DEFAULT[method].items()), repr(q)
        assert len({q, from_config(get_config(q)), get_quantizer(method)}) == 2  # equal configs hash alike


def test_configs_of_different_methods_or_devices():
    assert get_quantizer("kmeans") != get_quantizer("weighted-kmeans")  # same options, another method
    assert get_quantizer("vbq", device="cpu") == get_quantizer("vbq", device="auto")  # where it runs is no option
    assert repr(get_quantizer("vbq", device="cpu")) == "VBQ(max_level=10)"
    with pytest.raises(dataclasses.FrozenInstanceError):
        get_quantizer("kmeans").prune = 0.5  # type: ignore[misc]


@pytest.mark.parametrize("method", ["vbq-direction", "kmeans", "pq", "vbq-transform"])
def test_an_archive_record_rebuilds_its_method_with_non_default_options(tmp_path, method):
    rng = np.random.default_rng(1)
    loc = (rng.normal(size=(2000, 4)) @ rng.normal(size=(4, 4))).astype(np.float32)
    options = NON_DEFAULT[method]
    bnncompress.pack({"w": (loc, np.full_like(loc, 0.1))}, tmp_path / "m.bnc", method=method, options=options)
    record = bnncompress.load(tmp_path / "m.bnc").record("w")
    assert from_config({"method": record.method, **record.params}) == get_quantizer(method, **options)


def test_default_pq_seed_is_not_stored_and_fallback_records_keep_their_parameters(tmp_path):
    rng = np.random.default_rng(2)
    posterior = {"w": (rng.normal(size=(300, 4)), np.full((300, 4), 0.1)), "b": (rng.normal(size=3000), np.ones(3000))}
    for options, seed in (({}, None), ({"seed": 7}, 7)):
        bnncompress.pack(posterior, tmp_path / "p.bnc", method="pq", options=options)
        a = bnncompress.load(tmp_path / "p.bnc")
        assert a.record("w").params.get("seed") == seed and {"subvectors", "nbits"} <= set(a.record("w").params)
        assert set(a.record("b").params) == {"prune", "importance", "fallback", "lam"}  # as archives always had
    bnncompress.pack(posterior, tmp_path / "t.bnc", method="vbq-transform")
    params = bnncompress.load(tmp_path / "t.bnc").record("b").params
    assert params["fallback"] == "one model" and params["max_level"] == 10 and "cap" not in params


def test_fitted_states_are_named_values():
    rng = np.random.default_rng(3)
    loc = (rng.normal(size=(4000, 4)) @ rng.normal(size=(4, 4))).astype(np.float32)
    t = TensorPosterior(loc, np.full_like(loc, 0.1))
    direction = fit_in_memory(get_quantizer("vbq-direction", device="cpu", iterations=0), t)
    assert isinstance(direction.state(0.5), VBQPass)
    assert isinstance(fit_in_memory(get_quantizer("vbq-direction", device="cpu"), t).state(0.5), EmpiricalPass)
    assert isinstance(fit_in_memory(get_quantizer("vbq-transform", iterations=0), t).state(0.1), SeedGrid)
    assert isinstance(fit_in_memory(get_quantizer("vbq-transform"), t).state(0.1), ColumnValues)
    pq = fit_in_memory(get_quantizer("pq"), t).state(2.0)
    assert isinstance(pq, PQState) and pq.codebooks.shape == (pq.subvectors, 1 << pq.nbits, 4 // pq.subvectors)
    assert not any(hasattr(f, "options") for f in (direction.fitted, fit_in_memory(get_quantizer("pq"), t).fitted))


def test_the_in_memory_fit_is_the_pipelines_job_and_codes_the_same_values(tmp_path):
    rng = np.random.default_rng(4)
    loc = rng.normal(size=(3000, 5)).astype(np.float32)
    scale = rng.uniform(0.05, 1.0, size=loc.shape).astype(np.float32)
    for method in ("vbq", "vbq-transform", "pq"):
        fit = fit_in_memory(get_quantizer(method), TensorPosterior(loc, scale))
        assert isinstance(fit, InMemoryFit) and isinstance(fit, TensorJob)
        r = bnncompress.pack({"w": (loc, scale)}, tmp_path / "m.bnc", method=method, lam=fit.quantizer.default_lam)
        archive = bnncompress.load(r.path)
        quantized = fit.quantize(fit.quantizer.default_lam)
        np.testing.assert_array_equal(quantized.values().reshape(loc.shape), archive["w"])
        assert quantized.params == archive.record("w").params


def test_quality_is_named_from_the_numba_pass():
    checked = Quality.accumulator()
    assert len(checked) == len(CHECKED) and checked.dtype == np.float64
    checked[:] = [-1.5, 2.0, -3.0, 4.0, 5, 6, 0.25, 7, 120.0]
    q = Quality.from_checks(checked, np.zeros(0, np.uint64), np.zeros(0, np.uint64))
    assert (q.values_min, q.values_max, q.loc_min, q.loc_max) == (-1.5, 2.0, -3.0, 4.0)
    assert (q.flat_rows, q.certain_missed, q.largest_error) == (5, 6, 0.25) and isinstance(q.flat_rows, int)
    assert (q.far_weights, q.farthest_sds) == (7, 120.0) and isinstance(q.far_weights, int)


def test_the_cli_packs_with_a_method_an_entry_point_names(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from bnncompress.cli import app

    entry = importlib.metadata.EntryPoint(
        name="x-entry", value="tests.test_quantizer_plugins:EntryPointMethod", group=registry.ENTRY_POINT_GROUP
    )
    monkeypatch.setattr(
        registry.metadata, "entry_points", lambda group=None, **kw: [entry] if group == entry.group else []
    )
    loc = np.random.default_rng(0).normal(size=(64, 8)).astype(np.float32)
    np.savez(tmp_path / "p.npz", **{"w.loc": loc, "w.scale": np.full_like(loc, 0.1)})
    source, out = str(tmp_path / "p.npz"), str(tmp_path / "p.bnc")
    try:  # --method's choices were fixed when the CLI was imported: a plug-in's name was 'Invalid value'
        done = CliRunner().invoke(app, ["pack", source, "-o", out, "--method", "x-entry", "--bits", "2", "-q"])
        METHODS.pop("x-entry", None)
        with pytest.raises(bnncompress.OptionError, match="at least one method and one rate"):  # (the name is good)
            bnncompress.sweep(source, ["x-entry"], [])
    finally:
        METHODS.pop("x-entry", None)
    assert done.exit_code == 0, done.output
    assert bnncompress.load(out).record("w").method == "x-entry"
    done = CliRunner().invoke(app, ["pack", source, "-o", out, "--force", "--method", "nope"])
    assert done.exit_code == 2 and "unknown method 'nope'" in done.output

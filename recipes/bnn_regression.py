"""A Bayesian regression MLP back in its Pyro model: quality of every method at equal file rate.

Measures what issue 18 reports, on synthetic data made here (fixed seed): y is a sin / tanh mix
of 8 inputs plus noise, 1,000 training and 500 test points.

1. A PyroModule MLP 8-64-64-1 (tanh; N(0, 1) priors on every weight and bias; observation noise
   ``sigma ~ LogNormal(-1, 1)``), an AutoNormal guide and SVI (Adam, Trace_ELBO).
2. The posterior mean's predictions: the model conditioned on every site's posterior median
   (``guide.median()``, constrained) with ``pyro.poutine.condition``.
3. Every method at every target rate: ``bnncompress.pack(guide, ...)`` (the live guide), then
   the model conditioned on the decoded values. Reported: file bits per weight (the whole
   archive's bytes x 8 / weights), the RMSE between these predictions and the posterior mean's,
   the test RMSE against the data, and ``sigma`` as the archive returns it next to its posterior
   median. Archives may hold constrained sites unconstrained (issue 18): a site whose support is
   not the real line is mapped with ``biject_to(support)`` when the value returned is nearer the
   median that way (column "sigma space": ``unconstrained`` = the archive returned the
   unconstrained value, ``constrained`` = it returned the median's space itself).
4. A 1-32-1 network at 4 bits: distinct values among the 32 first-layer weights after decoding,
   and the largest ``|decoded - loc| / scale`` there, per method.

The methods are compared at equal *file* rate too: log RMSE is interpolated linearly in file
bits per weight between each method's measured rates (never extrapolated):

    python recipes/bnn_regression.py            # 600 SVI steps -> recipes/work/bnn_regression/results.{md,csv}
    python recipes/bnn_regression.py --quick    # < 1 min: fewer steps
"""

from __future__ import annotations

import argparse
import csv
import math
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from pyro.infer import SVI, Trace_ELBO
from pyro.infer.autoguide import AutoNormal
from pyro.nn import PyroModule, PyroSample
from pyro.poutine.util import site_is_subsample
from recipe_args import check_results, directory, methods, positive_int, rates, seed, write_result
from recipe_args import run as run_recipe
from torch.distributions import biject_to

import bnncompress
from bnncompress.errors import RateControlError
from bnncompress.files import atomic_output
from bnncompress.quantizers import DEFAULT_METHOD, METHODS

TARGETS = (1.0, 1.5, 2.0, 3.0, 4.0)
EQUAL_RATES = (2.0, 4.0)
SEED = 0


def make_data(n_train: int = 1000, n_test: int = 500, inputs: int = 8, noise: float = 0.1, seed: int = SEED):
    """x ~ N(0, I); y = a sin / tanh mix of the inputs + N(0, noise²), standardized by the training set."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n_train + n_test, inputs, generator=g)
    c = [x[:, i % inputs] for i in range(8)]
    f = (
        torch.sin(1.5 * c[0])
        + 0.8 * torch.tanh(c[1] * c[2])
        + 0.5 * torch.sin(c[3] + c[4])
        + 0.4 * torch.tanh(2.0 * c[5]) * c[6]
        + 0.3 * torch.sin(2.0 * c[7])
    )
    y = f + noise * torch.randn(n_train + n_test, generator=g)
    mu, sd = y[:n_train].mean(), y[:n_train].std()
    y = (y - mu) / sd
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


def bayesian_linear(n_in: int, n_out: int) -> PyroModule:
    layer = PyroModule[torch.nn.Linear](n_in, n_out)
    layer.weight = PyroSample(dist.Normal(0.0, 1.0).expand([n_out, n_in]).to_event(2))
    layer.bias = PyroSample(dist.Normal(0.0, 1.0).expand([n_out]).to_event(1))
    return layer


class BayesianMLP(PyroModule):
    """tanh MLP with N(0, 1) priors on every weight and bias; Gaussian likelihood with sigma ~ LogNormal(-1, 1).
    Sites: ``fc1.weight``, ``fc1.bias``, ..., ``sigma``, ``obs``. Returns the predicted mean."""

    def __init__(self, sizes: tuple[int, ...]):
        super().__init__()
        self.depth = len(sizes) - 1
        for i in range(self.depth):
            setattr(self, f"fc{i + 1}", bayesian_linear(sizes[i], sizes[i + 1]))

    def forward(self, x, y=None):
        h = x
        for i in range(self.depth):
            h = getattr(self, f"fc{i + 1}")(h)
            if i < self.depth - 1:
                h = torch.tanh(h)
        mean = h.squeeze(-1)
        sigma = pyro.sample("sigma", dist.LogNormal(-1.0, 1.0))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("obs", dist.Normal(mean, sigma), obs=y)
        return mean


def train(sizes: tuple[int, ...], x, y, steps: int, seed: int = SEED, lr: float = 0.01):
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    model = BayesianMLP(sizes)
    guide = AutoNormal(model, init_scale=0.01)
    svi = SVI(model, guide, pyro.optim.Adam({"lr": lr}), Trace_ELBO())
    loss = float("nan")
    for _ in range(steps):
        loss = svi.step(x, y)
    return model, guide, loss / len(x)


def supports(model, x, y) -> dict[str, constraints.Constraint]:
    """Every latent site's support, from one trace of the model."""
    trace = pyro.poutine.trace(model).get_trace(x, y)
    return {
        name: site["fn"].support
        for name, site in trace.nodes.items()
        if site["type"] == "sample" and not site["is_observed"] and not site_is_subsample(site)
    }


def is_real(support: constraints.Constraint) -> bool:
    while isinstance(support, constraints.independent):
        support = support.base_constraint
    return support is constraints.real


@torch.no_grad()
def predict(model, values: dict[str, torch.Tensor], x) -> torch.Tensor:
    """The model's mean prediction with every latent site fixed at ``values``."""
    return pyro.poutine.condition(model, data=values)(x)


def rms(a: torch.Tensor) -> float:
    return float(torch.sqrt(torch.mean(a**2)))


def rmse(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.sqrt(torch.mean((a - b) ** 2)))


def decoded_sites(archive, sups, medians) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The archive's values as model sites (constrained), and for each non-real site the space the
    archive returned it in: ``unconstrained`` (mapped here with biject_to) or ``constrained``."""
    values, spaces = {}, {}
    for name, support in sups.items():
        raw = torch.as_tensor(np.array(archive[name]), dtype=torch.float32).reshape(medians[name].shape)
        if is_real(support):
            values[name] = raw
            continue
        mapped = biject_to(support)(raw)
        as_is_ok = bool(torch.all(support.check(raw)))
        median = medians[name]
        if as_is_ok and float(torch.max(torch.abs(raw - median))) <= float(torch.max(torch.abs(mapped - median))):
            values[name], spaces[name] = raw, "constrained"
        else:
            values[name], spaces[name] = mapped, "unconstrained"
    return values, spaces


def interpolate(points: list[tuple[float, float]], rate: float) -> float:
    """RMSE at file ``rate`` by linear interpolation of log RMSE between measured rates; NaN outside them."""
    pts = sorted(points)
    for (r0, e0), (r1, e1) in zip(pts, pts[1:]):
        if r0 <= rate <= r1 and e0 > 0 and e1 > 0:
            t = 0.0 if r1 == r0 else (rate - r0) / (r1 - r0)
            return math.exp((1 - t) * math.log(e0) + t * math.log(e1))
    return float("nan")


def per_tensor(archive, guide, sups, spaces, alone: dict[str, float]) -> list[dict]:
    """Per tensor: method record, payload bits per weight, the decoded error in posterior standard
    deviations (RMS of (decoded - loc) / scale, unconstrained) and relative to the means' RMS, and
    ``alone[name]``: the predictions' RMSE from the posterior mean's with only this tensor decoded."""
    info = {t["name"]: t for t in archive.info()["tensors"]}
    rows = []
    for name, t in info.items():
        loc, scale = (v.detach().reshape(-1) for v in guide._get_loc_and_scale(name))
        raw = torch.as_tensor(np.array(archive[name]), dtype=torch.float32).reshape(-1)
        if spaces.get(name) == "constrained":  # compare where the guide's loc lives: unconstrained
            raw = biject_to(sups[name]).inv(raw)
        rec = archive.record(name)
        fallback = getattr(rec, "params", {}).get("fallback", "") if hasattr(rec, "params") else ""
        rows.append(
            {
                "tensor": name,
                "weights": t["num_weights"],
                "record": t["method"] + (f" ({fallback})" if fallback else ""),
                "payload_bits": t["payload_bits_per_weight"],
                "z_rms": float(torch.sqrt(torch.mean(((raw - loc) / scale) ** 2))),
                "alone_rmse": alone[name],
                "rel_rms": rms(raw - loc) / max(rms(loc), 1e-30),
                "table_bytes": t["table_bytes"],
                "loc_rms": rms(loc),
                "median_scale": float(scale.median()),
                "distinct": int(np.unique(np.array(archive[name])).size),
            }
        )
    return rows


class _Help(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    pass


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=_Help)
    parser.add_argument(
        "--steps",
        type=positive_int,
        default=None,
        help="SVI steps of the 8-H-H-1 network (default 600; 200 with --quick)%(default).0s",
    )
    parser.add_argument("--quick", action="store_true", help="200 SVI steps (600 for the 1-H-1 network)")
    parser.add_argument("--hidden", type=positive_int, default=64, help="width of the 8-H-H-1 network")
    parser.add_argument("--small-hidden", type=positive_int, default=32, help="width of the 1-H-1 network")
    parser.add_argument(
        "--small-steps",
        type=positive_int,
        default=None,
        help="SVI steps of the 1-H-1 network (lr 0.03; default 1500; 600 with --quick)%(default).0s",
    )
    parser.add_argument("--train", type=positive_int, default=1000, help="training points")
    parser.add_argument("--seed", type=seed, default=SEED, help="SVI seed of the 8-H-H-1 network (data: always 0)")
    parser.add_argument("--test", type=positive_int, default=500, help="test points")
    parser.add_argument(
        "--bits", type=rates, default=",".join(f"{b:g}" for b in TARGETS), help="target payload bits/weight"
    )
    parser.add_argument(
        "--methods", type=methods, default=f"{DEFAULT_METHOD},uniform,vbq", help="comma-separated methods (not float16)"
    )
    parser.add_argument("--per-tensor-bits", type=float, default=2.0, help="target of the per-tensor table")
    parser.add_argument(
        "--out",
        type=directory,
        default=str(Path(__file__).parent / "work" / "bnn_regression"),
        help="folder for results.md/.csv",
    )
    parser.add_argument("--force", action="store_true", help="replace results.md/.csv if they exist")
    args = parser.parse_args(argv)
    if args.steps is None:  # --quick keeps what was given, in any spelling (--steps=300, --step 300)
        args.steps = 200 if args.quick else 600
    if args.small_steps is None:
        args.small_steps = 600 if args.quick else 1500
    fixed = [m for m in args.methods if METHODS[m].fixed_rate]
    if fixed:
        parser.error(f"--methods: {fixed[0]!r} has no rate knob")
    if args.per_tensor_bits not in args.bits:  # (its table was a header without rows)
        parser.error(f"--per-tensor-bits {args.per_tensor_bits:g} is not one of --bits")
    return args


def table(header: list[str], rows: list[list]) -> list[str]:
    def fmt(v):
        if isinstance(v, float):
            return "n/a" if math.isnan(v) else f"{v:.4g}" if abs(v) < 1e4 else f"{v:.3e}"
        return str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]


def main(argv: list[str] | None = None) -> dict:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # these small matrices: more threads only contend on a shared machine
    try:
        return run(parse(argv))
    finally:
        torch.set_num_threads(threads)


def run(args: argparse.Namespace) -> dict:
    methods, targets = args.methods, args.bits
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    check_results([out / "results.md", out / "results.csv"], args.force)  # before minutes of training
    start = time.time()

    # --- 1-3: the 8-H-H-1 regression net
    xtr, ytr, xte, yte = make_data(args.train, args.test)
    sizes = (8, args.hidden, args.hidden, 1)
    model, guide, loss = train(sizes, xtr, ytr, args.steps, seed=args.seed)
    sups = supports(model, xtr, ytr)
    medians = {k: v.detach() for k, v in guide.median().items()}
    base = predict(model, medians, xte)
    base_test = rmse(base, yte)
    n_weights = sum(medians[k].numel() for k in sups)
    print(
        f"8-{args.hidden}-{args.hidden}-1: {n_weights:,} weights, {args.steps} steps, ELBO loss/point {loss:.3f}, "
        f"posterior-mean test RMSE {base_test:.4f}, sigma median {float(medians['sigma']):.4f} "
        f"({time.time() - start:.0f} s)"
    )

    rows: list[dict] = []
    tensor_rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        for method in methods:
            for bits in targets:
                path = Path(tmp) / f"{method}-{bits:g}.bnc"
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    try:
                        result = bnncompress.pack(guide, path, bits=bits, method=method)
                    except RateControlError as exc:  # a target this small posterior cannot reach
                        print(f"{method:>14} {bits:g}: skipped ({exc})")
                        continue
                archive = bnncompress.load(path)
                values, spaces = decoded_sites(archive, sups, medians)
                pred = predict(model, values, xte)
                total = archive.info()["total"]
                rows.append(
                    {
                        "method": method,
                        "target_bits": bits,
                        "payload_bits": result.payload_bits_per_weight,
                        "file_bits": 8.0 * total["file_bytes"] / total["num_weights"],
                        "file_bytes": total["file_bytes"],
                        "overhead_bytes": total["file_bytes"] - total["payload_bytes"],
                        "warnings": len(caught),
                        "rmse_vs_posterior_mean": rmse(pred, base),
                        "test_rmse": rmse(pred, yte),
                        "sigma_archive_raw": float(np.array(archive["sigma"]).reshape(-1)[0]),
                        "sigma_used": float(values["sigma"]),
                        "sigma_median": float(medians["sigma"]),
                        "sigma_space": spaces.get("sigma", "real"),
                    }
                )
                if bits == args.per_tensor_bits:
                    alone = {k: rmse(predict(model, {**medians, k: values[k]}, xte), base) for k in values}
                    for r in per_tensor(archive, guide, sups, spaces, alone):
                        tensor_rows.append({"method": method, **r})
                archive.close()
                r = rows[-1]
                print(
                    f"{method:>14} {bits:g}: file {r['file_bits']:.3f} bits/w, RMSE vs mean "
                    f"{r['rmse_vs_posterior_mean']:.4f}, test {r['test_rmse']:.4f} ({time.time() - start:.0f} s)"
                )

    # equal rate: the asked file rates; then, since a small model's container costs a few bits per
    # weight, the first method's file rate at each of EQUAL_RATES moved into the range every method
    # measured (so that all are interpolated, none extrapolated); and payload rates
    reference = methods[0]
    points = [("file", rate, f"file {rate:g}") for rate in EQUAL_RATES]
    spans = [[r["file_bits"] for r in rows if r["method"] == m] for m in methods]
    measured = [s for s in spans if s]  # (none when no target was reached: the tables say so, no traceback)
    low, high = (max(min(s) for s in measured), min(max(s) for s in measured)) if measured else (1.0, 0.0)
    for rate in EQUAL_RATES:
        own = [r["file_bits"] for r in rows if r["method"] == reference and r["target_bits"] == rate]
        if own and low <= high:
            at = min(max(own[0], low), high)
            moved = "" if at == own[0] else f", moved from {own[0]:.3f}"
            points.append(("file", at, f"file {at:.3f} ({reference} at {rate:g}{moved})"))
    points += [("payload", rate, f"payload {rate:g}") for rate in EQUAL_RATES]
    equal = []
    for method in methods:
        mine = [r for r in rows if r["method"] == method]
        equal.append(
            [method]
            + [
                interpolate([(r[f"{kind}_bits"], r["rmse_vs_posterior_mean"]) for r in mine], rate)
                for kind, rate, _ in points
            ]
        )

    # --- 4: the 1-H-1 net at 4 bits
    g = torch.Generator().manual_seed(SEED + 1)
    x1 = torch.rand(args.train, 1, generator=g) * 6 - 3
    y1 = torch.sin(2 * x1[:, 0]) + 0.1 * torch.randn(args.train, generator=g)
    small_model, small_guide, _ = train((1, args.small_hidden, 1), x1, y1, args.small_steps, lr=0.03)
    small_sups = supports(small_model, x1, y1)
    small_medians = {k: v.detach() for k, v in small_guide.median().items()}
    xs = torch.linspace(-3, 3, args.test).unsqueeze(-1)
    small_base = predict(small_model, small_medians, xs)
    loc, scale = (v.detach().reshape(-1) for v in small_guide._get_loc_and_scale("fc1.weight"))
    small, small_warnings = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for method in methods:
            path = Path(tmp) / f"small-{method}.bnc"
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                try:
                    result = bnncompress.pack(small_guide, path, bits=4.0, method=method)
                except RateControlError as exc:
                    print(f"1-{args.small_hidden}-1, {method}: skipped ({exc})")
                    continue
            small_warnings += [f"{method}: {w.message}" for w in caught]  # (a missed target: not at 4 bits)
            archive = bnncompress.load(path)
            values, _ = decoded_sites(archive, small_sups, small_medians)
            w = torch.as_tensor(np.array(archive["fc1.weight"]), dtype=torch.float32).reshape(-1)
            small.append(
                [
                    method,
                    result.payload_bits_per_weight,
                    result.file_bits_per_weight,
                    int(np.unique(w.numpy()).size),
                    float(torch.max(torch.abs(w - loc) / scale)),
                    rmse(predict(small_model, values, xs), small_base),
                ]
            )
            archive.close()

    # --- report
    header = [
        "method",
        "target bits",
        "payload bits/w",
        "file bits/w",
        "RMSE vs posterior mean",
        "test RMSE",
        "sigma (archive raw)",
        "sigma used",
        "sigma median",
        "sigma space",
        "file - payload bytes",
        "pack warnings",
    ]
    keys = [
        "method",
        "target_bits",
        "payload_bits",
        "file_bits",
        "rmse_vs_posterior_mean",
        "test_rmse",
        "sigma_archive_raw",
        "sigma_used",
        "sigma_median",
        "sigma_space",
        "overhead_bytes",
        "warnings",
    ]
    lines = [
        f"# Bayesian regression MLP 8-{args.hidden}-{args.hidden}-1 ({n_weights:,} weights incl. sigma), "
        f"AutoNormal, {args.steps} SVI steps, {args.train} train / {args.test} test points",
        "",
        f"Posterior mean (all sites at their posterior medians): test RMSE {base_test:.4f}; "
        f"default method: {DEFAULT_METHOD}.",
        "",
        "## RMSE vs the posterior mean's predictions, per target rate",
        "",
        *table(header, [[r[k] for k in keys] for r in rows]),
        "",
        "## RMSE vs the posterior mean's predictions at equal rate (bits/weight; log RMSE interpolated "
        "linearly in rate between measured points; n/a = outside a method's measured rates)",
        "",
        *table(["method"] + [label for _, _, label in points], equal),
        "",
        f"## 1-{args.small_hidden}-1 network at 4 bits: the {args.small_hidden} first-layer weights after decoding",
        "",
        f"{args.small_steps} SVI steps (Adam lr 0.03) on y = sin(2x) + N(0, 0.1²), x ~ U(-3, 3); the posterior mean's "
        f"RMSE to sin(2x): {rmse(small_base, torch.sin(2 * xs[:, 0])):.3f}. "
        f"Posterior of the first-layer weights: locs RMS {rms(loc):.3f} (range {float(loc.min()):.3f} .. "
        f"{float(loc.max()):.3f}), scales median {float(scale.median()):.4f} (range {float(scale.min()):.4f} .. "
        f"{float(scale.max()):.4f}).",
        "",
        *table(
            [
                "method",
                "payload bits/w",
                "file bits/w",
                "distinct values",
                "max abs(decoded - loc) / scale",
                "RMSE vs posterior mean (x in [-3, 3])",
            ],
            small,
        ),
        *(["", "Pack warnings:", *(f"- {w}" for w in small_warnings)] if small_warnings else []),
        "",
        f"## Per tensor at target {args.per_tensor_bits:g} bits/weight (z = (decoded - loc) / scale, "
        "unconstrained; rel = RMS error / RMS of the means)",
        "",
        *table(
            [
                "method",
                "tensor",
                "weights",
                "record",
                "payload bits/w",
                "table bytes",
                "RMS z",
                "rel RMS error",
                "RMSE vs posterior mean, this tensor alone",
                "distinct values",
                "RMS of locs",
                "median scale",
            ],
            [
                [
                    t["method"],
                    t["tensor"],
                    t["weights"],
                    t["record"],
                    t["payload_bits"],
                    t["table_bytes"],
                    t["z_rms"],
                    t["rel_rms"],
                    t["alone_rmse"],
                    t["distinct"],
                    t["loc_rms"],
                    t["median_scale"],
                ]
                for t in tensor_rows
            ],
        ),
    ]
    text = "\n".join(lines) + "\n"
    write_result(out / "results.md", text)
    with atomic_output(out / "results.csv") as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["table", *keys, "file_bytes", "rate", "distinct", "max_z"])
        writer.writeheader()
        for r in rows:
            writer.writerow({"table": "targets", **r})
        for method, *vals in equal:
            for (kind, rate, _), v in zip(points, vals):
                writer.writerow(
                    {"table": f"equal_{kind}_rate", "method": method, "rate": rate, "rmse_vs_posterior_mean": v}
                )
        for method, payload, file_bits, distinct, max_z, err in small:
            writer.writerow(
                {
                    "table": "small_net_4bits",
                    "method": method,
                    "target_bits": 4.0,
                    "payload_bits": payload,
                    "file_bits": file_bits,
                    "distinct": distinct,
                    "max_z": max_z,
                    "rmse_vs_posterior_mean": err,
                }
            )
    print(text)
    print(f"wrote {out / 'results.md'} and {out / 'results.csv'} ({time.time() - start:.0f} s)")
    return {"rows": rows, "equal": equal, "small": small, "tensors": tensor_rows, "base_test_rmse": base_test}


if __name__ == "__main__":
    run_recipe(main)

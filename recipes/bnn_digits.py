"""Bayesian neural networks on scikit-learn's bundled digits, compressed at 1-4 bits per weight.

Trains a PyroModule network (N(0, 1) priors) with an AutoNormal guide, packs the posterior
with every quantization method at several rates, loads each archive back into the plain
``torch.nn`` network with ``Archive.load_into`` and reports test accuracy and mean test
log-likelihood against the posterior mean:

    python recipes/bnn_digits.py               # MLP 64-64-10 -> recipes/work/results/bnn_digits.{md,png}
    python recipes/bnn_digits.py --model cnn   # small CNN    -> recipes/work/results/bnn_digits_cnn.{md,png}
    python recipes/bnn_digits.py --quick       # < 1 min: 300 steps, 2 rates, 3 methods
    python recipes/bnn_digits.py --out recipes/results --force   # refresh the committed results

The CNN (two 3x3 convolutions on the 8x8 images, then a linear layer) is the convolutional
model that fits this 2-core machine: the digits are the only image data that ships in a
registry package here, and SVI over its 1257 training images takes under a minute.

Needs the ``recipes`` extra (scikit-learn, matplotlib): ``pip install -e ".[recipes]"``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.infer.autoguide import AutoNormal
from pyro.nn import PyroModule, PyroSample
from pyro.nn.module import to_pyro_module_
from recipe_args import check_results, directory, positive_int, rates, run, seed, write_result
from recipe_args import methods as methods_arg

import bnncompress
from bnncompress.errors import RateControlError
from bnncompress.files import atomic_output
from bnncompress.quantizers import METHODS

HIDDEN = 64


class MLP(torch.nn.Module):
    """The deterministic network the compressed posterior is loaded into."""

    def __init__(self):
        super().__init__()
        self.fc1 = torch.nn.Linear(64, HIDDEN)
        self.fc2 = torch.nn.Linear(HIDDEN, 10)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


class CNN(torch.nn.Module):
    """conv 1->8 (3x3) -> relu -> conv 8->16 (3x3) -> relu -> linear 256->10, on 8x8 images."""

    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(1, 8, 3)
        self.conv2 = torch.nn.Conv2d(8, 16, 3)
        self.fc = torch.nn.Linear(16 * 4 * 4, 10)

    def forward(self, x):
        h = torch.relu(self.conv2(torch.relu(self.conv1(x.view(-1, 1, 8, 8)))))
        return self.fc(h.flatten(1))


NETWORKS = {"mlp": MLP, "cnn": CNN}


def bayesian(net_cls: type[torch.nn.Module], num_data: int) -> PyroModule:
    """``net_cls`` as a PyroModule with prior N(0, 1) on every parameter and a categorical
    likelihood: sample sites are named like the parameters (``fc1.weight``)."""

    class Bayesian(PyroModule[net_cls]):
        def forward(self, x, y=None):
            logits = super().forward(x)
            with pyro.plate("data", num_data, subsample_size=x.shape[0]):
                pyro.sample("y", dist.Categorical(logits=logits), obs=y)
            return logits

    model = Bayesian()
    to_pyro_module_(model)  # make every submodule a PyroModule, so parameters can become sample sites
    for module in model.modules():
        for name, param in list(module.named_parameters(recurse=False)):
            setattr(module, name, PyroSample(dist.Normal(0.0, 1.0).expand(param.shape).to_event(param.dim())))
    return model


def load_digits_split(seed: int = 0):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x = x / 16.0  # pixel intensities 0..16 -> [0, 1]; blank pixels stay 0
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.3, random_state=seed, stratify=y)
    as_t = lambda a, dt: torch.tensor(a, dtype=dt)  # noqa: E731
    return as_t(xtr, torch.float32), as_t(ytr, torch.long), as_t(xte, torch.float32), as_t(yte, torch.long)


def train(net_cls, xtr, ytr, steps: int, seed: int = 0) -> AutoNormal:
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    model = bayesian(net_cls, len(xtr))
    guide = AutoNormal(model, init_scale=0.01)
    svi = SVI(model, guide, pyro.optim.ClippedAdam({"lr": 0.01, "lrd": 0.1 ** (1 / max(steps, 1))}), Trace_ELBO())
    for step in range(steps):
        loss = svi.step(xtr, ytr)
        if step % 1000 == 0:
            print(f"step {step:5d}  ELBO loss {loss:10.1f}")
    return guide


@torch.no_grad()
def evaluate(net: torch.nn.Module, x, y) -> tuple[float, float]:
    """Test accuracy and mean test log-likelihood of a point-estimate network."""
    logp = torch.log_softmax(net(x), dim=-1)
    return float((logp.argmax(-1) == y).float().mean()), float(logp[torch.arange(len(y)), y].mean())


def posterior_mean_net(net_cls, guide: AutoNormal) -> torch.nn.Module:
    net = net_cls()
    with torch.no_grad():
        for name, value in guide.median().items():
            dict(net.named_parameters())[name].copy_(value)
    return net


class _Help(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=_Help)
    parser.add_argument("--model", choices=sorted(NETWORKS), default="mlp", help="network")
    parser.add_argument("--steps", type=positive_int, default=4000, help="SVI steps")
    parser.add_argument("--seed", type=seed, default=0, help="SVI seed (the data split is always the same)")
    parser.add_argument(
        "--quick", action="store_true", help="300 steps, 2 and 4 bits, 3 methods (--steps, --bits, --methods not used)"
    )
    parser.add_argument("--bits", type=rates, default="1,1.5,2,3,4", help="comma-separated payload bits per weight")
    parser.add_argument(
        "--methods",
        type=methods_arg,
        default="vbq-transform,vbq-direction,vbq,vbq-empirical,uniform,weighted-kmeans",
        help="comma-separated methods with a rate knob (not float16)",
    )
    parser.add_argument(
        "--out",
        type=directory,
        default=str(Path(__file__).parent / "work" / "results"),
        help="folder for the .md and .png",
    )
    parser.add_argument("--force", action="store_true", help="replace the .md and .png if they exist")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.bits, args.methods = 300, [2.0, 4.0], ["vbq-transform", "vbq", "uniform"]
    methods = args.methods
    fixed = [m for m in methods if METHODS[m].fixed_rate]
    if fixed:
        rated = ", ".join(m for m in METHODS if not METHODS[m].fixed_rate)
        parser.error(f"--methods: {fixed[0]!r} has no rate knob; choose from {rated}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    net_cls = NETWORKS[args.model]
    stem = "bnn_digits" if args.model == "mlp" else f"bnn_digits_{args.model}"
    check_results([out / f"{stem}.md", out / f"{stem}.png"], args.force)  # before minutes of training
    xtr, ytr, xte, yte = load_digits_split()
    start = time.time()
    guide = train(net_cls, xtr, ytr, args.steps, seed=args.seed)
    print(f"trained in {time.time() - start:.0f} s")
    base_acc, base_ll = evaluate(posterior_mean_net(net_cls, guide), xte, yte)
    rows = [("posterior mean", "", 32.0, 32.0, base_acc, base_ll, 0.0)]
    with tempfile.TemporaryDirectory() as tmp:
        for method in methods:
            for bits in args.bits:
                path = Path(tmp) / f"{method}-{bits}.bnc"
                try:
                    result = bnncompress.pack(guide, path, bits=bits, method=method)
                except RateControlError as exc:  # one point skipped, as sweep does (it ended the whole run)
                    print(f"{method} {bits:g} bits: skipped ({exc})")
                    continue
                archive = bnncompress.load(path)
                acc, ll = evaluate(archive.load_into(net_cls()), xte, yte)
                table = archive.info()["total"]["table_bytes"] / result.payload_bytes
                rows.append(
                    (method, f"{bits:g}", result.payload_bits_per_weight, result.file_bits_per_weight, acc, ll, table)
                )
                print(
                    f"{method} {bits:g} bits: payload {result.payload_bits_per_weight:.3f}, accuracy {acc:.4f}, "
                    f"log-lik {ll:.4f}"
                )
    n_weights = sum(p.numel() for p in net_cls().parameters())
    description = f"MLP 64-{HIDDEN}-10" if args.model == "mlp" else "CNN conv3x3(8)-conv3x3(16)-linear"
    lines = [
        f"Bayesian {description} ({n_weights:,} weights) on scikit-learn digits "
        f"({len(xtr)} train / {len(xte)} test), AutoNormal, {args.steps} SVI steps.",
        "",
        "| method | target bits | payload bits/w | tables in payload | file bits/w | test accuracy "
        "| % of posterior mean | test log-lik |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for method, target, payload, file_bits, acc, ll, table in rows:
        lines.append(
            f"| {method} | {target} | {payload:.3f} | {100 * table:.0f}% | {file_bits:.3f} | {acc:.4f} | "
            f"{100 * acc / base_acc:.1f}% | {ll:.4f} |"
        )
    write_result(out / f"{stem}.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    plot(rows, base_acc, base_ll, out / f"{stem}.png", f"Bayesian {description} on digits: quality vs rate")


def plot(rows, base_acc: float, base_ll: float, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, col, base, label in ((axes[0], 4, base_acc, "test accuracy"), (axes[1], 5, base_ll, "test log-likelihood")):
        for method in dict.fromkeys(r[0] for r in rows if r[1]):
            pts = [(r[2], r[col]) for r in rows if r[0] == method]
            ax.plot(*zip(*pts), marker="o", label=method)
        ax.axhline(base, color="gray", linestyle="--", label="posterior mean (32 bits)")
        ax.set_xlabel("payload bits per weight")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    print(f"wrote {path}")


if __name__ == "__main__":
    run(main)

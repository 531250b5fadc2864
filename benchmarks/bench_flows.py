"""The coursework flow in densitylab and in its peers, side by side, in one run.

The job (the coursework's configuration, the same for every implementation):

* data: ``make_moons(1500, noise=0.1, random_state=0)``; a 90/10 train/validation split drawn
  as :func:`densitylab.fit` draws it (seed 8; checked against densitylab's split at run time);
* model: RealNVP, K = 4 affine couplings with alternating masks, separate s and t networks
  (2 or 1 inputs -> 32 -> 32 -> out, LeakyReLU), standard-normal base;
* training: Adam, lr 1e-3, batch 64, the batches indexed from tensors in the order of
  ``torch.randperm(n_train, generator=torch.Generator().manual_seed(8))`` per epoch (the order
  densitylab uses), the validation NLL after every epoch, the best model by validation NLL kept.

Implementations:

* ``densitylab compiled``: ``densitylab.fit(..., engine="compiled")``, the numba engine
  (float64 hand-derived gradients, one compiled call per epoch). Its one-time
  JIT compilation is measured separately, in a child process with an empty
  ``NUMBA_CACHE_DIR``; in this process a 1-epoch warm-up fit loads it from the on-disk cache
  before anything is timed;
* ``densitylab torch``: ``densitylab.fit(..., engine="torch")`` (autograd, float32);
* ``plain PyTorch``: the coursework's ``CouplingLayer``/``CouplingFlow`` (masked inputs, separate
  ``nn.Sequential`` s and t nets 2 -> 32 -> 32 -> 2, learnable ``scale_factor`` initialised to 0,
  ``MultivariateNormal`` prior, ``log_probability`` by inverse passes), trained by the loop below;
* ``zuko``: ``zuko.flows.RealNVP(2, transforms=4, hidden_features=(32, 32), activation=LeakyReLU)``
  with each coupling's hyper-network replaced by separate s and t MLPs (1 -> 32 -> 32 -> 1);
  zuko's affine map soft-clamps the log-scale;
* ``normflows``: four ``MaskedAffineFlow`` with alternating masks and separate ``nets.MLP`` s and
  t nets (2 -> 32 -> 32 -> 2, leaky slope 0.01; the s net's output layer zero-initialised, so
  every coupling starts with scale 1, as the coursework's ``scale_factor = 0`` does), a fixed
  ``DiagGaussian`` base;
* ``nflows``: four ``AffineCouplingTransform`` with alternating masks, the transform net made of
  separate s and t MLPs (1 -> 32 -> 32 -> 1); nflows maps the raw scale through
  ``sigmoid(s + 2) + 1e-3``.

The peers and plain PyTorch share one training loop (``train_loop``), written as a user would:
``torch.optim.Adam(params, lr=1e-3)`` with torch's defaults; densitylab uses its own loop.

Measured, for every implementation, alternating them within one run:

* s/epoch: the median wall time of one epoch (training pass plus validation) over the fit, with
  ``torch.set_num_threads(t)`` for each ``t`` in ``--threads`` (densitylab: ``fit(threads=t)``):
  ``--epochs`` at the first thread count, ``--timing-epochs`` at the others (timing only). The
  compiled engine is single-threaded whatever the setting. The median is the least disturbed
  by other work on a shared machine; the mean is kept in the JSON output. The
  1-minute load average is printed with every fit;
* test NLL: mean ``-log p`` in nats of the kept model (from the fit at the first thread count) on
  ``make_moons(20000, noise=0.1, random_state=1)``;
* log_prob and sampling throughput: points per second for one call on ``--points`` points (best
  of ``--repeats``), with the first and the last thread count;
* ratio: s/epoch (first thread count) over densitylab's s/epoch, for each densitylab engine.

Then ``densitylab.fit_many`` on 16 flows (flow and fit seeds 0..15, the same data) against one
``fit`` (seed 0) for the same number of epochs (``--many-epochs``), for both engines: the wall
time ratio (the target: 16 models in at most 3x the time of one).

Run:  .venv/bin/python benchmarks/bench_flows.py [--epochs 1000] [--timing-epochs 50]
      [--threads 1,2] [--many-epochs 100] [--quick] [--json results.json]
"""

from __future__ import annotations

import argparse
import copy
import importlib
import importlib.metadata
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from sklearn.datasets import make_moons
from torch import Tensor, nn

import densitylab as dl

N_POINTS, N_TEST = 1500, 20_000
K, HIDDEN, BATCH, LR, VAL_FRACTION, SEED = 4, (32, 32), 64, 1e-3, 0.1, 8
N_MANY = 16
PEERS = ("zuko", "normflows", "nflows")


# -- data -------------------------------------------------------------------------------------
@dataclass
class Data:
    x: np.ndarray  # all 1500 points, float64 (what densitylab.fit gets)
    train: Tensor  # float32 tensors for the torch implementations
    val: Tensor
    test: Tensor
    train_indices: np.ndarray


def load_data() -> Data:
    x = make_moons(N_POINTS, noise=0.1, random_state=0)[0]
    test = make_moons(N_TEST, noise=0.1, random_state=1)[0]
    # densitylab's split: round(n * fraction) points, a permutation from default_rng(seed)
    n_val = round(N_POINTS * VAL_FRACTION)
    order = np.random.default_rng(SEED).permutation(N_POINTS)
    train_idx, val_idx = np.sort(order[n_val:]), np.sort(order[:n_val])

    def as32(a: np.ndarray) -> Tensor:
        return torch.as_tensor(a, dtype=torch.float32)

    return Data(x, as32(x[train_idx]), as32(x[val_idx]), as32(test), train_idx)


# -- the coursework's model in plain PyTorch ---------------------------------------------------
def mlp(n_in: int, n_out: int) -> nn.Sequential:
    """in -> 32 -> 32 -> out with LeakyReLU in between."""
    return nn.Sequential(
        nn.Linear(n_in, HIDDEN[0]), nn.LeakyReLU(),
        nn.Linear(HIDDEN[0], HIDDEN[1]), nn.LeakyReLU(),
        nn.Linear(HIDDEN[1], n_out),
    )  # fmt: skip


class CouplingLayer(nn.Module):
    """``y = m * x + (1 - m) * (x * exp(s(m * x)) + t(m * x))``; ``m = 1`` passes unchanged."""

    def __init__(self, mask: Tensor) -> None:
        super().__init__()
        self.mask = nn.Parameter(mask, requires_grad=False)
        self.s_func, self.t_func = mlp(2, 2), mlp(2, 2)
        self.scale_factor = nn.Parameter(torch.zeros(2))

    def _scale_shift(self, masked: Tensor) -> tuple[Tensor, Tensor]:
        free = 1 - self.mask
        return free * self.scale_factor * self.s_func(masked), free * self.t_func(masked)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        s, t = self._scale_shift(self.mask * x)
        return self.mask * x + (1 - self.mask) * (x * s.exp() + t), s.sum(-1)

    def inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        s, t = self._scale_shift(self.mask * y)
        return self.mask * y + (1 - self.mask) * ((y - t) * (-s).exp()), -s.sum(-1)


class CouplingFlow(nn.Module):
    """K couplings with alternating masks; ``forward`` direction is prior -> data."""

    def __init__(self, num_layers: int) -> None:
        super().__init__()
        masks = nn.functional.one_hot(torch.tensor([i % 2 for i in range(num_layers)]), 2)
        self.layers = nn.ModuleList([CouplingLayer(m.float()) for m in masks])
        self.prior = torch.distributions.MultivariateNormal(torch.zeros(2), torch.eye(2))

    def log_probability(self, x: Tensor) -> Tensor:
        log_det = torch.zeros(len(x))
        for layer in reversed(self.layers):
            x, step = layer.inverse(x)
            log_det = log_det + step
        return self.prior.log_prob(x) + log_det

    def sample_x(self, num_samples: int) -> tuple[Tensor, Tensor]:
        z = self.prior.sample((num_samples,))
        log_prob = self.prior.log_prob(z)
        for layer in self.layers:
            z, log_det = layer(z)
            log_prob = log_prob - log_det
        return z, log_prob


# -- the peers ---------------------------------------------------------------------------------
class SeparateST(nn.Module):
    """Separate shift and scale MLPs behind one "hyper-network" call: ``[t(x), s(x)]``.

    Both zuko and nflows read the conditioner output as (shift, raw scale) for one transformed
    coordinate; ``context`` is accepted (and ignored) for nflows' call signature.
    """

    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        self.t, self.s = mlp(n_in, n_out), mlp(n_in, n_out)

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        return torch.cat([self.t(x), self.s(x)], dim=-1)


@dataclass
class Model:
    """A built model: its module and how to get log-densities and samples from it."""

    module: nn.Module
    log_prob: Callable[[Tensor], Tensor]
    sample: Callable[[int], Tensor]


def build_plain() -> Model:
    flow = CouplingFlow(K)
    return Model(flow, flow.log_probability, lambda n: flow.sample_x(n)[0])


def build_zuko() -> Model:
    import zuko

    flow = zuko.flows.RealNVP(2, transforms=K, hidden_features=HIDDEN, activation=nn.LeakyReLU)
    for coupling in flow.transform.transforms:
        coupling.hyper = SeparateST(1, 1)
    return Model(flow, lambda x: flow().log_prob(x), lambda n: flow().sample((n,)))


def build_normflows() -> Model:
    import normflows as nf

    mask = torch.tensor([1.0, 0.0])
    couplings = [
        nf.flows.MaskedAffineFlow(
            mask if k % 2 == 0 else 1 - mask,
            t=nf.nets.MLP([2, *HIDDEN, 2], leaky=0.01),
            s=nf.nets.MLP([2, *HIDDEN, 2], leaky=0.01, init_zeros=True),
        )
        for k in range(K)
    ]
    flow = nf.NormalizingFlow(nf.distributions.DiagGaussian(2, trainable=False), couplings)
    return Model(flow, flow.log_prob, lambda n: flow.sample(n)[0])


def build_nflows() -> Model:
    from nflows.distributions import StandardNormal
    from nflows.flows import Flow
    from nflows.transforms import AffineCouplingTransform, CompositeTransform

    couplings = [
        AffineCouplingTransform(
            torch.tensor([1, 0] if k % 2 else [0, 1]),  # > 0: transformed
            transform_net_create_fn=lambda n_in, n_out: SeparateST(n_in, n_out // 2),
        )
        for k in range(K)
    ]
    flow = Flow(CompositeTransform(couplings), StandardNormal([2]))
    return Model(flow, flow.log_prob, flow.sample)


BUILDERS: dict[str, Callable[[], Model]] = {
    "plain PyTorch": build_plain,
    "zuko": build_zuko,
    "normflows": build_normflows,
    "nflows": build_nflows,
}


def train_loop(model: Model, data: Data, epochs: int) -> list[float]:
    """Adam on mini-batches indexed from the tensors; keeps the best model by validation NLL.
    Returns the wall seconds of every epoch."""
    generator = torch.Generator().manual_seed(SEED)
    optimizer = torch.optim.Adam(model.module.parameters(), lr=LR)
    best, best_state = math.inf, copy.deepcopy(model.module.state_dict())
    seconds = []
    for _ in range(epochs):
        start = time.perf_counter()
        for index in torch.randperm(len(data.train), generator=generator).split(BATCH):
            loss = -model.log_prob(data.train[index]).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            val = -model.log_prob(data.val).mean().item()
        if val < best:
            best, best_state = val, copy.deepcopy(model.module.state_dict())
        seconds.append(time.perf_counter() - start)
    model.module.load_state_dict(best_state)
    return seconds


# -- one implementation = how to train it --------------------------------------------------------
@dataclass
class Row:
    name: str
    note: str = ""
    s_epoch: dict[int, float] = field(default_factory=dict)  # median, by thread count
    mean_s_epoch: dict[int, float] = field(default_factory=dict)
    load: dict[int, float] = field(default_factory=dict)  # 1-min load average at the fit
    test_nll: float = math.nan
    log_prob_pps: dict[int, float] = field(default_factory=dict)
    sample_pps: dict[int, float] = field(default_factory=dict)
    model: Model | None = None


def train(name: str, data: Data, epochs: int, threads: int) -> tuple[Model, list[float]]:
    """Fit implementation ``name`` for ``epochs``; the model and per-epoch seconds."""
    if name.startswith("densitylab"):
        engine = name.split()[1]
        flow = dl.flows.realnvp(2, K, HIDDEN, seed=SEED)
        result = dl.fit(
            flow, data.x, epochs=epochs, batch_size=BATCH, lr=LR, val_fraction=VAL_FRACTION,
            seed=SEED, verbose=False, engine=engine, threads=threads,
        )  # fmt: skip
        if not np.array_equal(result.train_indices, data.train_indices):
            raise RuntimeError("densitylab's train/validation split differs from this script's")
        flow = result.flow
        model = Model(flow, flow.log_prob, lambda n: flow.sample(n, seed=0))
        return model, np.diff(result.history.seconds, prepend=0.0).tolist()
    torch.manual_seed(SEED)  # the coursework's seed for the initial weights
    model = BUILDERS[name]()
    torch.set_num_threads(threads)
    return model, train_loop(model, data, epochs)


def points_per_second(fn: Callable[[], object], n: int, repeats: int) -> float:
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        with torch.no_grad():
            fn()
        best = min(best, time.perf_counter() - start)
    return n / best


def load1() -> float:
    return os.getloadavg()[0]


# -- compile time of the numba engine ---------------------------------------------------------
COMPILE_PROBE = """
import time, densitylab as dl
from sklearn.datasets import make_moons
x = make_moons(1500, noise=0.1, random_state=0)[0]
start = time.perf_counter()
dl.fit(dl.flows.realnvp(2, 4, (32, 32), seed=8), x, epochs=1, verbose=False, engine="compiled")
print(time.perf_counter() - start)
"""


def compile_seconds() -> float:
    """One-time JIT compilation of the compiled engine: a 1-epoch fit in a fresh process with an
    empty numba cache (the epoch itself takes milliseconds)."""
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache}
        out = subprocess.run(
            [sys.executable, "-c", COMPILE_PROBE], env=env, capture_output=True, text=True,
            check=True,
        )  # fmt: skip
    return float(out.stdout.split()[-1])


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# -- fit_many: 16 flows against one ------------------------------------------------------------
def fit_many_ratio(x: np.ndarray, engine: str, epochs: int, threads: int) -> dict[str, float]:
    seeds = list(range(N_MANY))
    options = dict(epochs=epochs, batch_size=BATCH, lr=LR, val_fraction=VAL_FRACTION,
                   verbose=False, engine=engine, threads=threads)  # fmt: skip

    def one(epochs_: int) -> None:
        dl.fit(dl.flows.realnvp(2, K, HIDDEN, seed=0), x, seed=0, **{**options, "epochs": epochs_})

    def many(epochs_: int) -> None:
        flows = [dl.flows.realnvp(2, K, HIDDEN, seed=s) for s in seeds]
        dl.fit_many(flows, x, seed=seeds, **{**options, "epochs": epochs_})

    one(1)  # warm-ups (for the compiled engine: any specialisation still missing)
    many(1)
    t_one, load_one = timed(lambda: one(epochs)), load1()
    t_many, load_many = timed(lambda: many(epochs)), load1()
    return {"one_s": t_one, "many_s": t_many, "ratio": t_many / t_one,
            "load": max(load_one, load_many)}  # fmt: skip


# -- reporting ---------------------------------------------------------------------------------
def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for package in ("densitylab", "torch", "numpy", "numba", "scikit-learn", *PEERS):
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found


def fmt(value: float, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def rate(value: float | None) -> str:
    return "n/a" if value is None else f"{value / 1e6:.2f} M"


def print_table(rows: list[Row], threads: list[int]) -> None:
    t0, t_last = threads[0], threads[-1]
    ref = {r.name: r.s_epoch.get(t0) for r in rows if r.name.startswith("densitylab")}
    head = [f"s/epoch {t}t" for t in threads] + ["test NLL"]
    head += [f"log_prob pts/s {t}t" for t in sorted({t0, t_last})]
    head += [f"sample pts/s {t}t" for t in sorted({t0, t_last})]
    head += [f"x {name} ({t0}t)" for name in ref] + ["load1 at fits"]
    print("| implementation | " + " | ".join(head) + " |")
    print("|" + "---|" * (len(head) + 1))
    for r in rows:
        if r.note:
            print(f"| {r.name} | " + " | ".join([r.note] + [""] * (len(head) - 1)) + " |")
            continue
        cells = [fmt(r.s_epoch.get(t)) for t in threads] + [fmt(r.test_nll)]
        cells += [rate(r.log_prob_pps.get(t)) for t in sorted({t0, t_last})]
        cells += [rate(r.sample_pps.get(t)) for t in sorted({t0, t_last})]
        cells += [f"{r.s_epoch[t0] / s:.2f}" if s else "n/a" for s in ref.values()]
        cells += [" / ".join(f"{r.load[t]:.2f}" for t in threads)]
        print(f"| {r.name} | " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=1000, help="epochs per fit (default 1000)")
    parser.add_argument("--threads", default="1,2", help="torch thread counts, e.g. 1,2")
    parser.add_argument(
        "--timing-epochs",
        type=int,
        default=50,
        help="epochs of the fits at the further thread counts (timing only)",
    )
    parser.add_argument(
        "--many-epochs",
        type=int,
        default=100,
        help="epochs of the fit_many 16-vs-1 comparison (default 100)",
    )
    parser.add_argument(
        "--points",
        type=int,
        default=1_000_000,
        help="points for the log_prob and sampling throughput (default 10^6)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="best of this many (throughput)")
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run: 20 (5, 10) epochs, 10^5 points, 1 repeat"
    )
    parser.add_argument("--json", help="also write the raw results to this file")
    args = parser.parse_args()
    if args.quick:
        args.epochs, args.timing_epochs, args.many_epochs = 20, 5, 10
        args.points, args.repeats = 100_000, 1
    threads = [int(t) for t in args.threads.split(",")]
    sys.stdout.reconfigure(line_buffering=True)  # progress lines show up in a log file at once

    print(f"# bench_flows: {' '.join(sys.argv[1:]) or '(defaults)'}")
    print(f"machine: {cpu_model()}, {os.cpu_count()} logical cores, {platform.platform()}")
    print("load average at start: " + ", ".join(f"{v:.2f}" for v in os.getloadavg()))
    print("versions: " + ", ".join(f"{k} {v}" for k, v in versions().items()))
    data = load_data()

    rows = [Row("densitylab compiled"), Row("densitylab torch"), Row("plain PyTorch")]
    for peer in PEERS:
        try:
            importlib.import_module(peer)
            rows.append(Row(peer))
        except ImportError as error:
            rows.append(Row(peer, note=f"not installed ({error})"))
    active = [r for r in rows if not r.note]

    print("\ncompiled engine: one-time JIT compilation (fresh process, empty numba cache) ...")
    compile_s = compile_seconds()
    warm_s = timed(lambda: train("densitylab compiled", data, 1, threads[0]))
    print(f"  compile {compile_s:.1f} s; warm-up here (from the disk cache) {warm_s:.2f} s")
    for r in active[1:]:
        train(r.name, data, 1, threads[0])  # warm-up: one-off start-up costs are not timed

    plan = f"{args.epochs} epochs at {threads[0]} thread(s)"
    if threads[1:]:
        plan += f", {args.timing_epochs} epochs (timing only) at {threads[1:]}"
    print(f"\nfits of {plan}, implementations alternating:")
    for i, t in enumerate(threads):
        epochs = args.epochs if i == 0 else args.timing_epochs
        for r in active if i % 2 == 0 else active[::-1]:
            model, seconds = train(r.name, data, epochs, t)
            r.s_epoch[t], r.mean_s_epoch[t] = statistics.median(seconds), statistics.mean(seconds)
            r.load[t] = load1()
            if i == 0:
                r.model = model
                with torch.no_grad():
                    r.test_nll = -model.log_prob(data.test).mean().item()
            print(
                f"  {r.name:20s} {t} thread(s): {r.s_epoch[t]:.4f} s/epoch (median; mean "
                f"{r.mean_s_epoch[t]:.4f}), total {sum(seconds):.1f} s, load1 {r.load[t]:.2f}"
            )

    print(f"\nthroughput on {args.points:,} points (best of {args.repeats}):")
    x_many = torch.as_tensor(make_moons(args.points, noise=0.1, random_state=2)[0],
                             dtype=torch.float32)  # fmt: skip
    for t in sorted({threads[0], threads[-1]}):
        torch.set_num_threads(t)
        for r in active:
            r.log_prob_pps[t] = points_per_second(
                lambda r=r: r.model.log_prob(x_many), args.points, args.repeats
            )
            r.sample_pps[t] = points_per_second(
                lambda r=r: r.model.sample(args.points), args.points, args.repeats
            )
            print(
                f"  {r.name:20s} {t} thread(s): log_prob {rate(r.log_prob_pps[t])}/s, "
                f"sample {rate(r.sample_pps[t])}/s, load1 {load1():.2f}"
            )

    print(f"\nfit_many: {N_MANY} flows (seeds 0..{N_MANY - 1}) vs one, {args.many_epochs} epochs:")
    many = {}
    for t in threads:
        for engine in ("compiled", "torch"):
            m = fit_many_ratio(data.x, engine, args.many_epochs, t)
            many[f"{engine} {t}t"] = m
            print(
                f"  {engine:8s} {t} thread(s): one {m['one_s']:.2f} s, {N_MANY} models "
                f"{m['many_s']:.2f} s, ratio {m['ratio']:.2f} (target <= 3), "
                f"load1 {m['load']:.2f}"
            )

    print(
        f"\n## Results ({plan}; s/epoch: the median epoch, training + validation; "
        "throughput: points per second)\n"
    )
    print_table(rows, threads)
    print(
        f"\nfit_many, {N_MANY} models over 1 ({args.many_epochs} epochs; target <= 3): "
        + ", ".join(f"{key} {m['ratio']:.2f}" for key, m in many.items())
    )
    print(f"compiled engine one-time compile: {compile_s:.1f} s (excluded above)")
    print("load average at end: " + ", ".join(f"{v:.2f}" for v in os.getloadavg()))

    if args.json:
        out = {
            "args": vars(args), "cpu": cpu_model(), "cores": os.cpu_count(),
            "versions": versions(), "compile_s": compile_s, "warm_up_s": warm_s,
            "fit_many": many,
            "rows": [{k: v for k, v in vars(r).items() if k != "model"} for r in rows],
        }  # fmt: skip
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2, default=str)


if __name__ == "__main__":
    main()

"""Continuous normalizing flows: densitylab's CNF (maximum likelihood and flow matching) against
zuko's CNF, on the built-in laws, in one run.

Every CNF: a (64, 64) ELU vector field of ``[x, cos(k pi t), sin(k pi t)]``, ``k = 1..3`` (zuko's
default network, which densitylab's copies; densitylab's starts at zero, its ``cnf`` recipe's
``zero_init``, zuko's from ``nn.Linear``'s random draw), exact divergence, dopri5 evaluated at rtol
1e-5, atol 1e-6 (zuko's defaults; densitylab's ``--atol``), float32, one thread; densitylab's
maximum-likelihood training solves at rtol = atol = ``--train-tol`` (1e-3, its CNF recipe's; zuko
trains at its evaluation tolerances). The same standardised data (``--n`` training points), batches
of 256, Adam on a cosine schedule at each objective's recipe rate (maximum likelihood 3e-3, the
``cnf`` recipe's, for both libraries; flow matching ``--fm-lr``, 1e-2, the ``cnf-fm`` recipe's).
Maximum likelihood: ``--ml-steps`` optimizer steps for both libraries (zuko's in a plain loop, no
validation; densitylab's in its driver, which also validates every epoch on 10% held out and keeps
the best epoch: that time is counted). Flow matching: densitylab's ``--fm-steps`` steps
(simulation-free), its field also fed 4 octaves of Fourier features of ``x`` (the study's and the
``cnf-fm`` recipe's: cheap without a solver in training, they would stiffen the ODE that maximum
likelihood solves every step); ``densitylab cnf-fm recipe`` is ``FlowDensity(model="cnf-fm")`` with
its own, larger field, and ``densitylab recommended spline`` the spline flow's estimator, the
reference (seconds, not minutes). Reported per law and seed (``--seeds``; with several, each law
closes with every method's mean gap over the seeds and densitylab's maximum-likelihood CNF minus
zuko's): the gap ``test NLL - entropy`` (KL from the truth) ± standard error on ``--n-test`` fresh
points, seconds to train, seconds to evaluate those log-densities. ``flow matching to max.
likelihood's gap`` (whenever densitylab's maximum-likelihood CNF is in the run; ``--ladder`` with
no budgets skips it) answers "how long does flow matching take to get as close": the same
flow-matching CNF trained afresh on budgets of ``--ladder`` steps, smallest first, until one's gap
is within two paired standard errors of the maximum-likelihood CNF's (or below it); its row gives
that budget's training seconds, the one fit a user would run.
zuko is a benchmark-only extra (``pip install -e ".[bench]"``).

    python benchmarks/cnf.py [--laws moons 8gaussians] [--n 5000] [--n-test 100000]
                             [--methods "densitylab cnf-fm"] [--ladder 250 500 1000]
                             [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch

import densitylab as dl
from densitylab.experiments.continuous_flows import FM_FOURIER
from densitylab.experiments.findings import paired_se
from densitylab.experiments.limits import distinct_laws

HIDDEN = (64, 64)
BATCH, LR = 256, 3e-3


def gap(log_p: torch.Tensor, entropy: float) -> tuple[float, float]:
    values = log_p.double().numpy()
    return float(-values.mean() - entropy), float(values.std(ddof=1) / math.sqrt(len(values)))


def zuko_cnf(x: np.ndarray, steps: int, seed: int):
    """zuko's CNF trained by maximum likelihood on standardised ``x`` in a plain Adam loop."""
    import zuko

    torch.manual_seed(seed)  # zuko initialises from torch's global generator
    flow = zuko.flows.CNF(2, hidden_features=HIDDEN)
    mean, std = x.mean(0), x.std(0)
    data = torch.as_tensor((x - mean) / std, dtype=torch.float32)
    optimizer = torch.optim.Adam(flow.parameters(), lr=LR)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        batch = data[torch.randint(len(data), (BATCH,), generator=generator)]
        loss = -flow().log_prob(batch).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    shift = float(np.log(std).sum())

    def log_prob(points: np.ndarray) -> torch.Tensor:
        z = torch.as_tensor((points - mean) / std, dtype=torch.float32)
        with torch.no_grad():
            return flow().log_prob(z) - shift

    return log_prob


def densitylab_cnf(x: np.ndarray, steps: int, seed: int, objective: str,
                   atol: float = 1e-5, train_tol: float | None = None, lr: float = LR):
    """densitylab's CNF of the (64, 64) field, starting at zero; by flow matching its field is
    fed ``FM_FOURIER`` octaves of Fourier features of ``x``, as in the continuous-flows study."""
    fourier = 0 if objective == "nll" else FM_FOURIER
    flow = dl.flows.cnf(2, HIDDEN, zero_init=True, fourier=fourier, atol=atol,
                        train_tol=train_tol, seed=seed)
    epochs = dl.flows.recommended_epochs(len(x), batch_size=BATCH, steps=steps)
    result = dl.fit(flow, x, epochs=epochs, batch_size=BATCH, lr=lr, schedule="cosine",
                    standardize=True, seed=seed, objective=objective, verbose=False)

    def log_prob(points: np.ndarray) -> torch.Tensor:
        with torch.no_grad():
            return result.flow.log_prob(torch.as_tensor(points, dtype=torch.float32))

    return log_prob


def time_to_reach(x: np.ndarray, test: np.ndarray, target: torch.Tensor, ladder: list[int],
                  seed: int, atol: float, lr: float) -> tuple[int, float, torch.Tensor] | None:
    """The first budget of ``ladder`` (steps) at which a flow-matching CNF's test log-densities
    are, on average, no worse than ``target``'s beyond two paired standard errors:
    ``(steps, training seconds of that fit, its log-densities)``; None if none gets there."""
    for steps in ladder:
        start = time.perf_counter()
        log_prob = densitylab_cnf(x, steps, seed, "flow-matching", atol, lr=lr)
        trained = time.perf_counter() - start
        log_p = log_prob(test)
        shortfall = (target.double() - log_p.double()).mean().item()
        if shortfall <= 2 * paired_se(log_p.double().numpy(), target.double().numpy()):
            return steps, trained, log_p
    return None


def recipe(model: str):
    """A trainer of ``FlowDensity(model=model)`` with its own recipe: ``"cnf-fm"``, the (128,
    128, 128) field with 4 octaves of Fourier features of ``x``, 10,000 flow-matching steps of
    1,024 optimally paired draws (not the same network size as the others: what the recipe
    reaches); ``"recommended"``, the spline flow, the reference a density is measured against."""
    def train(x: np.ndarray, seed: int):
        est = dl.FlowDensity(model=model, random_state=seed).fit(x)
        return lambda points: torch.as_tensor(est.score_samples(points))

    return train


def summarize(law, seeds: list[int], gaps: dict[str, list[float]]) -> None:
    """Rows of each method's mean gap over ``seeds`` ± its standard error over seeds, and of
    densitylab's maximum-likelihood CNF minus zuko's, seed by seed (the fair comparison at a
    small budget, where one initial draw moves the gap by more than the libraries differ)."""
    def mean_se(values: list[float], sign: str = "") -> str:
        spread = np.std(values, ddof=1) / math.sqrt(len(values))
        return f"{np.mean(values):{sign}.3f} ± {spread:.3f}"

    for name, values in gaps.items():
        print(f"| {law.label} | {name} | {mean_se(values)} (mean of {len(seeds)} seeds) | | |")
    ours, theirs = gaps.get(ML), gaps.get(ZUKO)
    if ours and theirs:
        difference = [a - b for a, b in zip(ours, theirs, strict=True)]
        print(f"| {law.label} | densitylab minus zuko | {mean_se(difference, '+')} "
              f"({', '.join(f'{d:+.3f}' for d in difference)}) | | |", flush=True)


ML, ZUKO = "densitylab CNF, max. likelihood", "zuko CNF, max. likelihood"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--laws", nargs="+", default=None)
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--n-test", type=int, default=100_000)
    parser.add_argument("--ml-steps", type=int, default=300)
    parser.add_argument("--fm-steps", type=int, default=3000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0],
                        help="one run per seed (training and test draws, initialisation, "
                             "batches); with several, each law closes with the means")
    parser.add_argument("--atol", type=float, default=1e-6,
                        help="densitylab's evaluation atol (rtol 1e-5; zuko's, both)")
    parser.add_argument("--train-tol", type=float, default=1e-3,
                        help="densitylab's solves while training, rtol = atol (the CNF "
                             "recipe's); 0: the evaluation's")
    parser.add_argument("--fm-lr", type=float, default=1e-2,
                        help="densitylab's flow-matching rate (the cnf-fm recipe's; maximum "
                             "likelihood keeps 3e-3, the cnf recipe's)")
    parser.add_argument("--ladder", type=int, nargs="*", default=[250, 500, 1000, 2000, 3000],
                        help="flow-matching budgets (steps) tried, smallest first, to reach the "
                             "maximum-likelihood CNF's gap (with that method in the run; "
                             "none: skip)")
    parser.add_argument("--methods", nargs="+", default=None,
                        help="a subset of the methods, by the start of their name")
    args = parser.parse_args()
    torch.set_num_threads(1)
    laws = [d for d in distinct_laws()[0] if args.laws is None or d.name in args.laws]
    methods = {
        ML: lambda x, seed: densitylab_cnf(x, args.ml_steps, seed, "nll", args.atol,
                                           args.train_tol or None),
        ZUKO: lambda x, seed: zuko_cnf(x, args.ml_steps, seed),
        "densitylab CNF, flow matching": lambda x, seed: densitylab_cnf(
            x, args.fm_steps, seed, "flow-matching", args.atol, lr=args.fm_lr),
        "densitylab cnf-fm recipe": recipe("cnf-fm"),
        "densitylab recommended spline (reference)": recipe("recommended"),
    }
    if args.methods is not None:
        methods = {k: v for k, v in methods.items()
                   if any(k.startswith(m) for m in args.methods)}
    reach = "flow matching to max. likelihood's gap"
    ladder = bool(args.ladder) and ML in methods
    print(f"{args.n} training points, {args.n_test:,} test points; max. likelihood "
          f"{args.ml_steps} steps, flow matching {args.fm_steps} steps; one thread; "
          f"seeds {', '.join(map(str, args.seeds))}")
    print("| law | method | gap ± SE (nats) | train (s) | evaluate (s) |")
    print("|---|---|---|---|---|")
    for law in laws:
        gaps: dict[str, list[float]] = {name: [] for name in methods}
        for seed in args.seeds:
            label = law.label if len(args.seeds) == 1 else f"{law.label}, seed {seed}"
            x = law.sample(args.n, seed=seed)
            test = law.sample(args.n_test, seed=seed + 1)
            scored = {}
            for name, train in methods.items():
                start = time.perf_counter()
                log_prob = train(x, seed)
                trained = time.perf_counter() - start
                start = time.perf_counter()
                scored[name] = log_p = log_prob(test)
                evaluated = time.perf_counter() - start
                value, se = gap(log_p, law.entropy())
                gaps[name].append(value)
                print(f"| {label} | {name} | {value:.3f} ± {se:.3f} | {trained:.1f} | "
                      f"{evaluated:.1f} |", flush=True)
            if ladder:
                reached = time_to_reach(x, test, scored[ML], args.ladder, seed, args.atol,
                                        args.fm_lr)
                if reached is None:
                    print(f"| {label} | {reach} | not within {max(args.ladder)} steps | | |")
                else:
                    steps, trained, log_p = reached
                    value, se = gap(log_p, law.entropy())
                    print(f"| {label} | {reach} | {value:.3f} ± {se:.3f} ({steps} steps) | "
                          f"{trained:.1f} | |", flush=True)
        if len(args.seeds) > 1:
            summarize(law, args.seeds, gaps)


if __name__ == "__main__":
    main()

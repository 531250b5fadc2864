"""Continuous normalizing flows: densitylab's CNF (maximum likelihood and flow matching) against
zuko's CNF, on the built-in laws, in one run.

Every CNF: a (64, 64) ELU vector field of ``[x, cos(k pi t), sin(k pi t)]``, ``k = 1..3`` (zuko's
default network, which densitylab's copies), exact divergence, dopri5 evaluated at rtol 1e-5,
atol 1e-6 (zuko's defaults; densitylab's ``--atol``), float32, one thread; densitylab's
maximum-likelihood training solves at rtol = atol = ``--train-tol`` (1e-3, its CNF recipe's;
zuko trains at its evaluation tolerances). The same standardised data
(``--n`` training points), batches of 256, Adam 3e-3 on a cosine schedule. Maximum likelihood:
``--ml-steps`` optimizer steps for both libraries (zuko's in a plain loop, no validation;
densitylab's in its driver, which also validates every epoch on 10% held out and keeps the best
epoch: that time is counted). Flow matching: densitylab's ``--fm-steps`` steps (simulation-free);
``densitylab cnf-fm recipe`` is ``FlowDensity(model="cnf-fm")`` with its own, larger field.
Reported per law: the gap ``test NLL - entropy`` (KL from the truth) ± standard error on
``--n-test`` fresh points, seconds to train, seconds to evaluate those log-densities.
zuko is a benchmark-only extra (``pip install -e ".[bench]"``).

    python benchmarks/cnf.py [--laws moons 8gaussians] [--n 5000] [--n-test 100000]
                             [--methods "densitylab cnf-fm"]
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch

import densitylab as dl
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
                   atol: float = 1e-5, train_tol: float | None = None):
    flow = dl.flows.cnf(2, HIDDEN, atol=atol, train_tol=train_tol, seed=seed)
    epochs = dl.flows.recommended_epochs(len(x), batch_size=BATCH, steps=steps)
    result = dl.fit(flow, x, epochs=epochs, batch_size=BATCH, lr=LR, schedule="cosine",
                    standardize=True, seed=seed, objective=objective, verbose=False)

    def log_prob(points: np.ndarray) -> torch.Tensor:
        with torch.no_grad():
            return result.flow.log_prob(torch.as_tensor(points, dtype=torch.float32))

    return log_prob


def recipe_cnf(x: np.ndarray, seed: int):
    """``FlowDensity(model="cnf-fm")``: the recipe's (128, 128, 128) field with 4 octaves of
    Fourier features of ``x``, 20,000 flow-matching steps (not the same network size as the
    others: what the recipe reaches)."""
    est = dl.FlowDensity(model="cnf-fm", random_state=seed).fit(x)
    return lambda points: torch.as_tensor(est.score_samples(points))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--laws", nargs="+", default=None)
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--n-test", type=int, default=100_000)
    parser.add_argument("--ml-steps", type=int, default=300)
    parser.add_argument("--fm-steps", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--atol", type=float, default=1e-6,
                        help="densitylab's evaluation atol (rtol 1e-5; zuko's, both)")
    parser.add_argument("--train-tol", type=float, default=1e-3,
                        help="densitylab's solves while training, rtol = atol (the CNF "
                             "recipe's); 0: the evaluation's")
    parser.add_argument("--methods", nargs="+", default=None,
                        help="a subset of the methods, by the start of their name")
    args = parser.parse_args()
    torch.set_num_threads(1)
    laws = [d for d in distinct_laws()[0] if args.laws is None or d.name in args.laws]
    methods = {
        "densitylab CNF, max. likelihood": lambda x: densitylab_cnf(
            x, args.ml_steps, args.seed, "nll", args.atol, args.train_tol or None),
        "zuko CNF, max. likelihood": lambda x: zuko_cnf(x, args.ml_steps, args.seed),
        "densitylab CNF, flow matching": lambda x: densitylab_cnf(x, args.fm_steps, args.seed,
                                                                   "flow-matching"),
        "densitylab cnf-fm recipe": lambda x: recipe_cnf(x, args.seed),
    }
    if args.methods is not None:
        methods = {k: v for k, v in methods.items()
                   if any(k.startswith(m) for m in args.methods)}
    print(f"{args.n} training points, {args.n_test:,} test points; max. likelihood "
          f"{args.ml_steps} steps, flow matching {args.fm_steps} steps; one thread")
    print("| law | method | gap ± SE (nats) | train (s) | evaluate (s) |")
    print("|---|---|---|---|---|")
    for law in laws:
        x = law.sample(args.n, seed=args.seed)
        test = law.sample(args.n_test, seed=args.seed + 1)
        for name, train in methods.items():
            start = time.perf_counter()
            log_prob = train(x)
            trained = time.perf_counter() - start
            start = time.perf_counter()
            log_p = log_prob(test)
            evaluated = time.perf_counter() - start
            value, se = gap(log_p, law.entropy())
            print(f"| {law.label} | {name} | {value:.3f} ± {se:.3f} | {trained:.1f} | "
                  f"{evaluated:.1f} |", flush=True)


if __name__ == "__main__":
    main()

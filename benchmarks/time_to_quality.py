"""Time to quality: how fast the recommended model gets within 0.03 nats of the entropy.

Trains ``densitylab.flows.recommended(2)`` with its documented recipe on 10,000 points for a
ladder of epoch budgets (each a complete run, as a user picks a budget; the cosine schedule
depends on it) and reports wall time and test NLL on 20,000 fresh points against the entropy.
The first budget within ``--tolerance`` of the entropy is the time to quality.

    OMP_NUM_THREADS=1 python benchmarks/time_to_quality.py [--data moons] [--epochs 8 12 16 24]
"""

from __future__ import annotations

import argparse
import time

import torch

import densitylab as dl


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="moons")
    parser.add_argument("--epochs", type=int, nargs="+", default=[8, 12, 16, 24])
    parser.add_argument("--tolerance", type=float, default=0.03)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    truth = dl.datasets.get(args.data)
    x, test = truth.sample(10_000, seed=args.seed), truth.sample(20_000, seed=args.seed + 1)
    entropy = truth.entropy()
    print(f"{args.data}: entropy {entropy:.4f}, target test NLL <= {entropy + args.tolerance:.4f}")
    print(f"{'epochs':>6} {'wall s':>7} {'test NLL':>9} {'gap':>7}")
    reached = None
    for epochs in args.epochs:
        flow = dl.flows.recommended(2, seed=args.seed)
        start = time.perf_counter()
        result = dl.fit(flow, x, epochs=epochs, seed=args.seed, verbose=False,
                        **dl.flows.RECOMMENDED_FIT)
        wall = time.perf_counter() - start
        with torch.no_grad():
            nll = -result.flow.log_prob(test).double().mean().item()
        print(f"{epochs:>6} {wall:>7.1f} {nll:>9.4f} {nll - entropy:>7.4f}", flush=True)
        if reached is None and nll - entropy <= args.tolerance:
            reached = (epochs, wall)
    if reached:
        print(f"time to quality: {reached[1]:.1f} s ({reached[0]} epochs)")
    else:
        print("time to quality: not reached with these budgets")


if __name__ == "__main__":
    main()

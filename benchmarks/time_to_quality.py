"""Time to quality: how fast the recommended model gets close to the entropy, alone on one core.

Trains ``densitylab.flows.recommended(2)`` with its documented recipe on 10,000 points for a
ladder of epoch budgets (each a complete run, as a user picks a budget; the cosine schedule
depends on it) and reports wall time and test NLL on 20,000 fresh points against the entropy.
The first budget within ``--tolerance`` of the entropy is the time to quality. ``--data all``
runs every built-in distribution (the ``limits`` experiment trains them 13 at a time; this
measures each alone).

    OMP_NUM_THREADS=1 python benchmarks/time_to_quality.py [--data moons ...|all] [--epochs 8 16]
"""

from __future__ import annotations

import argparse
import time

import torch

import densitylab as dl


def time_to_quality(truth, epochs_ladder: list[int], tolerance: float, seed: int) -> None:
    x, test = truth.sample(10_000, seed=seed), truth.sample(20_000, seed=seed + 1)
    entropy = truth.entropy()
    reached = None
    for epochs in epochs_ladder:
        flow = dl.flows.recommended(2, seed=seed)
        start = time.perf_counter()
        result = dl.fit(flow, x, epochs=epochs, seed=seed, verbose=False,
                        **dl.flows.RECOMMENDED_FIT)
        wall = time.perf_counter() - start
        with torch.no_grad():
            nll = -result.flow.log_prob(test).double().mean().item()
        name = truth.name + "".join(f" {k}={v:g}" for k, v in truth.params.items())
        print(f"{name:<28} {entropy:>7.4f} {epochs:>6} {wall:>7.1f} {nll:>9.4f} "
              f"{nll - entropy:>7.4f}", flush=True)
        if reached is None and nll - entropy <= tolerance:
            reached = (epochs, wall)
    if reached:
        print(f"  time to within {tolerance} nats: {reached[1]:.1f} s ({reached[0]} epochs)")
    else:
        print(f"  not within {tolerance} nats with these budgets")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", nargs="+", default=["moons"],
                        help="built-in names (name:key=value), or all")
    parser.add_argument("--epochs", type=int, nargs="+",
                        default=[8, 12, 16, dl.flows.recommended_epochs(10_000)])
    parser.add_argument("--tolerance", type=float, default=0.03)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    truths = (dl.datasets.catalogue() if args.data == ["all"]
              else [dl.datasets.from_spec(spec) for spec in args.data])
    print(f"{'data':<28} {'entropy':>7} {'epochs':>6} {'wall s':>7} {'test NLL':>9} {'gap':>7}")
    for truth in truths:
        time_to_quality(truth, args.epochs, args.tolerance, args.seed)


if __name__ == "__main__":
    main()

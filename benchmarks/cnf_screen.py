"""Screen one flow-matching CNF setting on one law: what moves the gap to the entropy.

Trains ``dl.flows.cnf(2, --hidden, fourier=--fourier)`` by flow matching on 5,000 points
(standardised, batches of --batch, Adam --lr on a cosine schedule, --steps optimizer steps,
optionally a per-epoch moving average of the weights, --ema) and prints the gap
``test NLL - entropy`` ± standard error on --n-test fresh points, scored in float32 at the
solver's tolerance --rtol, with the seconds to train and to score. ``--keep-best`` keeps the
epoch of lowest validation flow-matching loss (what the objective did before it kept the last
epoch), to measure that choice; ``--time-power`` and ``--sigma-min`` set how the objective
draws times and how far its paths stop short of the data.

    python benchmarks/cnf_screen.py moons 10000 --fourier 4 [--lr 1e-2] [--keep-best]
"""

from __future__ import annotations

import argparse
import math
import time

import torch

import densitylab as dl
from densitylab.training.flow_matching import FlowMatching


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("law")
    parser.add_argument("steps", type=int)
    parser.add_argument("--hidden", type=int, nargs="+", default=[128, 128, 128])
    parser.add_argument("--fourier", type=int, default=0)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--ema", type=float, default=None)
    parser.add_argument("--rtol", type=float, default=1e-5)
    parser.add_argument("--n-test", type=int, default=5000)
    parser.add_argument("--keep-best", action="store_true")
    parser.add_argument("--time-power", type=float, default=FlowMatching.time_power,
                        help="t drawn with density p t^(p-1); 1: uniform")
    parser.add_argument("--sigma-min", type=float, default=FlowMatching.sigma_min)
    args = parser.parse_args()
    torch.set_num_threads(1)
    FlowMatching.keep_best = args.keep_best
    FlowMatching.time_power, FlowMatching.sigma_min = args.time_power, args.sigma_min
    law = dl.datasets.get(args.law)
    x, test = law.sample(5000, seed=0), law.sample(args.n_test, seed=1)
    flow = dl.flows.cnf(2, tuple(args.hidden), fourier=args.fourier, rtol=args.rtol,
                        atol=args.rtol, seed=0)
    epochs = dl.flows.recommended_epochs(len(x), batch_size=args.batch, steps=args.steps)
    start = time.perf_counter()
    result = dl.fit(flow, x, epochs=epochs, batch_size=args.batch, lr=args.lr,
                    schedule="cosine", standardize=True, ema=args.ema, seed=0,
                    objective="flow-matching", verbose=False)
    trained = time.perf_counter() - start
    start = time.perf_counter()
    with torch.no_grad():
        log_p = result.flow.log_prob(torch.as_tensor(test, dtype=torch.float32)).double()
    scored = time.perf_counter() - start
    gap = -log_p.mean().item() - law.entropy()
    se = log_p.std().item() / math.sqrt(len(log_p))
    print(f"{args.law} {args.steps} steps {vars(args)}: gap {gap:.3f} ± {se:.3f}, train "
          f"{trained:.1f} s, score {scored:.1f} s, kept epoch {result.best_epoch}/{epochs}")


if __name__ == "__main__":
    main()

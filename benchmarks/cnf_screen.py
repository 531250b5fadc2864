"""Screen one flow-matching CNF setting on one law: what moves the gap to the entropy.

Trains ``dl.flows.cnf(2, --hidden, fourier=--fourier)`` by flow matching on 5,000 points
(standardised, batches of --batch, Adam --lr on a cosine schedule, --steps optimizer steps,
optionally a per-epoch moving average of the weights, --ema) and prints the gap
``test NLL - entropy`` ± standard error on --n-test fresh points, scored in float32 at the
solver's tolerance --rtol, with the seconds to train and to score. ``--keep-best`` keeps the
epoch of lowest validation flow-matching loss (what the objective did before it kept the last
epoch), to measure that choice; ``--time-power`` and ``--sigma-min`` set how the objective
draws times and how far its paths stop short of the data; ``--objective ot-flow-matching``
pairs base draws with points by minimal transport cost in blocks of ``--block`` rows;
``--finetune STEPS`` then trains the result by maximum likelihood (``--finetune-lr``, training
solves at rtol = atol = 1e-3) and scores it again. The gap on the first 5,000 training points
is printed beside the test gap, to tell overfitting from underfitting.

    python benchmarks/cnf_screen.py moons 10000 --fourier 4 [--lr 1e-2] [--keep-best]
    python benchmarks/cnf_screen.py 2spirals 10000 --fourier 4 --lr 1e-2 \
        --objective ot-flow-matching --batch 1024 --block 128      # the cnf-fm recipe
"""

from __future__ import annotations

import argparse
import math
import time

import torch

import densitylab as dl
from densitylab.training import flow_matching
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
    parser.add_argument("--objective", default="flow-matching",
                        choices=("flow-matching", "ot-flow-matching"))
    parser.add_argument("--block", type=int, default=flow_matching.PAIR_BLOCK,
                        help="rows per optimal assignment (ot-flow-matching)")
    parser.add_argument("--n", type=int, default=5000, help="training points")
    parser.add_argument("--finetune", type=int, default=0,
                        help="maximum-likelihood steps after flow matching (0: none)")
    parser.add_argument("--finetune-lr", type=float, default=1e-3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    FlowMatching.keep_best = args.keep_best
    FlowMatching.time_power, FlowMatching.sigma_min = args.time_power, args.sigma_min
    flow_matching.PAIR_BLOCK = args.block
    law = dl.datasets.get(args.law)
    x, test = law.sample(args.n, seed=0), law.sample(args.n_test, seed=1)
    flow = dl.flows.cnf(2, tuple(args.hidden), fourier=args.fourier, rtol=args.rtol,
                        atol=args.rtol, seed=0)
    epochs = dl.flows.recommended_epochs(len(x), batch_size=args.batch, steps=args.steps)
    start = time.perf_counter()
    result = dl.fit(flow, x, epochs=epochs, batch_size=args.batch, lr=args.lr,
                    schedule="cosine", standardize=True, ema=args.ema, seed=0,
                    objective=args.objective, verbose=False)
    trained = time.perf_counter() - start
    print(f"{args.law} {args.steps} steps {vars(args)}: {_scores(result.flow, law, x, test)}, "
          f"train {trained:.1f} s, kept epoch {result.best_epoch}/{epochs}", flush=True)
    if args.finetune:
        result.flow.transforms[-1].train_tol = 1e-3
        epochs = dl.flows.recommended_epochs(len(x), batch_size=256, steps=args.finetune)
        start = time.perf_counter()
        tuned = dl.fit(result.flow, x, epochs=epochs, batch_size=256, lr=args.finetune_lr,
                       schedule="cosine", seed=1, verbose=False)
        trained = time.perf_counter() - start
        print(f"  then {args.finetune} maximum-likelihood steps: "
              f"{_scores(tuned.flow, law, x, test)}, train {trained:.1f} s, kept epoch "
              f"{tuned.best_epoch}/{epochs}")


def _scores(flow, law, x, test) -> str:
    """Test gap ± standard error, the gap on (at most 5,000) training points, scoring time."""
    start = time.perf_counter()
    with torch.no_grad():
        log_p = flow.log_prob(torch.as_tensor(test, dtype=torch.float32)).double()
        train = flow.log_prob(torch.as_tensor(x[:5000], dtype=torch.float32)).double()
    scored = time.perf_counter() - start
    gap = -log_p.mean().item() - law.entropy()
    se = log_p.std().item() / math.sqrt(len(log_p))
    return (f"gap {gap:.3f} ± {se:.3f} (training points {-train.mean().item() - law.entropy():.3f})"
            f", score {scored:.1f} s")


if __name__ == "__main__":
    main()

"""Test NLL of RealNVP on moons: the coursework configuration and variants of it.

The coursework configuration: ``make_moons(1500, noise=0.1, random_state=0)`` split 90/10
into train/validation, RealNVP with 4 affine couplings (alternating masks, separate s and t
MLPs 2->32->32->2, LeakyReLU), Adam lr 1e-3, batch 64, 1000 epochs, best model by
validation NLL. Test NLL is the mean over ``make_moons(20000, noise=0.1, random_state=1)``;
the true entropy of moons (noise 0.1) is about 1.0076 nats, the floor any model can reach.

Every variant changes initialisation, conditioner layout or optimisation details only; the
sizes and the budget stay. A variant's seeds train together in one ``fit_many`` call; seed
``s`` seeds the initialisation, the validation split and the batch order.

    OMP_NUM_THREADS=1 python benchmarks/quality_moons.py --epochs 300 --variants baseline tanh
"""

from __future__ import annotations

import argparse
import statistics

import torch
from sklearn.datasets import make_moons

import densitylab
from densitylab.flows import realnvp

ENTROPY = 1.0076  # true differential entropy of make_moons(noise=0.1), in nats

# name -> (realnvp() arguments, fit() arguments), each on top of the coursework configuration
VARIANTS: dict[str, tuple[dict, dict]] = {
    "baseline": ({}, {}),
    "tanh": ({"scale": "tanh"}, {}),
    "zero-init": ({"zero_init": True}, {}),
    "standardize": ({}, {"standardize": True}),
    "cosine": ({}, {"schedule": "cosine"}),
    "clip": ({}, {"clip_grad": 1.0}),
    "shared-net": ({"separate_nets": False}, {}),
    "shared-net+cosine": ({"separate_nets": False}, {"schedule": "cosine"}),
    "tanh+cosine": ({"scale": "tanh"}, {"schedule": "cosine"}),
    "tanh+zero-init+cosine": ({"scale": "tanh", "zero_init": True}, {"schedule": "cosine"}),
    "tanh+standardize+cosine": ({"scale": "tanh"}, {"standardize": True, "schedule": "cosine"}),
    # tanh in the s and t networks instead of LeakyReLU: bounded, smooth conditioners
    "tanh-act": ({"activation": "tanh"}, {}),
    "tanh+tanh-act": ({"scale": "tanh", "activation": "tanh"}, {}),
    "tanh+tanh-act+cosine": ({"scale": "tanh", "activation": "tanh"}, {"schedule": "cosine"}),
    # exponential moving average of the weights (per epoch), validated and returned
    "ema": ({}, {"ema": 0.9}),
    "ema-0.98": ({}, {"ema": 0.98}),
    "tanh+tanh-act+ema": ({"scale": "tanh", "activation": "tanh"}, {"ema": 0.9}),
    "shared-net+tanh+tanh-act+ema": (
        {"separate_nets": False, "scale": "tanh", "activation": "tanh"}, {"ema": 0.9}),
    "tanh+tanh-act+cosine+ema": (
        {"scale": "tanh", "activation": "tanh"}, {"schedule": "cosine", "ema": 0.9}),
    "tanh+tanh-act+standardize+ema": (
        {"scale": "tanh", "activation": "tanh"}, {"standardize": True, "ema": 0.9}),
    "tanh+tanh-act+zero-init+ema": (
        {"scale": "tanh", "activation": "tanh", "zero_init": True}, {"ema": 0.9}),
    "tanh+tanh-act+clip+ema": (
        {"scale": "tanh", "activation": "tanh"}, {"clip_grad": 1.0, "ema": 0.9}),
    "shared-net+tanh": ({"separate_nets": False, "scale": "tanh"}, {}),
    "shared-net+tanh-act": ({"separate_nets": False, "activation": "tanh"}, {}),
    "shared-net+tanh+tanh-act": (
        {"separate_nets": False, "scale": "tanh", "activation": "tanh"}, {}),
}


def run_variant(name: str, seeds: list[int], epochs: int, x, x_test) -> dict:
    """Train one variant for every seed at once: per-seed test NLL and best epoch, and the
    worst single test point's NLL (large values: the density collapses at the data's edge)."""
    flow_args, fit_args = VARIANTS[name]
    flows = [realnvp(2, 4, (32, 32), seed=s, **flow_args) for s in seeds]
    results = densitylab.fit_many(
        flows, x, epochs=epochs, batch_size=64, lr=1e-3, val_fraction=0.1, seed=seeds,
        verbose=False, **fit_args,
    )  # fmt: skip
    with torch.no_grad():
        point_nll = [-r.flow.log_prob(x_test) for r in results]
    return {
        "nll": [float(p.mean()) for p in point_nll],
        "worst": max(float(p.max()) for p in point_nll),
        "best_epoch": [r.best_epoch for r in results],
        "stop": [r.stop_reason for r in results],
        "wall": results[0].wall_time,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=1000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument(
        "--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS), metavar="NAME",
        help=f"any of: {', '.join(VARIANTS)} (default: all)",
    )  # fmt: skip
    args = parser.parse_args()
    torch.set_num_threads(1)

    x, _ = make_moons(1500, noise=0.1, random_state=0)
    x_test = torch.as_tensor(make_moons(20000, noise=0.1, random_state=1)[0], dtype=torch.float32)

    print(f"moons, RealNVP K=4 (32, 32), batch 64, Adam 1e-3, {args.epochs} epochs")
    print(
        f"{'variant':<26} {'seeds':>5} {'test NLL':>17} {'gap':>7} {'best ep':>8} {'wall s':>7}"
        f" {'worst pt':>8}  per-seed NLL"
    )
    for name in args.variants:
        r = run_variant(name, args.seeds, args.epochs, x, x_test)
        mean = statistics.mean(r["nll"])
        std = statistics.stdev(r["nll"]) if len(r["nll"]) > 1 else 0.0
        epoch = statistics.mean(r["best_epoch"])
        per_seed = " ".join(f"{v:.3f}" for v in r["nll"])
        flags = "" if set(r["stop"]) == {"completed"} else f"  ({', '.join(r['stop'])})"
        print(
            f"{name:<26} {len(args.seeds):>5} {mean:>8.4f} ± {std:<6.4f} {mean - ENTROPY:>7.4f} "
            f"{epoch:>8.0f} {r['wall']:>7.1f} {r['worst']:>8.1f}  {per_seed}{flags}",
            flush=True,
        )


if __name__ == "__main__":
    main()

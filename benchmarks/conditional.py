"""Conditional density estimation on a law with a known conditional entropy, against zuko.

``y | c ~ N(sin 3c, (0.1 + 0.2 c^2)^2)`` with ``c ~ U(-1, 1)``: the exact conditional entropy
``E_c[0.5 log(2 pi e sigma(c)^2)]`` is the lowest expected test NLL any model can reach. Every
model trains on the same ``--n`` points with the same budget (epochs, batches of 256, Adam 3e-3
on a cosine schedule, the best of the validation checks kept for densitylab; zuko's loop keeps
its final weights, as its tutorials do), one thread, and is scored on 20,000 fresh points.

Models: densitylab's ``maf(1, context=1)`` (affine MADE layers) and ``nsf(1, context=1)``
(context-conditioned splines), and zuko's ``NSF(1, context=1)`` of the same depth and width.

    OMP_NUM_THREADS=1 python benchmarks/conditional.py [--n 5000] [--epochs 60] [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch

import densitylab as dl

LAYERS, HIDDEN, BATCH, LR = 3, (64, 64), 256, 3e-3


def draw(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    c = rng.uniform(-1.0, 1.0, size=(n, 1))
    return np.sin(3 * c) + (0.1 + 0.2 * c**2) * rng.normal(size=(n, 1)), c


def conditional_entropy(c: np.ndarray) -> float:
    return float(np.mean(0.5 * np.log(2 * math.pi * math.e * (0.1 + 0.2 * c**2) ** 2)))


def densitylab_nll(flow, y, c, y_test, c_test, epochs: int, seed: int) -> float:
    result = dl.fit(flow, y, context=c, epochs=epochs, batch_size=BATCH, lr=LR,
                    schedule="cosine", standardize=True, seed=seed, verbose=False)
    with torch.no_grad():
        return -result.flow.log_prob(y_test, c_test).double().mean().item()


def zuko_nll(y, c, y_test, c_test, epochs: int, seed: int) -> float:
    import zuko

    torch.manual_seed(seed)
    flow = zuko.flows.NSF(1, context=1, transforms=LAYERS, hidden_features=HIDDEN)
    mean, std = y.mean(0), y.std(0)  # the same standardisation, its log-det added back
    y_t = torch.as_tensor((y - mean) / std, dtype=torch.float32)
    c_t = torch.as_tensor(c, dtype=torch.float32)
    optimizer = torch.optim.Adam(flow.parameters(), lr=LR)
    steps = epochs * math.ceil(len(y_t) / BATCH)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for index in torch.randperm(len(y_t), generator=generator).split(BATCH):
            loss = -flow(c_t[index]).log_prob(y_t[index]).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    with torch.no_grad():
        y_eval = torch.as_tensor((y_test - mean) / std, dtype=torch.float32)
        log_p = flow(torch.as_tensor(c_test, dtype=torch.float32)).log_prob(y_eval).double()
    return -(log_p.mean().item() - float(np.log(std).sum()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    torch.set_num_threads(1)
    y_test, c_test = draw(20_000, 999)
    entropy = conditional_entropy(c_test)
    models = {
        "densitylab maf (affine)": lambda y, c, s: densitylab_nll(
            dl.flows.maf(1, n_layers=LAYERS, hidden=HIDDEN, context=1, seed=s), y, c, y_test,
            c_test, args.epochs, s),
        "densitylab nsf": lambda y, c, s: densitylab_nll(
            dl.flows.nsf(1, n_layers=LAYERS, hidden=HIDDEN, bins=8, context=1, seed=s), y, c,
            y_test, c_test, args.epochs, s),
        "zuko NSF": lambda y, c, s: zuko_nll(y, c, y_test, c_test, args.epochs, s),
    }
    print(f"conditional entropy {entropy:.4f} nats; {args.n} training points, "
          f"{args.epochs} epochs, seeds {args.seeds}")
    print("| model | test NLL (mean over seeds) | gap to the entropy | seconds per fit |")
    print("|---|---|---|---|")
    for name, run in models.items():
        nlls, seconds = [], []
        for seed in args.seeds:
            y, c = draw(args.n, seed)
            start = time.perf_counter()
            nlls.append(run(y, c, seed))
            seconds.append(time.perf_counter() - start)
        print(f"| {name} | {np.mean(nlls):.4f} ± {np.std(nlls, ddof=1) / math.sqrt(len(nlls)):.4f}"
              f" | {np.mean(nlls) - entropy:+.4f} | {np.mean(seconds):.1f} |", flush=True)


if __name__ == "__main__":
    main()

"""Masked autoregressive flows: densitylab's MAF against zuko's on the same architecture.

Both flows: ``transforms`` affine MADE layers with (64, 64) hidden units and LeakyReLU, the
order reversed between layers (zuko's default for MAF), in float32. Measured: ``log_prob`` of
``--points`` standard-normal points in evaluation mode, and sampling the same number (one
pass per coordinate for a MAF in both libraries), best of ``--repeats``, one thread by default.
zuko is a benchmark-only extra (``pip install -e ".[bench]"``).

    python benchmarks/bench_maf.py [--dims 2 8] [--points 1000000] [--threads 1]
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

import densitylab as dl

TRANSFORMS, HIDDEN = 5, (64, 64)


def best_time(function, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    import zuko

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dims", type=int, nargs="+", default=[2, 8])
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--samples", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"| D | log_prob densitylab (s) | log_prob zuko (s) | ratio | sample densitylab (s) "
          f"| sample zuko (s) | ratio |  ({args.points:,} points, {args.samples:,} samples, "
          f"{args.threads} thread(s))")
    print("|---|---|---|---|---|---|---|")
    for dim in args.dims:
        ours = dl.flows.maf(dim, n_layers=TRANSFORMS, hidden=HIDDEN, seed=0).eval()
        theirs = zuko.flows.MAF(dim, transforms=TRANSFORMS, hidden_features=HIDDEN,
                                activation=nn.LeakyReLU)
        x = torch.randn(args.points, dim, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            ours_lp = best_time(lambda x=x, f=ours: f.log_prob(x), args.repeats)
            theirs_lp = best_time(lambda x=x, f=theirs: f().log_prob(x), args.repeats)
            ours_s = best_time(lambda f=ours: f.sample(args.samples, seed=0), args.repeats)
            theirs_s = best_time(lambda f=theirs: f().sample((args.samples,)), args.repeats)
        print(f"| {dim} | {ours_lp:.3f} | {theirs_lp:.3f} | {theirs_lp / ours_lp:.2f}x "
              f"| {ours_s:.3f} | {theirs_s:.3f} | {theirs_s / ours_s:.2f}x |", flush=True)


if __name__ == "__main__":
    main()

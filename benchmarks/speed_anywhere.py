"""Speed where users run it: the default environment (no thread variables), on a machine with
and without one other CPU-bound process, beside ``OMP_NUM_THREADS=1`` and zuko in the same
conditions, in one run.

Each condition runs in a fresh process (thread variables act at start-up):

* ``default``: the environment without ``OMP_NUM_THREADS``, ``OPENBLAS_NUM_THREADS``,
  ``MKL_NUM_THREADS`` and ``NUMBA_NUM_THREADS``, as a user's shell or notebook has it;
* ``OMP=1``: ``OMP_NUM_THREADS=1``;

each once with the machine as it is ("idle": nothing of ours beside it) and once beside one
background process spinning a core (``python -c "while True: pass"``, started before the
timed process and stopped after it). Rows, each timed after one untimed warm-up call:

* spline flow: ``dl.fit(dl.flows.nsf(2, 6, (64, 64), bins=10), x, standardize=True,
  batch_size=256, lr=3e-3)`` on ``make_moons(10000, noise=0.1)``, seconds per epoch;
* zuko NSF: ``zuko.flows.NSF(2, transforms=6, hidden_features=(64, 64), bins=10)``, a plain Adam
  loop over the same 9,000 points in batches of 256 plus a validation pass, seconds per epoch
  (the steps timed over the first 12 batches and scaled to the epoch's 36);
* RealNVP: ``dl.fit(dl.flows.realnvp(2), x)`` (the coursework: 4 layers of (32, 32), batches of
  64) on 1,500 moons points, seconds per epoch; zuko RealNVP: ``zuko.flows.RealNVP(2,
  transforms=4, hidden_features=(32, 32))`` in the same loop;
* KDE: ``dl.KDE(bandwidth="cv").fit(x)`` on 5,000 moons points, then ``score_samples`` of
  20,000 points, seconds;
* AutoDensity: ``dl.AutoDensity(random_state=0).fit(z)`` (default candidates: KDE, Gaussian
  mixture, tabular flow, tabular MAF; 3 folds) on the first 800 rows of scikit-learn's digits
  projected on 8 principal components, seconds.

The load average is printed before and after every condition: the machine may be shared.

    python benchmarks/speed_anywhere.py               # 2-4 minutes on a 2-core machine
    python benchmarks/speed_anywhere.py --src OTHER/src --only default   # another checkout's
                                                      # code, default environment only
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap
import time

THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                    "NUMBA_NUM_THREADS")

CHILD = textwrap.dedent(
    """
    import json, sys, time
    import numpy as np
    import torch
    import zuko
    from sklearn.datasets import load_digits, make_moons
    from sklearn.decomposition import PCA
    import densitylab as dl

    SPLINE_EPOCHS, REALNVP_EPOCHS, ZUKO_BATCHES = 5, 10, 12
    moons = make_moons(10_000, noise=0.1, random_state=0)[0]
    small = moons[:1500]
    digits = PCA(8, random_state=0).fit_transform(load_digits().data[:800])
    queries = make_moons(20_000, noise=0.1, random_state=1)[0]

    def timed(fn):
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start

    def spline(epochs):
        dl.fit(dl.flows.nsf(2, 6, (64, 64), bins=10, seed=0), moons, epochs=epochs,
               batch_size=256, lr=3e-3, standardize=True, verbose=False)

    def realnvp(epochs):
        dl.fit(dl.flows.realnvp(2, seed=0), small, epochs=epochs, verbose=False)

    def zuko_loop(flow, x, batch):
        # seconds per epoch of a plain Adam loop, from its first ZUKO_BATCHES batches and a
        # validation pass (zuko is slow enough on a busy machine that whole epochs would take
        # minutes)
        x = torch.as_tensor(x, dtype=torch.float32)
        train, val = x[: int(0.9 * len(x))], x[int(0.9 * len(x)):]
        optimizer = torch.optim.Adam(flow.parameters(), lr=1e-3)
        order = torch.randperm(len(train), generator=torch.Generator().manual_seed(8))
        batches = order.split(batch)
        start = time.perf_counter()
        for index in batches[:ZUKO_BATCHES]:
            loss = -flow().log_prob(train[index]).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        steps = (time.perf_counter() - start) * len(batches) / ZUKO_BATCHES
        start = time.perf_counter()
        with torch.no_grad():
            flow().log_prob(val).mean().item()
        return steps + time.perf_counter() - start

    def zuko_nsf():
        flow = zuko.flows.NSF(2, transforms=6, hidden_features=(64, 64), bins=10)
        return zuko_loop(flow, moons, 256)

    def zuko_realnvp():
        flow = zuko.flows.RealNVP(2, transforms=4, hidden_features=(32, 32),
                                  activation=torch.nn.LeakyReLU)
        return zuko_loop(flow, small, 64)

    def kde():
        dl.KDE(bandwidth="cv").fit(moons[:5000]).score_samples(queries)

    def auto():
        dl.AutoDensity(random_state=0).fit(digits)

    rows = {
        "spline flow, s/epoch": (spline, SPLINE_EPOCHS),
        "zuko NSF, s/epoch": (zuko_nsf, "zuko"),
        "RealNVP, s/epoch": (realnvp, REALNVP_EPOCHS),
        "zuko RealNVP, s/epoch": (zuko_realnvp, "zuko"),
        "KDE cv fit + 20k scores, s": (kde, None),
        "AutoDensity 800 rows, s": (auto, None),
    }
    results = {}
    for name, (fn, epochs) in rows.items():
        if epochs is None:
            fn()  # warm-up: compiled code loaded from the cache, first-call costs
            results[name] = timed(fn)
        elif epochs == "zuko":  # its own clock (see zuko_loop)
            fn()
            results[name] = fn()
        else:
            fn(1)
            results[name] = timed(lambda: fn(epochs)) / epochs
        print(json.dumps({name: results[name]}), file=sys.stderr, flush=True)
    print(json.dumps(results))
    """
)


def load() -> float:
    return os.getloadavg()[0]


def condition(src: str, omp1: bool, background: bool) -> dict:
    """One condition in a fresh process; the background spinner, if any, is ours to stop."""
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARIABLES}
    env["PYTHONPATH"] = src
    if omp1:
        env["OMP_NUM_THREADS"] = "1"
    spinner = (subprocess.Popen([sys.executable, "-c", "while True: pass"])
               if background else None)
    before = load()
    start = time.perf_counter()
    try:
        out = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True,
                             text=True, check=True).stdout
    finally:
        if spinner is not None:
            spinner.kill()
            spinner.wait()
    return {"rows": json.loads(out.strip().splitlines()[-1]), "load": (before, load()),
            "seconds": time.perf_counter() - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--src", default=os.path.join(os.path.dirname(__file__), "..", "src"),
                        help="the densitylab source directory to time (default: this checkout)")
    parser.add_argument("--only", choices=("default", "all"), default="all",
                        help="'default': only the two default-environment conditions")
    args = parser.parse_args()
    conditions = {
        "default, idle": (False, False), "default, +1 busy": (False, True),
        "OMP=1, idle": (True, False), "OMP=1, +1 busy": (True, True),
    }
    if args.only == "default":
        conditions = {k: v for k, v in conditions.items() if not v[0]}
    results = {}
    for label, (omp1, background) in conditions.items():
        results[label] = condition(os.path.abspath(args.src), omp1, background)
        r = results[label]
        print(f"{label}: {r['seconds']:.0f} s, load {r['load'][0]:.2f} -> {r['load'][1]:.2f}",
              file=sys.stderr, flush=True)
    labels = list(conditions)
    rows = list(results[labels[0]]["rows"])
    paired = [c for c in ("idle", "+1 busy") if f"OMP=1, {c}" in results]
    print(f"cores: {len(os.sched_getaffinity(0))}; src: {os.path.abspath(args.src)}")
    print("| row | " + " | ".join(labels) + "".join(f" | default / OMP=1, {c}" for c in paired)
          + (" | default +1 busy / OMP=1 idle |" if paired else " |"))
    print("|---|" + "---:|" * (len(labels) + len(paired) + bool(paired)))
    for row in rows:
        values = [results[c]["rows"][row] for c in labels]
        ratios = [results[f"default, {c}"]["rows"][row] / results[f"OMP=1, {c}"]["rows"][row]
                  for c in paired]
        if paired:
            ratios.append(results["default, +1 busy"]["rows"][row]
                          / results["OMP=1, idle"]["rows"][row])
        print(f"| {row} | " + " | ".join(f"{v:.3f}" for v in values)
              + "".join(f" | {r:.2f}x" for r in ratios) + " |")
    blank = " |" * (len(paired) + bool(paired))
    for label, zuko in (("spline flow", "zuko NSF"), ("RealNVP", "zuko RealNVP")):
        speedups = [results[c]["rows"][f"{zuko}, s/epoch"] / results[c]["rows"][f"{label}, s/epoch"]
                    for c in labels]
        print(f"| {label}: zuko's time / ours | " + " | ".join(f"{s:.1f}x" for s in speedups)
              + blank)
    print("| load average (1 min) before -> after | "
          + " | ".join(f"{results[c]['load'][0]:.2f} -> {results[c]['load'][1]:.2f}"
                       for c in labels) + blank)


if __name__ == "__main__":
    main()

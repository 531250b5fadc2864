"""How far one machine goes: fit and KDE wall times and peak memory as N and D grow.

Each case runs in a fresh process (so peak RSS is its own) and prints one table row; a case
that exceeds its time budget is reported as such. Also times one epoch of data-parallel
training over two gloo processes against one process on the same global batches.

Then the compiled engines against zuko, side by side in one process on one thread (``--only
speed`` runs just this part; ``--rounds`` repeats each measurement, implementations
alternating, and every number is printed with its range over the rounds):

* spline flow training per epoch (training pass plus validation): densitylab's NSF (6 couplings
  of (64, 64) networks, 10 bins; plain and with the recommended model's 3 Fourier octaves),
  compiled and torch engines, against ``zuko.flows.NSF(2, transforms=6, hidden_features=(64,
  64), bins=10)`` trained by a plain Adam loop, on ``make_moons(10000, noise=0.1)`` (9,000
  training points), batches of 256;
* ``log_prob`` of 10^6 points (no gradients) of the same models;
* sampling 10^6 points from the same models;
* the recommended recipe's full fit on the 10,000 points (``dl.flows.recommended(2)``,
  ``RECOMMENDED_FIT``, ``recommended_epochs(10000)`` epochs);
* model selection's folds: ``FlowDensity`` (the tabular spline flow, compiled engine; and the
  tabular MAF, torch engine) on the 1,797 digits projected on 15 principal components and
  standardised, one fold's training set alone against the 3 folds of ``AutoDensity`` trained
  together (``fit_together``);
* the coursework RealNVP per epoch against zuko, the job of ``benchmarks/bench_flows.py``.

The one-time numba compilation is measured apart, in a child process with an empty
``NUMBA_CACHE_DIR``; the timed process loads the compiled code from the on-disk cache in a
warm-up before anything is timed.

    python benchmarks/scale.py            # ~15 minutes on a 2-core laptop
    python benchmarks/scale.py --only speed --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time

BUDGET_S = 300

CASE = textwrap.dedent(
    """
    import json, resource, sys, time
    import numpy as np
    import densitylab as dl

    kind, n, d, extra = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, d)) * rng.uniform(0.5, 2.0, d)
    start = time.perf_counter()
    if kind == "fit":
        flow = dl.flows.realnvp(dim=d, n_layers=4, hidden=(64, 64), seed=0)
        epochs = int(extra)
        dl.fit(flow, x, epochs=epochs, batch_size=4096, lr=1e-3, verbose=False)
        per = (time.perf_counter() - start) / epochs
        what = f"{per:.2f} s/epoch"
    else:
        kde = dl.KDE(bandwidth="scott").fit(x)
        kde.score_samples(rng.standard_normal((int(extra), d)))
        what = f"{int(extra)} queries"
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": time.perf_counter() - start, "what": what, "peak_mb": peak}))
    """
)

DDP_EPOCH = textwrap.dedent(
    """
    import json, sys, time
    import numpy as np
    import densitylab as dl
    from densitylab import distributed

    x = np.random.default_rng(0).standard_normal((int(sys.argv[1]), 2))
    flow = dl.flows.realnvp(dim=2, n_layers=4, hidden=(64, 64), seed=0)

    def run(parallel):
        start = time.perf_counter()
        dl.fit(flow, x, epochs=2, batch_size=8192, engine="torch", distributed=parallel,
               verbose=False)
        return (time.perf_counter() - start) / 2

    if distributed.launched_by_torchrun():
        with distributed.process_group():
            seconds = run(True)
            if distributed.rank() == 0:
                print(json.dumps({"seconds": seconds}))
    else:
        print(json.dumps({"seconds": run(False)}))
    """
)

SPEED = textwrap.dedent(
    """
    import json, os, statistics, sys, time
    import numpy as np
    import torch
    from sklearn.datasets import load_digits, make_moons
    from sklearn.decomposition import PCA
    import densitylab as dl
    from densitylab.auto import equal_folds

    torch.set_num_threads(1)
    sys.path.insert(0, sys.argv[2])  # benchmarks/: the coursework job of bench_flows.py
    import bench_flows
    import zuko

    rounds = int(sys.argv[1])
    EPOCHS, N_LOG_PROB = 5, 1_000_000
    x = make_moons(10_000, noise=0.1, random_state=0)[0]
    n_val = 1000
    order = np.random.default_rng(8).permutation(len(x))
    x_train = torch.as_tensor(x[np.sort(order[n_val:])], dtype=torch.float32)
    x_val = torch.as_tensor(x[np.sort(order[:n_val])], dtype=torch.float32)
    points = torch.randn(N_LOG_PROB, 2, generator=torch.Generator().manual_seed(0))
    results = {}

    # (wall, cpu) seconds: on a busy machine the process's CPU time is what this one-thread
    # job would take alone; the wall time includes waiting for a core
    def record(name, value):
        results.setdefault(name, []).append(value)

    def clocks():
        return time.perf_counter(), time.process_time()

    def since(start):
        wall, cpu = clocks()
        return wall - start[0], cpu - start[1]

    def dl_epoch(fourier, engine):
        flow = dl.flows.nsf(2, 6, (64, 64), bins=10, fourier=fourier, seed=0)
        start = clocks()
        fit = dl.fit(flow, x, epochs=EPOCHS, batch_size=256, lr=3e-3, schedule="cosine",
                     standardize=True, verbose=False, engine=engine)
        wall, cpu = since(start)
        return (wall / EPOCHS, cpu / EPOCHS), fit.flow

    def zuko_nsf():
        return zuko.flows.NSF(2, transforms=6, hidden_features=(64, 64), bins=10)

    def zuko_epoch(flow):
        optimizer = torch.optim.Adam(flow.parameters(), lr=3e-3)
        generator = torch.Generator().manual_seed(8)
        start = clocks()
        for _ in range(EPOCHS):
            for index in torch.randperm(len(x_train), generator=generator).split(256):
                loss = -flow().log_prob(x_train[index]).mean()
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            with torch.no_grad():
                flow().log_prob(x_val).mean().item()
        wall, cpu = since(start)
        return wall / EPOCHS, cpu / EPOCHS

    def timed(fn):
        start = clocks()
        with torch.no_grad():
            fn()
        return since(start)

    def recommended_fit():
        from densitylab.flows.builders import RECOMMENDED_FIT, recommended_epochs
        start = clocks()
        dl.fit(dl.flows.recommended(2), x, epochs=recommended_epochs(len(x)),
               **RECOMMENDED_FIT, verbose=False)
        return since(start)

    coursework = bench_flows.load_data()
    digits = PCA(15, random_state=0).fit_transform(load_digits().data)
    digits = (digits - digits.mean(axis=0)) / digits.std(axis=0)
    folds = [digits[train] for train, _ in equal_folds(len(digits), 3, seed=0)]

    def fold_fits(model):
        start = clocks()
        dl.FlowDensity(model=model, random_state=0).fit(folds[0])
        alone = since(start)
        start = clocks()
        dl.FlowDensity(model=model, random_state=0).fit_together(folds)
        return alone, since(start)

    def realnvp_epoch(name):
        start = clocks()
        bench_flows.train(name, coursework, 50, 1)
        wall, cpu = since(start)
        return wall / 50, cpu / 50

    dl_epoch(3, "compiled")  # warm-up: loads the compiled code from the cache
    realnvp_epoch("densitylab compiled")
    for _ in range(rounds):
        flows = {}
        for fourier in (0, 3):
            seconds, flows[fourier] = dl_epoch(fourier, "compiled")
            record(f"nsf{fourier} compiled s/epoch", seconds)
            record(f"nsf{fourier} torch s/epoch", dl_epoch(fourier, "torch")[0])
        z = zuko_nsf()
        record("zuko nsf s/epoch", zuko_epoch(z))
        record("nsf0 log_prob s", timed(lambda: flows[0].log_prob(points)))
        record("nsf3 log_prob s", timed(lambda: flows[3].log_prob(points)))
        record("zuko nsf log_prob s", timed(lambda: z().log_prob(points)))
        record("nsf0 sample s", timed(lambda: flows[0].sample(N_LOG_PROB, seed=0)))
        record("nsf3 sample s", timed(lambda: flows[3].sample(N_LOG_PROB, seed=0)))
        record("zuko nsf sample s", timed(lambda: z().sample((N_LOG_PROB,))))
        for model in ("tabular", "tabular-maf"):
            alone, together = fold_fits(model)
            record(f"{model} one fold s", alone)
            record(f"{model} 3 folds s", together)
        record("recommended fit s", recommended_fit())
        record("realnvp compiled s/epoch", realnvp_epoch("densitylab compiled"))
        record("zuko realnvp s/epoch", realnvp_epoch("zuko"))
        print(json.dumps({"partial": results}), file=sys.stderr, flush=True)
    print(json.dumps(results))
    """
)

COMPILE_PROBE = textwrap.dedent(
    """
    import time
    import torch
    import densitylab as dl
    from sklearn.datasets import make_moons
    x = make_moons(10_000, noise=0.1, random_state=0)[0]
    start = time.perf_counter()
    flow = dl.fit(dl.flows.recommended(2), x, epochs=1, batch_size=256, standardize=True,
                  verbose=False).flow
    fit = time.perf_counter() - start
    points = torch.randn(100_000, 2, generator=torch.Generator().manual_seed(0))
    start = time.perf_counter()
    with torch.no_grad():  # enough points for the compiled path
        flow.log_prob(points).sum().item()
    print(fit, time.perf_counter() - start)
    """
)

CASES = [
    ("fit", 100_000, 2, "3"),
    ("fit", 1_000_000, 2, "1"),
    ("fit", 100_000, 16, "2"),
    ("fit", 100_000, 64, "1"),
    ("kde", 100_000, 2, "10000"),
    ("kde", 1_000_000, 2, "10000"),
    ("kde", 100_000, 8, "1000"),
    ("kde", 100_000, 32, "1000"),
]


def run_json(command: list[str]) -> dict | None:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=BUDGET_S)
    except subprocess.TimeoutExpired:
        return None
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def span(pairs: list[list[float]]) -> str:
    """``cpu-range (wall wall-range)`` of ``(wall, cpu)`` seconds over the rounds."""
    def one(values: list[float]) -> str:
        low, high = min(values), max(values)
        digits = 3 if high < 10 else 1
        return f"{low:.{digits}f}" if high - low < 0.5 * 10**-digits else \
            f"{low:.{digits}f}-{high:.{digits}f}"

    return f"{one([c for _, c in pairs])} (wall {one([w for w, _ in pairs])})"


def ratio_span(theirs: list[list[float]], ours: list[list[float]]) -> str:
    """Per-round ratios of CPU seconds (implementations alternate within a round), a range."""
    ratios = [a[1] / b[1] for a, b in zip(theirs, ours, strict=True)]
    low, high = f"{min(ratios):.1f}", f"{max(ratios):.1f}"
    return f"{low}x" if low == high else f"{low}-{high}x"


def speed(rounds: int, tmp: str) -> None:
    """The compiled engines against zuko (see the module docstring)."""
    speed_py, probe_py = os.path.join(tmp, "speed.py"), os.path.join(tmp, "probe.py")
    with open(speed_py, "w") as handle:
        handle.write(SPEED)
    with open(probe_py, "w") as handle:
        handle.write(COMPILE_PROBE)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NUMBA_CACHE_DIR": os.path.join(tmp, "numba")}
    done = subprocess.run([sys.executable, probe_py], capture_output=True, text=True, env=env,
                          check=True)
    fit, log_prob = map(float, done.stdout.split())
    done = subprocess.run([sys.executable, speed_py, str(rounds), os.path.dirname(__file__)],
                          capture_output=True, text=True, env=env, check=True)
    r = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"\nCompiled engines against zuko, one thread, {rounds} round(s): CPU seconds of the "
          "process (wall-clock seconds in brackets), range over rounds; ratios of CPU seconds")
    print(f"  numba compilation (once, cached on disk): spline training {fit:.1f} s, spline "
          f"log_prob {log_prob:.1f} s")
    print("  spline flow, s/epoch (6 couplings (64, 64), 10 bins, 9,000 moons, batch 256):")
    print(f"    zuko NSF                       {span(r['zuko nsf s/epoch'])}")
    for fourier, label in ((0, "NSF"), (3, "NSF + 3 Fourier octaves (recommended)")):
        for engine in ("compiled", "torch"):
            key = f"nsf{fourier} {engine} s/epoch"
            print(f"    densitylab {engine:<8} {label:<40} {span(r[key])}  "
                  f"({ratio_span(r['zuko nsf s/epoch'], r[key])} zuko)")
    for job, title in (("log_prob", "log_prob of"), ("sample", "sampling")):
        print(f"  spline flow, {title} 10^6 points, s:")
        print(f"    zuko NSF                       {span(r[f'zuko nsf {job} s'])}")
        for fourier, label in ((0, "NSF"), (3, "NSF + 3 Fourier octaves")):
            key = f"nsf{fourier} {job} s"
            print(f"    densitylab {label:<28} {span(r[key])}  "
                  f"({ratio_span(r[f'zuko nsf {job} s'], r[key])} zuko)")
    print(f"  recommended recipe, full fit on 10,000 points: {span(r['recommended fit s'])} s")
    print("  AutoDensity's folds on digits (15 PCs), one fold alone / 3 folds together, s:")
    for model in ("tabular", "tabular-maf"):
        print(f"    FlowDensity(model={model!r}): {span(r[f'{model} one fold s'])} / "
              f"{span(r[f'{model} 3 folds s'])} "
              f"({ratio_span(r[f'{model} 3 folds s'], r[f'{model} one fold s'])} one fold)")
    print("  coursework RealNVP (bench_flows.py job), s/epoch: zuko "
          f"{span(r['zuko realnvp s/epoch'])}, densitylab compiled "
          f"{span(r['realnvp compiled s/epoch'])} "
          f"({ratio_span(r['zuko realnvp s/epoch'], r['realnvp compiled s/epoch'])} zuko)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=("scale", "speed"), default=None)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.only != "scale":
            speed(args.rounds, tmp)
        if args.only == "speed":
            return
        case_py, ddp_py = os.path.join(tmp, "case.py"), os.path.join(tmp, "ddp.py")
        with open(case_py, "w") as handle:
            handle.write(CASE)
        with open(ddp_py, "w") as handle:
            handle.write(DDP_EPOCH)
        print(f"{'job':<5} {'N':>9} {'D':>3}  {'seconds':>8}  {'peak MB':>8}  detail")
        for kind, n, d, extra in CASES:
            row = run_json([sys.executable, case_py, kind, str(n), str(d), extra])
            if row is None:
                print(f"{kind:<5} {n:>9} {d:>3}  > {BUDGET_S} s budget")
                continue
            print(f"{kind:<5} {n:>9} {d:>3}  {row['seconds']:>8.1f}  {row['peak_mb']:>8.0f}  "
                  f"{row['what']}", flush=True)
        n = 1_000_000
        alone = run_json([sys.executable, ddp_py, str(n)])
        start = time.perf_counter()
        pair = run_json([sys.executable, "-m", "torch.distributed.run", "--standalone",
                         "--nproc-per-node", "2", ddp_py, str(n)])
        launch = time.perf_counter() - start
        print(f"\nRealNVP K=4 (64,64), N={n:,}, D=2, global batch 8192, torch engine:")
        print(f"  1 process : {alone['seconds']:.2f} s/epoch")
        print(f"  2 processes (gloo): {pair['seconds']:.2f} s/epoch "
              f"(speed-up {alone['seconds'] / pair['seconds']:.2f}x; whole launch {launch:.0f} s)")


if __name__ == "__main__":
    main()

"""How far one machine goes: fit and KDE wall times and peak memory as N and D grow.

Each case runs in a fresh process (so peak RSS is its own) and prints one table row; a case
that exceeds its time budget is reported as such. Also times one epoch of data-parallel
training over two gloo processes against one process on the same global batches.

    python benchmarks/scale.py            # ~10 minutes on a 2-core laptop
"""

from __future__ import annotations

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


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
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

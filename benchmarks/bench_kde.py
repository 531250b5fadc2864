"""Side-by-side timing of densitylab.KDE against scipy, scikit-learn and KDEpy.

Data: the coursework's mixture of four Gaussians (means (0,0), (0,2), (2,0), (2,2), sigma 0.5),
generated here with numpy. Kernels are axis-aligned, ``H = diag(h1, h2)``, and every library gets
the same ``H``: scipy through its data-covariance hook, scikit-learn and KDEpy on data divided by
``(h1, h2)`` (isotropic unit bandwidth) with the Jacobian put back. Each timing is fit + evaluate,
best of ``--repeats`` runs (``time.perf_counter``); "x slower" is the library's time over
densitylab's; "max rel diff" is the largest relative difference of its densities from ours
(where the density exceeds 1e-6 of its peak) and "max diff/peak" the largest difference over the
peak density.

KDEpy's FFTKDE bins the data and evaluates on its own grid (it must enclose the data), so it is
compared against densitylab evaluated pointwise on that grid. The N = 10^5 rows run densitylab
alone, each in a fresh process, and report its peak memory (tracemalloc for NumPy buffers, and
the process's peak resident size, which includes the ~0.3 GB of the imported libraries).

Run:  .venv/bin/python benchmarks/bench_kde.py [--repeats 3] [--quick]
      (densitylab follows torch's thread count; OMP_NUM_THREADS=1 in front: one thread)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import numpy as np

CENTRES = np.array([[0.0, 0.0], [0.0, 2.0], [2.0, 0.0], [2.0, 2.0]])
BOUNDS = ((-1.5, 3.5), (-1.5, 3.5))


def mixture(n: int, seed: int) -> np.ndarray:
    """``n`` points of the coursework's four-Gaussian mixture (sigma 0.5)."""
    rng = np.random.default_rng(seed)
    return CENTRES[rng.integers(0, 4, n)] + 0.5 * rng.standard_normal((n, 2))


def best_of(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """Fastest of ``repeats`` runs of ``fn`` (seconds) and its last result."""
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def machine_info() -> str:
    import scipy
    import sklearn
    import torch

    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(line.split(":", 1)[1].strip() for line in fh if "model name" in line)
    except (OSError, StopIteration):
        pass
    try:
        import KDEpy

        kdepy = KDEpy.__version__
    except ImportError:
        kdepy = "not installed"
    try:
        from threadpoolctl import threadpool_info

        blas = ", ".join(f"{i['internal_api']} x{i['num_threads']}" for i in threadpool_info())
    except ImportError:
        blas = "unknown"
    return (
        f"{platform.platform()} | {cpu} | {os.cpu_count()} logical CPUs | "
        f"load avg {os.getloadavg()[0]:.2f}\n"
        f"python {platform.python_version()} | numpy {np.__version__} | scipy {scipy.__version__}"
        f" | scikit-learn {sklearn.__version__} | KDEpy {kdepy} | torch {torch.__version__}"
        f" (threads {torch.get_num_threads()}) | BLAS/OpenMP pools: {blas} | "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}"
    )


def scipy_kde(x: np.ndarray, h: np.ndarray) -> Any:
    """scipy's gaussian_kde with kernel covariance exactly ``diag(h^2)``.

    scipy scales the data covariance by ``factor**2``; seeding its cached data covariance (and
    Cholesky factor) with ``diag(h^2)`` and a factor of 1 gives our ``H`` exactly.
    """
    from scipy.stats import gaussian_kde

    kde = gaussian_kde(x.T, bw_method=1.0)
    kde._data_covariance = np.diag(h**2)
    kde._data_cho_cov = np.diag(h)
    kde.set_bandwidth(1.0)
    assert np.array_equal(kde.covariance, np.diag(h**2))
    return kde


def sklearn_density(x: np.ndarray, h: np.ndarray, points: np.ndarray) -> np.ndarray:
    from sklearn.neighbors import KernelDensity

    kd = KernelDensity(kernel="gaussian", bandwidth=1.0).fit(x / h)
    return np.exp(kd.score_samples(points / h)) / np.prod(h)


def kdepy_grid(x: np.ndarray, h: np.ndarray, resolution: int) -> tuple[np.ndarray, np.ndarray]:
    from KDEpy import FFTKDE

    grid, values = FFTKDE(kernel="gaussian", bw=1.0).fit(x / h).evaluate((resolution,) * 2)
    return grid * h, values / np.prod(h)


def rel_diff(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Largest difference of ``a`` from ``b``: relative, where ``b`` exceeds 1e-6 of its peak
    (KDEpy's grid reaches far into the tails), and relative to the peak of ``b``."""
    keep = b > 1e-6 * b.max()
    return (
        float(np.max(np.abs(a[keep] - b[keep]) / b[keep])),
        float(np.max(np.abs(a - b)) / b.max()),
    )


Row = tuple[str, str, float, float, tuple[float, float] | None]


def run_main(repeats: int, quick: bool) -> list[Row]:
    import densitylab as dl
    from densitylab.grids import make_grid

    try:
        import KDEpy  # noqa: F401

        have_kdepy = True
    except ImportError:
        have_kdepy = False
    n = 2_000 if quick else 10_000
    x = mixture(n, seed=0)
    queries = mixture(n, seed=1)
    grid = make_grid(BOUNDS, 100)
    scott = n ** (-1 / 6) * x.std(axis=0, ddof=1)
    rows = []
    for label, h in (("h=0.1", np.array([0.1, 0.1])), ("scott", scott)):
        # 100 x 100 grid
        t_ours, img = best_of(lambda h=h: dl.KDE(bandwidth=h).fit(x).evaluate_grid(grid), repeats)
        case = f"grid 100x100, N={n}, {label}"
        rows.append((case, "densitylab", t_ours, 1.0, None))
        t, val = best_of(lambda h=h: scipy_kde(x, h).evaluate(grid.points.T), max(1, repeats - 1))
        rows.append((case, "scipy gaussian_kde", t, t / t_ours, rel_diff(val, img.ravel())))
        t, val = best_of(lambda h=h: sklearn_density(x, h, grid.points), 1)
        rows.append((case, "sklearn KernelDensity", t, t / t_ours, rel_diff(val, img.ravel())))
        if have_kdepy:
            t, (pts, val) = best_of(lambda h=h: kdepy_grid(x, h, 100), repeats)
            ours = np.exp(dl.KDE(bandwidth=h).fit(x).score_samples(pts))
            rows.append((case, "KDEpy FFTKDE (binned)", t, t / t_ours, rel_diff(val, ours)))
        # arbitrary query points: a fresh sample of the same mixture
        case = f"{n} query points, N={n}, {label}"
        t_ours, logd = best_of(
            lambda h=h: dl.KDE(bandwidth=h).fit(x).score_samples(queries), repeats
        )
        ours = np.exp(logd)
        rows.append((case, "densitylab", t_ours, 1.0, None))
        t, val = best_of(lambda h=h: scipy_kde(x, h).evaluate(queries.T), max(1, repeats - 1))
        rows.append((case, "scipy gaussian_kde", t, t / t_ours, rel_diff(val, ours)))
        t, val = best_of(lambda h=h: sklearn_density(x, h, queries), 1)
        rows.append((case, "sklearn KernelDensity", t, t / t_ours, rel_diff(val, ours)))
    return rows


def run_child(kind: str, n: int) -> dict[str, float]:
    """One large run in this (fresh) process: seconds and peak memory."""
    import densitylab as dl
    from densitylab.grids import make_grid

    x = mixture(n, seed=0)
    h = np.array([0.1, 0.1])
    dl.KDE(bandwidth=h).fit(x[:100]).score_samples(x[:10])  # import and warm up torch
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    tracemalloc.start()
    start = time.perf_counter()
    kde = dl.KDE(bandwidth=h).fit(x)
    if kind == "grid":
        out = kde.evaluate_grid(make_grid(BOUNDS, 100))
    else:
        out = kde.score_samples(mixture(10_000, seed=1))
    seconds = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    assert np.all(np.isfinite(out))
    return {
        "seconds": seconds,
        "tracemalloc_peak_mb": peak / 2**20,
        "rss_before_mb": base_rss,
        "rss_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="N = 2000, no N = 10^5 rows")
    parser.add_argument("--child", nargs=2, metavar=("KIND", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_child(args.child[0], int(args.child[1]))))
        return
    print(machine_info())
    print()
    rows = run_main(args.repeats, args.quick)
    print(
        f"{'case':<38} {'library':<22} {'seconds':>8} {'x slower':>9} {'max rel diff':>13}"
        f" {'max diff/peak':>14}"
    )
    for case, lib, t, ratio, diff in rows:
        rel, peak = ("-", "-") if diff is None else (f"{diff[0]:.1e}", f"{diff[1]:.1e}")
        print(f"{case:<38} {lib:<22} {t:>8.4f} {ratio:>9.1f} {rel:>13} {peak:>14}")
    if args.quick:
        return
    print()
    print("N = 10^5 (densitylab alone, fresh process each, h = 0.1):")
    for kind, label in (("grid", "grid 100x100"), ("points", "10^4 query points")):
        proc = subprocess.run(
            [sys.executable, __file__, "--child", kind, "100000"],
            capture_output=True,
            text=True,
            check=True,
        )
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        print(
            f"  {label:<20} {r['seconds']:.3f} s | NumPy peak (tracemalloc) "
            f"{r['tracemalloc_peak_mb']:.0f} MB | process peak RSS {r['rss_peak_mb']:.0f} MB "
            f"(after imports {r['rss_before_mb']:.0f} MB)"
        )


if __name__ == "__main__":
    main()

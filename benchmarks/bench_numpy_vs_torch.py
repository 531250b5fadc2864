"""The NumPy RealNVP against the PyTorch one: seconds per epoch and test NLL, side by side.

Set-up (the coursework's): moons, N = 1500 points from ``sklearn.datasets.make_moons(noise=0.1,
random_state=0)``, the fit's 90/10 train/validation split (seed 8), K = 4 affine couplings with
hidden layers ``(w, w)``, Adam with lr 1e-3, for batch sizes 64, 256, 1500 (1500 = the whole
training set of 1350 in one batch) and widths w = 32, 128, 512. Three engines start from the
same weights (``realnvp(2, 4, (w, w), seed=0)``) and see the same batches:

* ``numpy``: :func:`densitylab.numpy_flow.fit`, float64, hand-written gradients;
* ``torch32``: :func:`densitylab.fit` with torch's autograd (``engine="torch"``) on the float32
  flow (torch's default dtype);
* ``torch64``: the same on the flow in float64, the like-for-like comparison (numpy and torch64
  must reach the same test NLL to many digits).

torch runs on 1 thread (``fit``'s default); NumPy's BLAS on 1 thread (``OMP_NUM_THREADS=1``,
set here before NumPy is imported). Seconds per epoch: the fastest epoch's wall time (from
``history.seconds``; like timeit's best-of, the least disturbed by other work on a shared
machine); "cpu" is the process CPU time of the whole fit divided by the epochs. Every engine is
warmed up by a short fit first, so one-off start-up costs are not counted. Test NLL: mean
``-log p`` of the kept (best validation) model on 10,000 fresh points
(``make_moons(random_state=1)``), in nats.
The ratio columns are an engine's CPU seconds over NumPy's (> 1: NumPy is faster); CPU time is
the steadier measure on a busy machine, and on a quiet one it equals the wall time (every engine
runs on one thread). ``--compiled`` adds densitylab's numba engine (``fit(engine="compiled")``,
float64) as a fourth column; its JIT compilation happens in the warm-up.

Then, for batch 64 and width 32, the time of one training step split into its parts (best of
``--repeats`` runs of many calls), for NumPy and for torch.

Run:  OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_numpy_vs_torch.py [--epochs 20]
      [--wide-epochs 3] [--quick]
"""

from __future__ import annotations

import os

for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

import argparse  # noqa: E402
import copy  # noqa: E402
import inspect  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from sklearn.datasets import make_moons  # noqa: E402

import densitylab as dl  # noqa: E402
from densitylab import flows, training  # noqa: E402
from densitylab import numpy_flow as nf  # noqa: E402

BATCHES = (64, 256, 1500)
WIDTHS = (32, 128, 512)
ENGINES = ["numpy", "torch32", "torch64"]


def moons() -> tuple[np.ndarray, np.ndarray]:
    x, _ = make_moons(n_samples=1500, noise=0.1, random_state=0)
    test, _ = make_moons(n_samples=10_000, noise=0.1, random_state=1)
    return x, test


def dl_fit(flow, x, engine: str, **options):
    """``densitylab.fit`` on the named engine (older versions have only torch's autograd)."""
    if "engine" in inspect.signature(dl.fit).parameters:
        options["engine"] = engine
    return dl.fit(flow, x, verbose=False, **options)


def run_engine(engine: str, width: int, batch: int, epochs: int, x, test) -> dict[str, float]:
    """Train one engine from the shared initial weights; its timings and test NLL."""
    flow = flows.realnvp(2, n_layers=4, hidden=(width, width), seed=0)
    options = {"epochs": epochs, "batch_size": batch, "lr": 1e-3}
    cpu = time.process_time()
    if engine == "numpy":
        result = nf.fit(nf.NumpyRealNVP.from_torch(flow), x, **options)
        cpu = time.process_time() - cpu
        test_nll = -result.model.log_prob(test).mean()
    else:
        flow = copy.deepcopy(flow).double() if engine == "torch64" else flow
        result = dl_fit(flow, x, "compiled" if engine == "compiled" else "torch", **options)
        cpu = time.process_time() - cpu
        with torch.no_grad():
            test_nll = -result.flow.log_prob(torch.as_tensor(test)).mean().item()
    seconds = np.diff([0.0, *result.history.seconds])
    return {"wall": float(seconds.min()), "cpu": cpu / epochs, "nll": float(test_nll)}


def comparison(epochs: int, wide_epochs: int, batches, widths, engines: list[str]) -> None:
    x, test = moons()
    for engine in engines:  # warm-up: imports, thread pools, JIT, first-call costs
        run_engine(engine, 32, 256, 2, x, test)
    others = engines[1:]
    columns = [
        ("s/epoch", "wall", engines, "{:>8.4f}"),
        ("cpu s/epoch", "cpu", engines, "{:>8.4f}"),
        ("cpu ratio to numpy", "ratio", others, "{:>8.2f}"),
        ("test NLL", "nll", engines, "{:>8.5f}"),
    ]
    head1 = f"{'':>5} {'':>5} {'':>6}"
    head2 = f"{'batch':>5} {'width':>5} {'epochs':>6}"
    for title, _, names, _ in columns:
        head1 += f" | {title:^{9 * len(names) - 1}}"
        head2 += " | " + " ".join(f"{name:>8}" for name in names)
    print(head1)
    print(head2)
    print("-" * len(head2))
    for width in widths:
        for batch in batches:
            n_epochs = wide_epochs if width >= 512 else epochs
            r = {e: run_engine(e, width, batch, n_epochs, x, test) for e in engines}
            for e in others:
                r[e]["ratio"] = r[e]["cpu"] / r["numpy"]["cpu"]
            line = f"{batch:>5} {width:>5} {n_epochs:>6}"
            for _, key, names, fmt in columns:
                line += " | " + " ".join(fmt.format(r[e][key]) for e in names)
            print(line, flush=True)


def best_time(call: Callable[[], object], number: int, repeats: int) -> float:
    """Best over ``repeats`` of the mean time of ``number`` calls, in microseconds."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(number):
            call()
        best = min(best, (time.perf_counter() - start) / number)
    return best * 1e6


def step_breakdown(batch: int, width: int, repeats: int, number: int) -> None:
    """One training step of each engine, part by part, at batch ``batch`` and width ``width``."""
    x, _ = moons()
    train_idx, _ = training.data.split(len(x), 0.1, 8)
    x_train = x[train_idx]
    index = np.random.default_rng(0).permutation(len(x_train))[:batch]
    flow = flows.realnvp(2, n_layers=4, hidden=(width, width), seed=0)

    model = nf.NumpyRealNVP.from_torch(flow)
    u_train = x_train[None]
    rows, idx = np.arange(1)[:, None], index[None]
    batch_x = u_train[rows, idx]
    grad = np.zeros_like(model.params)
    grad_views = model.views(grad)
    adam = nf.Adam(model.params.copy())
    _, z, caches = model._forward(batch_x)

    def numpy_step() -> None:
        b = u_train[rows, idx]
        _, z_, c_ = model._forward(b)
        model._backward(z_, c_, grad_views)
        adam.step(grad)

    parts = {
        "batch gather": lambda: u_train[rows, idx],
        "forward (NLL)": lambda: model._forward(batch_x),
        "backward (all grads)": lambda: model._backward(z, caches, grad_views),
        "Adam": lambda: adam.step(grad),
        "whole step": numpy_step,
    }
    print(
        f"\nNumPy, one training step at batch {batch}, width {width} ({model.params.size} params):"
    )
    for name, call in parts.items():
        print(f"  {name:<22} {best_time(call, number, repeats):>9.1f} us")

    stacked = flows.stack([flow])
    x_t = torch.as_tensor(x_train[None], dtype=torch.float32)
    index_t = torch.as_tensor(index[None])
    params = [p for p in stacked.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=1e-3, fused=True)
    torch.set_num_threads(1)

    def gather():
        return x_t.gather(1, index_t.unsqueeze(-1).expand(-1, -1, 2))

    def forward():
        return -stacked._log_prob(gather()).mean(dim=1)

    def backward():
        optimizer.zero_grad(set_to_none=False)
        forward().sum().backward()

    def torch_step():
        backward()
        optimizer.step()

    backward()
    parts_t = {
        "batch gather": gather,
        "forward (NLL)": forward,
        "forward + backward": backward,
        "Adam (fused)": optimizer.step,
        "whole step": torch_step,
    }
    print("torch float32 (1 thread), the same step:")
    for name, call in parts_t.items():
        print(f"  {name:<22} {best_time(call, number, repeats):>9.1f} us")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=20, help="epochs for widths 32 and 128")
    parser.add_argument("--wide-epochs", type=int, default=3, help="epochs for width 512")
    parser.add_argument("--repeats", type=int, default=5, help="repeats of the step timings")
    parser.add_argument("--quick", action="store_true", help="batch 64, widths 32 and 128 only")
    parser.add_argument(
        "--compiled", action="store_true", help="also densitylab.fit(engine='compiled') (numba)"
    )
    args = parser.parse_args()
    print(
        f"python {platform.python_version()}, numpy {np.__version__}, torch {torch.__version__}, "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cpus, "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    batches, widths = ((64,), (32, 128)) if args.quick else (BATCHES, WIDTHS)
    engines = ENGINES + (["compiled"] if args.compiled else [])
    comparison(args.epochs, args.wide_epochs, batches, widths, engines)
    step_breakdown(64, 32, args.repeats, number=300)
    print(f"\nload average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()

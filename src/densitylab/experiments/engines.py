"""numpy-vs-torch: the same RealNVP trained by NumPy, by torch autograd and by the compiled
engine, from the same initial weights on the same batches: seconds per epoch and test NLL."""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import numpy as np

from densitylab import datasets, plots
from densitylab.evaluation import flow_log_prob
from densitylab.experiments.runner import Outcome, Table
from densitylab.experiments.timing import per_epoch
from densitylab.flows import realnvp
from densitylab.numpy_flow import NumpyRealNVP
from densitylab.numpy_flow import fit as numpy_fit
from densitylab.plots.flows import grouped_bars
from densitylab.training import fit

CONFIGS = ((64, 32), (256, 32), (1500, 32), (64, 128), (64, 512), (1500, 512))  # (batch, width)
ENGINES = ("NumPy", "torch (autograd)", "compiled (numba)")


def _train(engine: str, batch: int, width: int, x: np.ndarray, epochs: int):
    """Train one engine; returns (seconds per epoch, its standard error over the epochs,
    log-density function of the result)."""
    flow = realnvp(2, 4, (width, width), seed=8)
    if engine == "NumPy":
        model = NumpyRealNVP.from_torch(flow)
        result = numpy_fit(model, x, epochs=epochs, batch_size=batch, seed=8)
        return (*per_epoch(result.history.seconds), result.model.log_prob)
    kind = "torch" if engine.startswith("torch") else "compiled"
    result = fit(flow, x, epochs=epochs, batch_size=batch, seed=8, verbose=False, engine=kind)
    return (*per_epoch(result.history.seconds),
            lambda points: flow_log_prob(result.flow, points))


def load() -> float:
    """The machine's 1-minute load average (NaN where the system does not report one)."""
    try:
        return float(os.getloadavg()[0])
    except (AttributeError, OSError):
        return float("nan")


def contention(metrics: dict) -> str:
    """What the recorded load says about the timings, against the number of cores."""
    loads, cores = metrics.get("load_average"), metrics.get("cores")
    if not loads or not cores or any(math.isnan(v) for v in loads):
        return "The machine's load was not recorded."
    text = (f"The runner ran this study alone; the machine's 1-minute load average was "
            f"{loads[0]:.1f} at its start and {loads[1]:.1f} at its end, on {cores} cores")
    if max(loads) > cores:
        return text + ": other processes competed for the cores, so read the timings as ratios."
    return text + "."


def run_engines(out: Path, quick: bool) -> Outcome:
    start = time.perf_counter()
    load_at_start = load()
    moons = datasets.get("moons")
    x, test = moons.sample(1500, seed=0), moons.sample(20000, seed=1)
    epochs = 3 if quick else 8  # the first is warm-up, dropped
    configs = CONFIGS[:3] if quick else CONFIGS
    seconds: dict[str, list[float]] = {e: [] for e in ENGINES}
    errors: dict[str, list[float]] = {e: [] for e in ENGINES}
    rows, nll = [], {}
    for batch, width in configs:
        row = [batch, f"{width}x{width}"]
        for engine in ENGINES:
            per_epoch, se, log_prob = _train(engine, batch, width, x, epochs)
            seconds[engine].append(per_epoch)
            errors[engine].append(se)
            nll[engine, batch, width] = float(-np.mean(log_prob(test)))
            row += [f"{per_epoch:.4f}", f"{nll[engine, batch, width]:.4f}"]
        row.append(f"{seconds['torch (autograd)'][-1] / seconds['NumPy'][-1]:.2f}")
        rows.append(row)
    labels = [f"batch {b}\nwidth {w}" for b, w in configs]
    title = "Seconds per epoch: NumPy, torch and compiled"
    figure = grouped_bars(labels, seconds, "median seconds per epoch (log scale)", title,
                          errors={e: [2 * v for v in errors[e]] for e in ENGINES})
    plots.save_figures(out / "figures", {"seconds-per-epoch": figure}, strict=True)
    columns = ["batch", "hidden"] + [f"{e} {c}" for e in ENGINES for c in ("s/epoch", "test NLL")]
    return Outcome(
        name="numpy-vs-torch",
        title="NumPy against PyTorch (and the compiled engine)",
        question="The coupling-layers project's stretch goal: implement the flow directly in "
        "NumPy and compare its speed and performance with PyTorch, here for batch sizes 64 to "
        "1500 and widths 32 to 512, all three trained from the same weights on the same batches.",
        findings=[],
        figures={"seconds-per-epoch.png": f"Median seconds per epoch of each implementation "
                 f"over epochs 2-{epochs} (the first, warm-up, dropped), with error bars of two "
                 "standard errors; RealNVP K=4 on moons (N=1500); one group per batch size and "
                 "network width."},
        tables=[Table(f"Median seconds per epoch (epochs 2-{epochs}) and test NLL on 20,000 "
                      "fresh points (torch/NumPy > 1 means NumPy is faster)",
                      columns + ["torch/NumPy"], rows)],
        metrics={"seconds_per_epoch": seconds, "seconds_per_epoch_se": errors,
                 "load_average": [load_at_start, load()], "cores": os.cpu_count(),
                 "configs": [list(c) for c in configs],
                 "test_nll": {f"{e} b{b} w{w}": v for (e, b, w), v in nll.items()}},
        seconds=time.perf_counter() - start,
    )


def engines_findings(metrics: dict) -> list[str]:
    """The section's text from its metrics."""
    configs = [tuple(c) for c in metrics["configs"]]
    seconds, errors = metrics["seconds_per_epoch"], metrics["seconds_per_epoch_se"]
    nll = {(e, b, w): metrics["test_nll"][f"{e} b{b} w{w}"] for e in ENGINES
           for b, w in configs}
    return _findings(configs, seconds, errors, nll) + [contention(metrics)]


def _findings(configs, seconds, errors, nll) -> list[str]:
    """Speed claims by the page's rule: a difference in seconds per epoch counts only beyond
    two standard errors of the difference (medians over the epochs after warm-up)."""
    from densitylab.experiments.findings import best_group, compare

    wins, losses, ties = [], [], []
    for i, (b, w) in enumerate(configs):
        t, n = seconds["torch (autograd)"][i], seconds["NumPy"][i]
        outcome = compare(n, errors["NumPy"][i], t, errors["torch (autograd)"][i])
        if outcome < 0:
            wins.append(f"batch {b}, width {w} ({t / n:.1f}x)")
        elif outcome > 0:
            losses.append(f"batch {b}, width {w} ({n / t:.1f}x)")
        else:
            ties.append(f"batch {b}, width {w}")
    spread = max(abs(nll["NumPy", b, w] - nll["torch (autograd)", b, w]) for b, w in configs)
    fastest = {c: best_group({e: (seconds[e][i], errors[e][i]) for e in ENGINES})
               for i, c in enumerate(configs)}
    bullets = [f"NumPy faster than torch autograd at {', '.join(wins) or 'no setting'}."]
    if losses:
        bullets.append(f"Torch faster than NumPy at {', '.join(losses)}.")
    if ties:
        bullets.append(f"Within noise (two standard errors of the medians): {'; '.join(ties)}.")
    bullets.append(f"From the same weights on the same batches, the test NLLs differ by at most "
                   f"{spread:.4f} nats (float32 torch against float64 NumPy).")
    bullets.append("Fastest per setting (median; ties within noise joined by /): " + ", ".join(
        f"batch {b}/width {w}: {' / '.join(group)}" for (b, w), group in fastest.items()) + ".")
    summary = (f"NumPy beats torch autograd at {len(wins)} of {len(configs)} settings and loses "
               f"at {len(losses)}{_where(configs, seconds, errors)}; from the same weights "
               f"their test NLLs differ by at most {spread:.3f} nats.")
    return [summary, *bullets]


def _where(configs, seconds, errors) -> str:
    """Where the wins and losses fall by batch x width (the size of each matrix product),
    when one size separates them."""
    from densitylab.experiments.findings import compare

    outcome = {(b, w): compare(seconds["NumPy"][i], errors["NumPy"][i],
                               seconds["torch (autograd)"][i], errors["torch (autograd)"][i])
               for i, (b, w) in enumerate(configs)}
    wins = [b * w for (b, w), o in outcome.items() if o < 0]
    losses = [b * w for (b, w), o in outcome.items() if o > 0]
    separated = wins and losses and all(
        (o < 0) if b * w <= max(wins) else (o > 0) if b * w >= min(losses) else True
        for (b, w), o in outcome.items())
    if separated:
        return (f": it wins at every setting with batch x width up to {max(wins)} and loses "
                f"at every one from {min(losses)} (torch's larger fixed cost per operation "
                "weighs most on small products)")
    return ""

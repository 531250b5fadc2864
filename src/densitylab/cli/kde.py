"""``densitylab kde``: fit a kernel density estimate; write metrics, config and a figure."""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any

import typer

from densitylab.cli._app import app
from densitylab.cli._data import MISSING_HELP

MAX_RESOLUTION = 2000  # grid cells per axis: 4 million cells, about 100 MB of figures' arrays


def parse_bandwidth(text: str) -> float | tuple[float, ...] | str:
    """``"0.1"`` -> 0.1, ``"0.1,0.2"`` -> (0.1, 0.2), a rule name -> the name; else a ValueError."""
    from densitylab.kde import BANDWIDTH_RULES

    name = text.strip().lower()
    if name in BANDWIDTH_RULES:
        return name
    try:
        values = tuple(float(part) for part in name.split(","))
    except ValueError:
        rules = ", ".join(sorted(BANDWIDTH_RULES))
        raise ValueError(
            f"--bandwidth must be a number like 0.1, per-axis numbers like 0.1,0.2, or one of "
            f"{rules}; got {text!r}"
        ) from None
    return values[0] if len(values) == 1 else values


def padded_bounds(x: Any, bandwidth: Any) -> tuple[tuple[float, float], tuple[float, float]]:
    """The data's bounding box widened by three kernel standard deviations per axis, at most
    by twice the data's own extent (a huge bandwidth would leave nothing to see)."""
    import numpy as np

    extent = x.max(axis=0) - x.min(axis=0)
    sd = np.linalg.norm(bandwidth, axis=1)  # sqrt(diag(H H^T)), without squaring H
    pad = np.minimum(3.0 * sd, 2.0 * np.where(extent > 0, extent, sd))
    low, high = x.min(axis=0) - pad, x.max(axis=0) + pad
    return (float(low[0]), float(high[0])), (float(low[1]), float(high[1]))


def describe(bandwidth: Any, model: Any) -> str:
    """A short label of the bandwidth for figure titles."""
    import numpy as np

    h = model.bandwidth_
    if isinstance(bandwidth, str) and model.factor_ is not None:
        return f"{bandwidth} (factor {model.factor_:.3g})"
    if isinstance(bandwidth, str):  # "cv" chose the kernel's shape too: say which
        return f"{bandwidth}, " + describe(h, model)
    if np.array_equal(h, np.diag(np.diag(h))):
        diag = np.diag(h)
        if np.all(diag == diag[0]):
            return f"h = {diag[0]:g}"
        return "H = diag(" + ", ".join(f"{v:g}" for v in diag) + ")"
    return "full H"


@app.command()
def kde(
    data: str = typer.Argument(..., help="A built-in distribution name (see `densitylab datasets`) or a .csv/.npy/.npz file."),
    out: Path = typer.Option(..., "--out", "-o", help="Run directory to write."),
    bandwidth: str = typer.Option("scott", "--bandwidth", "-b", help="h (0.1), per-axis h (0.1,0.2), or a rule: scott, silverman, cv."),
    n: int = typer.Option(10000, "--n", "-n", help="Points drawn from a built-in distribution."),
    seed: int = typer.Option(0, help="Seed of the sample; held-out points use seed + 1."),
    resolution: int = typer.Option(100, help="Grid cells per axis for the figure and the grid metrics."),
    missing: str = typer.Option("error", "--missing", help=MISSING_HELP),
    device: str = typer.Option("", help="Evaluate on this torch device (cuda, cpu, auto) in dense blocks; default: the CPU's pruned kd-tree path."),
    threads: int | None = typer.Option(None, help="Threads of the kernel sums (restored after); default: the cores other processes leave idle. Recorded in config.json."),
) -> None:
    """Fit a Gaussian KDE and write config.json, metrics.json, the model (OUT/model, for
    `densitylab score` and `sample`) and figures/density.png to OUT.

    For a built-in distribution the metrics include the held-out log-likelihood on a fresh sample
    of the same size and, on the grid, KL(true || KDE) and the integrated squared error; for a
    data file, the exact leave-one-out log-likelihood. The training points' 5-fold out-of-fold
    log-densities are recorded as quantiles, for `densitylab score --contamination`.
    """
    import numpy as np

    from densitylab import metrics
    from densitylab import threads as threads_
    from densitylab._files import check_output, output_directory
    from densitylab._validation import check_positive_int
    from densitylab.cli._data import read_data
    from densitylab.cli.train import pairs_figure_allowed
    from densitylab.grids import make_grid
    from densitylab.io import save
    from densitylab.kde import KDE, leave_one_out_log_likelihood
    from densitylab.outliers import QUANTILE_LEVELS, out_of_fold_scores
    from densitylab.plots import save_figures
    from densitylab.plots.kde import density_panels

    spec = parse_bandwidth(bandwidth)
    check_positive_int(n, "--n")
    check_positive_int(resolution, "--resolution", minimum=2, maximum=MAX_RESOLUTION)
    check_output(out, "kde")
    threads = threads_.count(None if threads is None else check_positive_int(threads, "--threads"))
    x, truth, names = read_data(data, n, seed, missing)
    model = KDE(bandwidth=spec, device=device or None, threads=threads).fit(x)
    from densitylab._ties import duplicate_count, tie_groups

    copies = duplicate_count(tie_groups(x))
    if copies:
        typer.echo(f"note: {copies} of the {len(x)} rows repeat another row; leave-one-out "
                   "leaves out every copy", err=True)
    report: dict[str, Any] = {
        "n_points": len(x),
        "duplicate_rows": copies,
        "dim": x.shape[1],
        "bandwidth_matrix": model.bandwidth_.tolist(),
        "kernel_covariance": model.covariance_.tolist(),
        "bandwidth_factor": model.factor_,
        "guard_weight": model.guard_weight_,  # the defensive component of "cv" (densitylab.guard)
    }
    if len(x) >= 10:  # out-of-fold: each point scored by the KDE of the other folds
        scores = out_of_fold_scores(KDE(bandwidth=spec), x, cv=5, random_state=seed)
        report["train_log_density_quantiles"] = np.quantile(scores, QUANTILE_LEVELS).tolist()
    if truth is not None:
        test = truth.sample(len(x), seed=seed + 1)
        nll, nll_se = metrics.nll_with_error(model.score_samples(test))
        entropy = truth.entropy()
        report |= {
            "held_out_log_likelihood": -nll,
            "held_out_log_likelihood_se": nll_se,
            "n_held_out": len(test),
            "held_out_seed": seed + 1,
            "entropy": entropy,
            "entropy_gap": metrics.entropy_gap(nll, entropy),
        }
        bounds = tuple((float(lo), float(hi)) for lo, hi in truth.bounds())
    else:
        if len(x) >= 2:
            report["leave_one_out_log_likelihood"] = leave_one_out_log_likelihood(x, model.bandwidth_)
        bounds = padded_bounds(x, model.bandwidth_) if x.shape[1] == 2 else None
    figures = {}
    if bounds is not None:
        grid = make_grid(bounds, resolution)
        estimate = model.evaluate_grid(grid)
        label = describe(spec, model)
        if truth is not None:
            divergences = metrics.grid_divergences(
                truth.log_prob, model.score_samples, bounds, resolution
            )
            report["grid"] = {"bounds": bounds, "resolution": resolution} | divergences
            images = {"true density": np.exp(truth.log_prob(grid.points)).reshape(grid.shape),
                      f"KDE, {label}": estimate}
            figures["density"] = density_panels(images, grid, f"{truth.name}: truth and KDE")
        else:
            figures["density"] = density_panels(
                {f"KDE, {label}": estimate}, grid, f"{Path(data).name}: KDE", points=x
            )
    elif x.shape[1] == 1 or pairs_figure_allowed(x.shape[1]):  # 1-D: a curve; D > 2: pairs
        from densitylab import plots

        figures["density"] = plots.density(
            model, data=x, seed=seed, title=f"{Path(data).name}: KDE, {describe(spec, model)}"
        )
    config = {
        "command": "kde", "data": data, "bandwidth": bandwidth, "n": n, "seed": seed,
        "resolution": resolution, "threads": threads,
        "truth": None if truth is None else truth.name,
        "truth_params": None if truth is None else getattr(truth, "params", None),
        "environment": environment(), "columns": names,
    }
    config_text = json.dumps(config, indent=2, default=str)
    metrics_text = json.dumps(report, indent=2)
    with output_directory(out, "kde") as staging:
        (staging / "config.json").write_text(config_text)
        (staging / "metrics.json").write_text(metrics_text)
        save_figures(staging / "figures", figures)
        save(model, staging / "model")
    score = report.get("held_out_log_likelihood", report.get("leave_one_out_log_likelihood"))
    score_text = "" if score is None else f", log-likelihood {score:.4f} nats/point"
    typer.echo(f"wrote {out} (KDE on {len(x)} points{score_text})")


def environment() -> dict[str, str]:
    import numpy
    import scipy

    from densitylab import __version__

    return {"densitylab": __version__, "numpy": numpy.__version__, "scipy": scipy.__version__,
            "python": platform.python_version(), "machine": platform.machine()}

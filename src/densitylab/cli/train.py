"""``densitylab train``: fit a flow to a built-in distribution or a data file; write a run directory."""

from __future__ import annotations

import csv
import json
import os
import platform
import shutil
from pathlib import Path

import typer

from densitylab.cli._app import app

CHECKPOINT = "checkpoint"


def parse_hidden(text: str) -> tuple[int, ...]:
    """``"32,32"`` -> ``(32, 32)``; a clear error for anything else."""
    try:
        widths = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise ValueError(f"--hidden must be comma-separated integers like 32,32; got {text!r}") from None
    if not widths or min(widths) < 1:
        raise ValueError(f"--hidden widths must be positive; got {text!r}")
    return widths


def split_test(x, test_fraction: float, seed: int):
    """Split a user's data into (fit, test) parts by a seeded permutation."""
    import numpy as np

    if not 0 < test_fraction < 1:
        raise ValueError(f"--test-fraction must lie strictly between 0 and 1, got {test_fraction}")
    order = np.random.default_rng(seed).permutation(len(x))
    n_test = max(1, round(test_fraction * len(x)))
    return x[order[n_test:]], x[order[:n_test]]


@app.command()
def train(
    data: str = typer.Argument(..., help="A built-in distribution name (see `densitylab datasets`) or a .csv/.npy/.npz file."),
    out: Path = typer.Option(..., "--out", "-o", help="Run directory to write."),
    model: str = typer.Option("realnvp", help="Flow model: realnvp, glow, nsf (rational-quadratic spline couplings; use with --standardize), recommended (a spline flow with its own recipe: 6 layers of 64,64, batches of 256, Adam 3e-3 cosine, standardised, about 1000 steps), tabular (the recipe for real data: a bounded spline flow whose budget grows with the data, early stopping, rounded columns dequantised), or auto (dl.AutoDensity: KDE, Gaussian mixture or tabular flow, whichever has the best 3-fold cross-validated likelihood; writes OUT/model_selection.csv; only --seed, -n, --n-test, --test-fraction apply). Options left unset take the model's defaults; for realnvp/glow/nsf those are the coursework's."),
    layers: int | None = typer.Option(None, "--layers", "-k", help="Number of coupling layers (Glow: steps). Default 4 (recommended: 6)."),
    hidden: str | None = typer.Option(None, help="Hidden widths of each s/t network, comma-separated. Default 32,32 (recommended: 64,64)."),
    epochs: int | None = typer.Option(None, help="Training epochs. Default 1000 (recommended: about 1000 optimizer steps' worth)."),
    batch_size: int | None = typer.Option(None, help="Mini-batch size. Default 64 (recommended: 256)."),
    lr: float | None = typer.Option(None, help="Adam learning rate (peak, with --schedule cosine). Default 1e-3 (recommended: 3e-3)."),
    schedule: str | None = typer.Option(None, help="Learning-rate schedule: constant or cosine. Default constant (recommended: cosine)."),
    ema: float = typer.Option(0.0, help="Validate and keep a moving average of the weights with this per-epoch decay (e.g. 0.9); 0: off."),
    activation: str = typer.Option("leaky_relu", help="Conditioner activation: leaky_relu, relu or tanh."),
    scale: str = typer.Option("factor", help="RealNVP/Glow scale: factor (the coursework's) or tanh (bounded)."),
    seed: int = typer.Option(8, help="Seed for the model, the split and the batches."),
    n: int = typer.Option(1500, "-n", help="Training points drawn from a built-in distribution."),
    n_test: int = typer.Option(20000, help="Fresh test points drawn from a built-in distribution."),
    val_fraction: float = typer.Option(0.1, help="Fraction of the training data for validation."),
    test_fraction: float = typer.Option(0.2, help="Fraction of a data file held out for testing."),
    standardize: bool | None = typer.Option(None, "--standardize/--no-standardize", help="Standardise inside the model (densities stay in your units). Default off (recommended: on)."),
    patience: int = typer.Option(0, help="Stop after this many epochs without improvement (0: never)."),
    resume: bool = typer.Option(False, help="Continue an interrupted run from OUT/checkpoint."),
    device: str = typer.Option("cpu", help="Where to train: cpu, cuda or auto (CUDA when available)."),
    distributed: bool = typer.Option(False, help="Data-parallel training over the processes torchrun started (gloo on CPU, NCCL on CUDA); rank 0 writes OUT. Launch: torchrun --nproc-per-node N -m densitylab train ... --distributed"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Train a normalizing flow and write config, metrics, history, model and figures to OUT."""
    from densitylab import datasets, flows
    from densitylab import distributed as parallel
    from densitylab._devices import resolve_device
    from densitylab.flows.recipes import settings, split
    from densitylab.training import fit

    if parallel.launched_by_torchrun() and int(os.environ["WORLD_SIZE"]) > 1 and not distributed:
        raise ValueError("started by torchrun with several processes: add --distributed")
    if model == "auto":
        if distributed or resume:
            raise ValueError("--model auto trains on one process and cannot resume")
        return train_auto(data, out, seed, n, n_test, test_fraction)
    chosen = {"n_layers": layers, "hidden": parse_hidden(hidden) if hidden else None,
              "epochs": epochs, "batch_size": batch_size, "lr": lr, "schedule": schedule,
              "standardize": standardize}
    settings(model, 1, **chosen)  # unknown model or schedule: fail before drawing data
    x, truth = datasets.resolve(data, n, seed)
    if truth is None:
        x, test = split_test(x, test_fraction, seed)
    else:
        test = truth.sample(n_test, seed=seed + 1)
    builder, architecture, budget = split(settings(model, len(x), val_fraction, **chosen))
    options = {"activation": activation} | ({} if builder == "nsf" else {"scale": scale})
    flow = flows.build(builder, dim=x.shape[1], seed=seed, **architecture, **options)

    def train_flow():
        return fit(
            flow, x, **budget, val_fraction=val_fraction,
            seed=seed, patience=patience or None, ema=ema or None, verbose=None if not quiet else False,
            checkpoint=out / CHECKPOINT, checkpoint_every=10, resume=resume, device=device,
            distributed=distributed,
        )

    processes = 1
    if distributed:
        with parallel.process_group(resolve_device(device)):
            result, writer, processes = train_flow(), parallel.is_main_process(), parallel.world_size()
        if not writer:  # every process holds the same result; rank 0 writes it
            return
    else:
        result = train_flow()
    config = {
        "command": "train", "data": data, "model": model, "layers": architecture["n_layers"],
        "hidden": architecture["hidden"], **budget, "schedule": budget["schedule"] or "constant",
        "ema": ema, "seed": seed, "n_train_and_val": len(x), "val_fraction": val_fraction,
        "patience": patience, "device": device, "processes": processes, "flow": result.flow.config, "environment": environment(),
    }
    write_run(out, config, result, test, truth, seed, keep_checkpoint=result.stop_reason == "interrupted")
    typer.echo(summary_line(out, result, json.loads((out / "metrics.json").read_text())))


def train_auto(data: str, out: Path, seed: int, n: int, n_test: int, test_fraction: float) -> None:
    """``--model auto``: fit :class:`densitylab.AutoDensity`, write its model-selection table
    (``model_selection.csv``), the model, config, metrics and a samples figure."""
    from densitylab import datasets, plots
    from densitylab._files import atomic_directory
    from densitylab.auto import AutoDensity
    from densitylab.io import save
    from densitylab.plots import flows as flow_plots

    x, truth = datasets.resolve(data, n, seed)
    x, test = split_test(x, test_fraction, seed) if truth is None else (x, truth.sample(n_test, seed=seed + 1))
    auto = AutoDensity(random_state=seed).fit(x)
    log_p = auto.score_samples(test)
    metrics = {"test_nll": float(-log_p.mean()), "chosen": auto.best_name_,
               "cv_mean_log_likelihood": dict(zip(auto.cv_results_["candidate"], auto.cv_results_["mean_log_likelihood"], strict=True))}
    if truth is not None:
        metrics |= {"entropy": truth.entropy(), "entropy_gap": metrics["test_nll"] - truth.entropy()}
    config = {"command": "train", "data": data, "model": "auto", "seed": seed, "n_train": len(x),
              "params": auto.get_params(), "environment": environment()}
    samples = auto.sample(min(len(test), 2000), random_state=seed)
    figures = {"samples": flow_plots.samples_vs_data(test[:2000], samples, f"Test data and samples of the chosen model ({auto.best_name_})")}
    with atomic_directory(out) as staging:
        (staging / "config.json").write_text(json.dumps(config, indent=2))
        (staging / "metrics.json").write_text(json.dumps(metrics, indent=2))
        (staging / "model_selection.csv").write_text(auto.results_csv())
        save(auto, staging / "model")
        plots.save_figures(staging / "figures", figures)
    typer.echo(f"wrote {out}: chose {auto.best_name_} by cross-validation, test NLL {metrics['test_nll']:.4f}")


def environment() -> dict[str, str]:
    import numpy
    import torch

    from densitylab import __version__

    return {"densitylab": __version__, "torch": torch.__version__, "numpy": numpy.__version__,
            "python": platform.python_version(), "machine": platform.machine()}


def write_run(out: Path, config: dict, result, test, truth, seed: int, keep_checkpoint: bool) -> None:
    """Compute every output first, then swap the finished run directory into place."""
    from densitylab import plots
    from densitylab._files import atomic_directory
    from densitylab.evaluation import evaluate_flow
    from densitylab.io import save

    report = evaluate_flow(result.flow, test, truth, seed=seed)
    report |= {"best_epoch": result.best_epoch, "best_val_nll": result.best_val_nll,
               "epochs_run": result.epochs_run, "stop_reason": result.stop_reason,
               "wall_time": result.wall_time,
               "seconds_per_epoch": result.wall_time / max(result.epochs_run, 1)}
    figures = run_figures(result, test, truth, seed)
    with atomic_directory(out) as staging:
        (staging / "config.json").write_text(json.dumps(config, indent=2))
        (staging / "metrics.json").write_text(json.dumps(report, indent=2))
        with open(staging / "history.csv", "w", newline="") as handle:
            writer = csv.DictWriter(handle, ["epoch", "train_nll", "val_nll", "seconds"])
            writer.writeheader()
            writer.writerows(result.history.rows())
        save(result.flow, staging / "model")
        plots.save_figures(staging / "figures", figures)
        if keep_checkpoint and (out / CHECKPOINT).is_dir():
            shutil.copytree(out / CHECKPOINT, staging / CHECKPOINT)


def run_figures(result, test, truth, seed: int) -> dict:
    import numpy as np

    from densitylab.evaluation import flow_log_prob, flow_samples, latent_codes
    from densitylab.grids import make_grid
    from densitylab.plots import flows as flow_plots
    from densitylab.plots.kde import density_panels

    flow = result.flow
    samples = flow_samples(flow, min(len(test), 2000), seed)
    entropy = truth.entropy() if truth is not None else None
    figures = {
        "loss": flow_plots.loss_curves({"flow": result.history}, entropy, "Negative log-likelihood per epoch"),
        "samples": flow_plots.samples_vs_data(test[:2000], samples, "Test data and flow samples"),
        "latent": flow_plots.latent_codes(latent_codes(flow, test[:2000]), "Latent codes of test points"),
    }
    if flow.dim == 2:
        trace = [t.detach().double().numpy() for t in flow.trace_to_data(1000, seed=seed)]
        labels = ["prior z"] + [f"after layer {k}" for k in range(1, len(trace) - 1)] + ["data x"]
        figures["layers"] = flow_plots.trace_panels(trace, labels, "Samples after every layer, z -> x")
        bounds = truth.bounds() if truth is not None else flow_plots.robust_limits(test)
        grid = make_grid(bounds, 150)
        panels = {"flow p(x)": np.exp(flow_log_prob(flow, grid.points)).reshape(grid.shape)}
        if truth is not None:
            truth_image = np.exp(truth.log_prob(grid.points)).reshape(grid.shape)
            panels = {"true p(x)": truth_image, **panels}
        figures["density"] = density_panels(panels, grid, "Density on a 150x150 grid")
    return figures


def summary_line(out: Path, result, report: dict) -> str:
    line = f"wrote {out}: test NLL {report['test_nll']:.4f}"
    if "entropy_gap" in report:
        line += f" (entropy {report['entropy']:.4f}, gap {report['entropy_gap']:.4f})"
    return line + f", best epoch {result.best_epoch}, {result.wall_time:.1f} s"

"""``densitylab train``: fit a flow to a built-in distribution or a data file; write a run directory."""

from __future__ import annotations

import csv
import json
import os
import platform
import shutil
from contextlib import nullcontext
from pathlib import Path

import typer

from densitylab.cli._app import app

CHECKPOINT = "checkpoint"
UNTRAINED_EXIT = 3  # a run that wrote its directory but learned nothing usable


def parse_hidden(text: str | None) -> tuple[int, ...] | None:
    """``"32,32"`` -> ``(32, 32)``, ``None`` -> ``None`` (the model's default); else a clear error."""
    if text is None:
        return None
    try:
        widths = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise ValueError(f"--hidden must be comma-separated integers like 32,32; got {text!r}") from None
    if min(widths) < 1:
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
    model: str = typer.Option("realnvp", help="Flow model: realnvp, glow, nsf (rational-quadratic spline couplings; use with --standardize), maf (masked autoregressive, affine), recommended (a spline flow with its own recipe: 6 layers of 64,64, batches of 256, Adam 3e-3 cosine, standardised, about 1000 steps), tabular (the recipe for real data: a bounded spline flow whose budget grows with the data, early stopping, rounded columns dequantised), tabular-mixture (the same flow on a Gaussian-mixture base fitted to the data, for clusters), tabular-maf (the same recipe with 5 affine masked autoregressive layers), tabular-maf-spline (spline ones), cnf (a continuous normalizing flow trained by maximum likelihood through the ODE solver; history.csv counts function evaluations), cnf-fm (the same flow trained by flow matching, simulation-free), or auto (dl.AutoDensity: KDE, Gaussian mixture, tabular flow or tabular MAF, whichever has the best 3-fold cross-validated likelihood; writes OUT/model_selection.csv; only --seed, -n, --n-test, --test-fraction, --threads, --quiet apply). Options left unset take the model's defaults; for realnvp/glow/nsf those are the coursework's."),
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
    threads: int = typer.Option(1, help="Torch threads while training (1 is fastest for small flows); with --model auto every candidate uses them and a flow candidate trains that many folds at a time."),
    condition_on: str | None = typer.Option(None, "--condition-on", help="Learn p(other columns | these columns): comma-separated column indices of DATA, e.g. 0,1 (a conditional flow of --model, default tabular; score and sample then take these columns as the condition)."),
) -> None:
    """Train a normalizing flow and write config, metrics, history, model and figures to OUT."""
    from densitylab import datasets, flows
    from densitylab import distributed as parallel
    from densitylab._files import check_output, claimed_directory
    from densitylab._validation import check_positive_int
    from densitylab.flows.recipes import settings, split
    from densitylab.runtime import resolve_device
    from densitylab.training import fit

    if parallel.launched_by_torchrun() and int(os.environ["WORLD_SIZE"]) > 1 and not distributed:
        raise ValueError("started by torchrun with several processes: add --distributed")
    check_positive_int(threads, "--threads")
    if condition_on is not None:
        if distributed or resume or model == "auto" or threads != 1:
            raise ValueError("--condition-on trains one conditional flow on one process and "
                             "thread (no --distributed, --resume, --model auto or --threads)")
        check_positive_int(n_test, "--n-test")
        check_output(out, "train")
        chosen = {"n_layers": layers, "hidden": parse_hidden(hidden), "epochs": epochs,
                  "batch_size": batch_size, "lr": lr, "schedule": schedule,
                  "standardize": standardize}
        options = {k: v for k, v in chosen.items() if v is not None}
        return train_conditional(data, out, "tabular" if model == "realnvp" else model, options,
                                 condition_on, seed, n, n_test, test_fraction, val_fraction,
                                 patience, quiet, device)
    if model == "auto":
        if distributed or resume:
            raise ValueError("--model auto trains on one process and cannot resume")
        check_positive_int(n_test, "--n-test")
        check_output(out, "train")
        return train_auto(data, out, seed, n, n_test, test_fraction, threads, quiet)
    chosen = {"n_layers": layers, "hidden": parse_hidden(hidden),
              "epochs": epochs, "batch_size": batch_size, "lr": lr, "schedule": schedule,
              "standardize": standardize}
    settings(model, 1, **chosen)  # unknown model or schedule: fail before drawing data
    check_positive_int(n_test, "--n-test")
    resolve_device(device)  # an unknown device fails before any work
    writer = os.environ.get("RANK", "0") == "0"  # under torchrun only rank 0 writes OUT
    if writer:
        check_output(out, "train", transient={CHECKPOINT})
        if resume and not (out / CHECKPOINT).is_dir() and (out / "metrics.json").is_file():
            raise ValueError(f"{out} is a finished run, there is nothing to resume; "
                             "drop --resume to train it again")
    x, truth = datasets.resolve(data, n, seed)
    if truth is None:
        x, test = split_test(x, test_fraction, seed)
    else:
        test = truth.sample(n_test, seed=seed + 1)
    builder, architecture, budget = split(settings(model, len(x), val_fraction, **chosen))
    options = ({"activation": activation} if builder != "cnf" or activation != "leaky_relu" else {}) \
        | ({"scale": scale} if builder in ("realnvp", "glow") else {})  # a CNF's field is smooth: ELU
    flow = flows.build(builder, dim=x.shape[1], seed=seed, **architecture, **options)

    def train_flow():
        return fit(
            flow, x, **budget, val_fraction=val_fraction,
            seed=seed, patience=patience or None, ema=ema or None, verbose=None if not quiet else False,
            checkpoint=out / CHECKPOINT, checkpoint_every=10, resume=resume, device=device,
            distributed=distributed, threads=threads,
        )

    with claimed_directory(out, "train", transient={CHECKPOINT}) if writer else nullcontext() as claim:
        processes = 1
        if distributed:
            with parallel.process_group(resolve_device(device)):
                result, processes = train_flow(), parallel.world_size()
        else:
            result = train_flow()
        if not writer:  # every process holds the same result; rank 0 writes it
            return
        config = {
            "command": "train", "data": data, "model": model, "layers": architecture.get("n_layers"),
            "hidden": architecture["hidden"], **budget, "schedule": budget["schedule"],
            "ema": ema, "seed": seed, "n_train_and_val": len(x), "val_fraction": val_fraction,
            "patience": patience, "device": device, "processes": processes, "threads": threads, "flow": result.flow.config, "environment": environment(),
        }
        report = write_run(claim, config, result, x, test, truth, seed,
                           keep_checkpoint=result.stop_reason == "interrupted")
    if not report["trained"]:
        typer.echo(f"error: training {result.stop_reason} and no epoch improved on the untrained "
                   f"model; {out} is marked untrained (try a smaller --lr)", err=True)
        raise typer.Exit(UNTRAINED_EXIT)
    typer.echo(summary_line(out, result, report))


def train_auto(data: str, out: Path, seed: int, n: int, n_test: int, test_fraction: float,
               threads: int, quiet: bool) -> None:
    """``--model auto``: fit :class:`densitylab.AutoDensity`, write its model-selection table
    (``model_selection.csv``), the model, config, metrics and a samples figure."""
    from densitylab import datasets, plots
    from densitylab._files import output_directory
    from densitylab.auto import AutoDensity
    from densitylab.io import save

    x, truth = datasets.resolve(data, n, seed)
    x, test = split_test(x, test_fraction, seed) if truth is None else (x, truth.sample(n_test, seed=seed + 1))
    auto = AutoDensity(random_state=seed, threads=threads,
                       verbose=False if quiet else None).fit(x)
    log_p = auto.score_samples(test)
    metrics = {"test_nll": float(-log_p.mean()), "chosen": auto.best_name_,
               "cv_mean_log_likelihood": dict(zip(auto.cv_results_["candidate"], auto.cv_results_["mean_log_likelihood"], strict=True))}
    if truth is not None:
        metrics |= {"entropy": truth.entropy(), "entropy_gap": metrics["test_nll"] - truth.entropy()}
    config = {"command": "train", "data": data, "model": "auto", "seed": seed, "n_train": len(x),
              "params": auto.get_params(), "environment": environment()}
    title = f"Test data and samples of the chosen model ({auto.best_name_})"
    figures = {"samples": plots.samples(auto, test[:2000], seed=seed, title=title)}
    with output_directory(out, "train") as staging:
        (staging / "config.json").write_text(json.dumps(config, indent=2))
        (staging / "metrics.json").write_text(json.dumps(metrics, indent=2))
        (staging / "model_selection.csv").write_text(auto.results_csv())
        save(auto, staging / "model")
        plots.save_figures(staging / "figures", figures)
    typer.echo(f"wrote {out}: chose {auto.best_name_} by cross-validation, test NLL {metrics['test_nll']:.4f}")


def parse_columns(text: str, width: int) -> list[int]:
    """``"0,2"`` -> ``[0, 2]``: distinct column indices of a ``width``-column table, leaving at
    least one column to model; else a clear error."""
    try:
        columns = [int(part) for part in text.split(",")]
    except ValueError:
        raise ValueError(f"--condition-on must be column indices like 0,1; got {text!r}") from None
    if len(set(columns)) != len(columns) or not all(0 <= c < width for c in columns):
        raise ValueError(f"--condition-on needs distinct indices in 0..{width - 1}; got {text!r}")
    if len(columns) >= width:
        raise ValueError(f"--condition-on leaves no column to model (the data has {width})")
    return columns


def train_conditional(data: str, out: Path, model: str, options: dict, condition_on: str,
                      seed: int, n: int, n_test: int, test_fraction: float, val_fraction: float,
                      patience: int, quiet: bool, device: str) -> None:
    """``--condition-on``: a :class:`densitylab.estimators.ConditionalFlowDensity` of the other
    columns given these; writes config (with the columns), metrics, the model and a figure."""
    import numpy as np

    from densitylab import datasets, plots
    from densitylab._files import output_directory
    from densitylab.estimators import ConditionalFlowDensity
    from densitylab.io import save
    from densitylab.plots import flows as flow_plots

    x, truth = datasets.resolve(data, n, seed)
    given = parse_columns(condition_on, x.shape[1])
    modelled = [j for j in range(x.shape[1]) if j not in given]
    x, test = split_test(x, test_fraction, seed) if truth is None else (
        x, truth.sample(n_test, seed=seed + 1))
    est = ConditionalFlowDensity(model=model, val_fraction=val_fraction, patience=patience or None,
                                 random_state=seed, verbose=None if not quiet else False, device=device,
                                 **options)
    est.fit(x[:, given], x[:, modelled])
    log_p = est.score_samples(test[:, given], test[:, modelled])
    metrics = {"test_conditional_nll": float(-log_p.mean()),
               "test_conditional_nll_se": float(log_p.std(ddof=1) / np.sqrt(len(log_p))),
               "n_test": len(test), "trained": est.best_epoch_ > 0, "best_epoch": est.best_epoch_,
               "best_val_nll": est.best_val_nll_}
    config = {"command": "train", "data": data, "model": model, "condition_on": given,
              "modelled": modelled, "seed": seed, "n_train_and_val": len(x),
              "params": est.get_params(), "flow": est.flow_.config, "environment": environment()}
    figures = {"loss": plots.loss({"flow": est.history_}, title="Conditional NLL per epoch")}
    if x.shape[1] == 2:  # the data and one draw given each test point's condition
        drawn = np.empty_like(test[:2000])
        drawn[:, given] = test[:2000, given]
        drawn[:, modelled] = est.sample(test[:2000, given], random_state=seed)
        figures["samples"] = flow_plots.samples_vs_data(
            test[:2000], drawn, "Test data and one draw given each test point's condition")
    with output_directory(out, "train") as staging:
        (staging / "config.json").write_text(json.dumps(config, indent=2, default=str))
        (staging / "metrics.json").write_text(json.dumps(metrics, indent=2))
        save(est, staging / "model")
        plots.save_figures(staging / "figures", figures)
    typer.echo(f"wrote {out}: p(columns {modelled} | columns {given}), test conditional NLL "
               f"{metrics['test_conditional_nll']:.4f}, best epoch {est.best_epoch_}")


def environment() -> dict[str, str]:
    import numpy
    import torch

    from densitylab import __version__

    return {"densitylab": __version__, "torch": torch.__version__, "numpy": numpy.__version__,
            "python": platform.python_version(), "machine": platform.machine()}


def write_run(claim, config: dict, result, x, test, truth, seed: int, keep_checkpoint: bool) -> dict:
    """Compute every output first, then swap the finished run directory into place.

    Returns the metrics; ``trained`` is false when no epoch improved on the untrained model
    (a run that diverged at once), and ``densitylab score``/``sample`` refuse such a run. The
    training data's log-densities are recorded as quantiles, for ``score --contamination``.
    """
    import numpy as np

    from densitylab import plots
    from densitylab.evaluation import evaluate_flow, flow_log_prob, in_float64
    from densitylab.flows import function_evaluations
    from densitylab.io import save
    from densitylab.outliers import QUANTILE_LEVELS

    out = claim.path
    report = evaluate_flow(result.flow, test, truth, seed=seed)
    scorer = in_float64(result.flow)  # (the copy that scores, so that its evaluations count)
    before = function_evaluations(scorer)
    train_scores = flow_log_prob(scorer, x)
    if before is not None:  # a continuous flow: the solver's work to score the training points
        report["score_nfe"] = function_evaluations(scorer) - before
    report["train_log_density_quantiles"] = np.quantile(train_scores, QUANTILE_LEVELS).tolist()
    report |= {"trained": result.best_epoch > 0, "best_epoch": result.best_epoch,
               f"best_{validation_column(result)}": result.best_val_loss,
               "epochs_run": result.epochs_run, "stop_reason": result.stop_reason,
               "wall_time": result.wall_time,
               "seconds_per_epoch": result.wall_time / max(result.epochs_run, 1)}
    figures = run_figures(result, test, truth, seed)
    with claim.replace() as staging:
        (staging / "config.json").write_text(json.dumps(config, indent=2))
        (staging / "metrics.json").write_text(json.dumps(report, indent=2))
        with open(staging / "history.csv", "w", newline="") as handle:
            writer = csv.DictWriter(handle, ["epoch", *result.history.columns, "seconds"])
            writer.writeheader()
            writer.writerows(result.history.rows())
        save(result.flow, staging / "model")
        plots.save_figures(staging / "figures", figures)
        if keep_checkpoint and (out / CHECKPOINT).is_dir():
            shutil.copytree(out / CHECKPOINT, staging / CHECKPOINT)
    return report


def run_figures(result, test, truth, seed: int) -> dict:
    import numpy as np

    from densitylab.evaluation import flow_log_prob, flow_samples, latent_codes
    from densitylab.grids import make_grid
    from densitylab.plots import flows as flow_plots
    from densitylab.plots.kde import density_panels

    flow = result.flow
    entropy = truth.entropy() if truth is not None else None
    if flow.dim == 1:  # a histogram of the test data under the density, and samples beside it
        from densitylab import plots

        return {
            "loss": plots.loss(result, entropy=entropy, title="Negative log-likelihood per epoch"),
            "density": plots.density(flow, data=test[:2000], seed=seed),
            "samples": plots.samples(flow, test[:2000], seed=seed),
        }
    samples = flow_samples(flow, min(len(test), 2000), seed)
    figures = {
        "loss": loss_figure(result.history, entropy),
        "samples": flow_plots.samples_vs_data(test[:2000], samples, "Test data and flow samples"),
        "latent": flow_plots.latent_codes(latent_codes(flow, test[:2000]), "Latent codes of test points"),
    }
    if flow.dim == 2:
        trace = [t.detach().double().numpy() for t in flow.trace_to_data(1000, seed=seed)]
        steps = len(trace) - 1
        labels = (["prior z"] + [f"after layer {k}" for k in range(1, steps)] + ["data x"]
                  if flow.config["builder"] != "cnf" else [f"t = {k / steps:.2f}" for k in range(steps + 1)])
        figures["layers"] = flow_plots.trace_panels(trace, labels, "Samples after every layer, z -> x")
        bounds = truth.bounds() if truth is not None else flow_plots.robust_limits(test)
        grid = make_grid(bounds, 150)
        panels = {"flow p(x)": np.exp(flow_log_prob(flow, grid.points)).reshape(grid.shape)}
        if truth is not None:
            truth_image = np.exp(truth.log_prob(grid.points)).reshape(grid.shape)
            panels = {"true p(x)": truth_image, **panels}
        figures["density"] = density_panels(panels, grid, "Density on a 150x150 grid")
    else:  # D > 2: 1-D and 2-D marginals (estimated from samples) against the test data
        from densitylab import plots

        figures["density"] = plots.pairs(flow, test[:2000], seed=seed,
                                         title="Marginals of the flow and the test data")
        figures["layers"] = plots.layers(flow, seed=seed)
    return figures


def validation_column(result) -> str:
    """The history's validation column: ``val_nll``, or the loss another objective validates by."""
    return next(c for c in result.history.columns if c.startswith("val_") and c != "val_nfe")


def loss_figure(history, entropy: float | None):
    """Training curves: the NLL, or a flow-matching run's own loss (no entropy floor to it)."""
    from densitylab.plots import flows as flow_plots
    from densitylab.training import History

    if "train_nll" in history.columns:
        return flow_plots.loss_curves({"flow": history}, entropy, "Negative log-likelihood per epoch")
    matched = History({"train_nll": history.train_fm, "val_nll": history.val_fm}, history.seconds)
    return flow_plots.loss_curves({"flow": matched}, None, "Flow-matching loss per epoch",
                                  ylabel="squared velocity error per point")


def summary_line(out: Path, result, report: dict) -> str:
    line = f"wrote {out}: test NLL {report['test_nll']:.4f}"
    if "entropy_gap" in report:
        line += f" (entropy {report['entropy']:.4f}, gap {report['entropy_gap']:.4f})"
    return line + f", best epoch {result.best_epoch}, {result.wall_time:.1f} s"

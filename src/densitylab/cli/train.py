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
from densitylab.cli._data import MISSING_HELP

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


MAX_PAIRS_COLUMNS = 12
"""Above this many columns the pairs figure (d x d panels, minutes to draw at 30 columns) is
skipped, with a note."""


def pairs_figure_allowed(dim: int) -> bool:
    """Whether to draw a pairs figure of ``dim`` columns (else say why not, on stderr)."""
    if dim <= MAX_PAIRS_COLUMNS:
        return True
    typer.echo(f"note: {dim} columns: the pairs figure ({dim}x{dim} panels) is skipped above "
               f"{MAX_PAIRS_COLUMNS} columns; use dl.plots.pairs on a selection of them",
               err=True)
    return False


def check_data(x, name: str) -> None:
    """Refuse, before any training, data no model can learn: a constant column."""
    import numpy as np

    constant = np.flatnonzero(np.ptp(x, axis=0) == 0)
    if len(constant):
        raise ValueError(f"column {int(constant[0])} of {name} is constant: it has no density "
                         "to learn (drop it)")


def check_model_size(make) -> None:
    """Count the parameters ``make()`` would build, on PyTorch's ``meta`` device (no memory),
    and refuse a model too large to allocate before anything is."""
    import torch

    from densitylab._schema import MAX_PARAMETERS

    with torch.device("meta"):
        count = sum(p.numel() for p in make().parameters())
    if count > MAX_PARAMETERS:
        raise ValueError(f"this model would have {count:,} parameters, more than densitylab "
                         f"builds ({MAX_PARAMETERS:,}): choose smaller --hidden or --layers")


def split_test(x, test_fraction: float, seed: int, rows=None):
    """Split a user's data into (fit, test) parts by a seeded permutation that keeps every
    copy of a row on one side (a copy in both would score the test set on training data); the
    number of copies found is reported on stderr. ``rows`` (default ``x``) are split so, the
    copies being those of ``x`` (numbers standing for a table with text)."""
    import numpy as np

    from densitylab._ties import duplicate_count, grouped_permutation, tie_groups

    if not 0 < test_fraction < 1:
        raise ValueError(f"--test-fraction must lie strictly between 0 and 1, got {test_fraction}")
    groups = tie_groups(x)
    copies = duplicate_count(groups)
    if copies == 0:
        order = np.random.default_rng(seed).permutation(len(x))
        n_test = max(2, round(test_fraction * len(x)))
    else:
        order = grouped_permutation(groups, seed)
        ordered = groups[order]
        starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])  # group boundaries
        n_test = int(starts[np.argmin(np.abs(starts - test_fraction * len(x)))]) or int(
            starts[1] if len(starts) > 1 else len(x))
        typer.echo(f"note: {copies} of the {len(x)} rows repeat another row (to 1e-6 standard "
                   "deviations); all copies of a row stay on one side of the train/test split",
                   err=True)
    if n_test < 2 or len(x) - n_test < 2:
        raise ValueError(f"the data hold too few distinct rows ({len(x) - copies}) to train on "
                         "2 and test on 2")
    rows = x if rows is None else rows
    return rows[order[n_test:]], rows[order[:n_test]]


@app.command()
def train(
    data: str = typer.Argument(..., help="A built-in distribution name (see `densitylab datasets`) or a .csv/.npy/.npz file."),
    out: Path = typer.Option(..., "--out", "-o", help="Run directory to write."),
    model: str | None = typer.Option(None, help="Default: tabular for a data file (the recipe dl.FlowDensity() uses: a table's scale, rounding and size need it; the coursework realnvp ends in NaNs on many real tables; a table with a text or --column-types categorical column is modelled as P(category) x p(rest | category), the rest by the tabular flow shared, per category or conditional on it, whichever cross-validates best), realnvp for a built-in distribution (the coursework's). Flow model: realnvp, glow, nsf (rational-quadratic spline couplings; use with --standardize), maf (masked autoregressive, affine), recommended (a spline flow with its own recipe: 6 layers of 64,64, batches of 256, Adam 3e-3 cosine, standardised, about 1000 steps), tabular (the recipe for real data: a bounded spline flow whose budget grows with the data, early stopping, rounded columns dequantised), tabular-mixture (the same flow on a Gaussian-mixture base fitted to the data, for clusters), tabular-maf (the same recipe with 5 affine masked autoregressive layers), tabular-maf-spline (spline ones), cnf (a continuous normalizing flow trained by maximum likelihood through the ODE solver; history.csv counts function evaluations), cnf-fm (a wider continuous flow trained by flow matching on optimally paired base draws, simulation-free: no ODE solved in training), or auto (dl.AutoDensity: KDE, Gaussian mixture, tabular flow or tabular MAF, whichever has the best 3-fold cross-validated likelihood; writes OUT/model_selection.csv; only --seed, -n, --n-test, --test-fraction, --threads, --quiet apply). Options left unset take the model's defaults; for realnvp/glow/nsf those are the coursework's."),
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
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar, nor the note that a continuous flow's evaluation takes a while."),
    threads: int | None = typer.Option(None, help="Threads while training (torch, BLAS, OpenMP, numba; restored after); default: chosen from the work and the cores other processes leave idle (1 for small flows); with --model auto the most any candidate uses, a flow candidate training that many folds at a time. The count used is recorded in config.json."),
    images: bool = typer.Option(False, "--images", help="DATA is images: an .npy/.npz integer array (N, H, W) or (N, C, H, W) (digits-images and PNG folders are images anyway); --model glow or realnvp then trains a multi-scale image flow (--layers: steps per scale, --hidden: conditioner channels)."),
    pixel_levels: int | None = typer.Option(None, help="Images: grey levels (default: detected; 17 for digits-images, 256 for PNG)."),
    dequantization: str = typer.Option("uniform", help="Images: uniform or variational dequantization."),
    scales: int = typer.Option(2, help="Images: scales of the multi-scale flow."),
    missing: str = typer.Option("error", "--missing", help=MISSING_HELP),
    column_types: str | None = typer.Option(None, "--column-types", help="With --model auto: declare column types, e.g. price=positive,rooms=integer,share=bounded(0;1) (name or 0-based index = continuous, positive, bounded(a;b), integer, integer(step), rounded(step), binary, categorical); the others are detected. A column holding text is categorical (also without --model auto): the model is then P(category) x p(rest | category), the rest modelled by one shared model, one per category or a conditional flow given the category, whichever cross-validates best (dl.AutoDensity, dl.CategoricalDensity; the default model's rest is the tabular flow). Discrete columns are scored as log-probabilities, continuous ones as log-densities; the types are printed and saved with the model."),
    guard: float | None = typer.Option(None, "--guard", help="Weight eps of the defensive component (densitylab.guard): the model saved is (1 - eps) flow + eps N(mean, (2 sd)^2) of the training data, so no point scores absurdly low off the data; costs at most -log(1 - eps) nats anywhere. Default: 0.01 for the tabular recipes (as dl.FlowDensity; with --condition-on, N(y) of the modelled columns), 0 for the others (the coursework's flows, saved as plain flows)."),
    condition_on: str | None = typer.Option(None, "--condition-on", help="Learn p(other columns | these columns): comma-separated column indices of DATA, e.g. 0,1 (a conditional flow of --model, default tabular; score and sample then take these columns as the condition)."),
) -> None:
    """Train a normalizing flow and write config, metrics, history, model and figures to OUT."""
    from densitylab import distributed as parallel
    from densitylab import flows
    from densitylab._files import check_output, claimed_directory
    from densitylab._validation import check_positive_int
    from densitylab.cli._data import is_builtin, read_data
    from densitylab.flows.recipes import TABULAR_MODELS, settings, split
    from densitylab.guard import guard_weight
    from densitylab.runtime import resolve_device
    from densitylab.training import fit

    default = model is None
    if model is None:
        model = "realnvp" if is_builtin(data) else "tabular"
    if parallel.launched_by_torchrun() and int(os.environ["WORLD_SIZE"]) > 1 and not distributed:
        raise ValueError("started by torchrun with several processes: add --distributed")
    if threads is not None:
        check_positive_int(threads, "--threads")
    from densitylab.cli.train_images import is_image_data, train_images

    if guard is not None and model == "auto":
        raise ValueError("--guard applies to the flows of train (--model auto's candidates "
                         "carry their own)")
    if is_image_data(data, images):
        if resume or condition_on is not None or guard is not None:
            raise ValueError("image flows take neither --resume, --condition-on nor --guard")
        width = parse_hidden(hidden)
        return train_images(data, out, model, layers, width[0] if width else None, epochs,
                            batch_size, lr, seed, val_fraction, patience, pixel_levels,
                            dequantization, scales, device, threads, quiet, environment(),
                            distributed)
    if condition_on is not None:
        if distributed or resume or model == "auto" or threads is not None:
            raise ValueError("--condition-on trains one conditional flow on one process and "
                             "thread (no --distributed, --resume, --model auto or --threads)")
        check_positive_int(n_test, "--n-test", minimum=2)
        check_output(out, "train")
        chosen = {"n_layers": layers, "hidden": parse_hidden(hidden), "epochs": epochs,
                  "batch_size": batch_size, "lr": lr, "schedule": schedule,
                  "standardize": standardize, "guard": guard}
        options = {k: v for k, v in chosen.items() if v is not None}
        return train_conditional(data, out, "tabular" if model == "realnvp" else model, options,
                                 condition_on, seed, n, n_test, test_fraction, val_fraction,
                                 patience, quiet, device)
    if default and model == "tabular":  # a user's file: it may hold categorical columns
        from functools import partial

        from densitylab.cli.train_categorical import categorical_table, train_by_category

        found = categorical_table(data, missing, partial(parse_column_types, column_types))
        if found is not None:
            flow_options = {"--layers": layers, "--hidden": hidden, "--epochs": epochs,
                            "--batch-size": batch_size, "--lr": lr, "--schedule": schedule,
                            "--standardize": standardize}
            given = [k for k, v in flow_options.items() if v is not None]
            if given or distributed or resume:
                raise ValueError(f"{data} has categorical columns: the tabular recipe models "
                                 "them as P(category) x p(rest | category) with its own "
                                 f"settings (no {', '.join(given) or '--distributed/--resume'})")
            check_output(out, "train")
            return train_by_category(*found, data, out, seed, test_fraction, threads,
                                     environment(), split_test, training_quantiles,
                                     candidates=("flow",), quiet=quiet)
    if model == "auto":
        if distributed or resume:
            raise ValueError("--model auto trains on one process and cannot resume")
        check_positive_int(n_test, "--n-test", minimum=2)
        check_output(out, "train")
        return train_auto(data, out, seed, n, n_test, test_fraction, threads, quiet,
                          column_types, missing)
    if column_types is not None:
        raise ValueError("--column-types applies to --model auto")
    guard = guard_weight(guard, model in TABULAR_MODELS)
    chosen = {"n_layers": layers, "hidden": parse_hidden(hidden),
              "epochs": epochs, "batch_size": batch_size, "lr": lr, "schedule": schedule,
              "standardize": standardize}
    settings(model, 1, **chosen)  # unknown model or schedule: fail before drawing data
    check_positive_int(n_test, "--n-test", minimum=2)
    resolve_device(device)  # an unknown device fails before any work
    writer = os.environ.get("RANK", "0") == "0"  # under torchrun only rank 0 writes OUT
    if writer:
        check_output(out, "train", transient={CHECKPOINT})
        if resume and not (out / CHECKPOINT).is_dir() and (out / "metrics.json").is_file():
            raise ValueError(f"{out} is a finished run, there is nothing to resume; "
                             "drop --resume to train it again")
    x, truth, names = read_data(data, n, seed, missing)
    check_data(x, data)
    if truth is None:
        x, test = split_test(x, test_fraction, seed)
    else:
        test = truth.sample(n_test, seed=seed + 1)
    builder, architecture, budget = split(settings(model, len(x), val_fraction, **chosen))
    fitted_x = dequantised(x, seed) if model in TABULAR_MODELS else x
    options = ({"activation": activation} if builder != "cnf" or activation != "leaky_relu" else {}) \
        | ({"scale": scale} if builder in ("realnvp", "glow") else {})  # a CNF's field is smooth: ELU
    check_model_size(lambda: flows.build(builder, dim=x.shape[1], seed=seed, **architecture,
                                         **options))
    flow = flows.build(builder, dim=x.shape[1], seed=seed, **architecture, **options)

    def train_flow():
        return fit(
            flow, fitted_x, **budget, val_fraction=val_fraction,
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
        if not quiet and flows.function_evaluations(result.flow) is not None:
            typer.echo(f"evaluating on {len(test):,} test points, a density grid and the figures: "
                       "a continuous flow solves its ODE for every point, which can take minutes",
                       err=True)
        config = {
            "command": "train", "data": data, "model": model, "layers": architecture.get("n_layers"),
            "hidden": architecture["hidden"], **budget, "schedule": budget["schedule"],
            "ema": ema, "seed": seed, "n_train_and_val": len(x), "val_fraction": val_fraction,
            "patience": patience, "device": device, "processes": processes, "threads": result.threads, "flow": result.flow.config, "environment": environment(),
            "columns": names, "guard": guard,
        }
        report = write_run(claim, config, result, x, test, truth, seed,
                           keep_checkpoint=result.stop_reason == "interrupted", guard=guard)
    if not report["trained"]:
        typer.echo(f"error: training {result.stop_reason} and no epoch improved on the untrained "
                   f"model; {out} is marked untrained (try a smaller --lr)", err=True)
        raise typer.Exit(UNTRAINED_EXIT)
    typer.echo(summary_line(out, result, report))


def dequantised(x, seed: int):
    """The tabular recipe's treatment of rounded columns, as ``dl.FlowDensity`` does it."""
    from densitylab._rounding import dequantise, rounding_steps

    steps = rounding_steps(x)
    return dequantise(x, steps, seed) if steps.any() else x


def parse_column_types(text: str | None, names: list[str] | None) -> str | dict:
    """``"price=positive,2=integer"`` -> ``{0: "positive", 2: "integer"}`` for a header
    ``price,...`` (``;`` inside parentheses separates a type's arguments); ``None`` ->
    ``"auto"``."""
    if text is None:
        return "auto"
    declared: dict = {}
    for item in text.split(","):
        key, sep, spec = item.partition("=")
        if not sep or not key.strip() or not spec.strip():
            raise ValueError(f"--column-types takes COLUMN=TYPE pairs like rooms=integer; "
                             f"got {item!r}")
        key = key.strip()
        if names is not None and key in names:
            column = names.index(key)
        elif key.isdigit():
            column = int(key)
        else:
            known = f"columns {names}" if names else "no header: name columns by index"
            raise ValueError(f"--column-types names a column {key!r}; the data have {known}")
        declared[column] = spec.strip().replace(";", ",")
    return declared


def train_auto(data: str, out: Path, seed: int, n: int, n_test: int, test_fraction: float,
               threads: int | None, quiet: bool, column_types: str | None = None,
               missing: str = "error") -> None:
    """``--model auto``: fit :class:`densitylab.AutoDensity`, write its model-selection table
    (``model_selection.csv``), the model, config, metrics and a samples figure."""
    from densitylab import plots
    from densitylab import threads as threads_
    from densitylab._files import output_directory
    from densitylab.auto import AutoDensity
    from densitylab.cli._data import read_data
    from densitylab.io import save

    threads = threads_.count(threads)  # the most threads any candidate uses, recorded below
    from functools import partial

    from densitylab.cli.train_categorical import categorical_table, train_by_category

    found = categorical_table(data, missing, partial(parse_column_types, column_types))
    if found is not None:  # text or declared categorical columns: p(category) p(rest | category)
        return train_by_category(*found, data, out, seed, test_fraction, threads, environment(),
                                 split_test, training_quantiles, candidates=None, quiet=quiet)
    x, truth, names = read_data(data, n, seed, missing)
    check_data(x, data)
    x, test = split_test(x, test_fraction, seed) if truth is None else (x, truth.sample(n_test, seed=seed + 1))
    declared = parse_column_types(column_types, names)
    auto = AutoDensity(random_state=seed, threads=threads, verbose=False if quiet else None,
                       column_types=declared).fit(x)
    log_p = auto.score_samples(test)
    metrics = {"test_nll": float(-log_p.mean()), "chosen": auto.best_name_,
               "cv_mean_log_likelihood": dict(zip(auto.cv_results_["candidate"], auto.cv_results_["mean_log_likelihood"], strict=True)),
               # out-of-fold: each training row scored by the winner's fold that held it out
               "train_log_density_quantiles": training_quantiles(auto.oof_score_samples_),
               "interrupted": auto.interrupted_}
    if truth is not None:
        metrics |= {"entropy": truth.entropy(), "entropy_gap": metrics["test_nll"] - truth.entropy()}
    labels = names or [f"x{j + 1}" for j in range(x.shape[1])]
    types = {name: t.describe() for name, t in zip(labels, auto.column_types_, strict=True)}
    metrics["column_types"] = types
    config = {"command": "train", "data": data, "model": "auto", "seed": seed, "n_train": len(x),
              "threads": threads, "params": auto.get_params(), "environment": environment(),
              "columns": names}
    title = f"Test data and samples of the chosen model ({auto.best_name_})"
    figures = ({"samples": plots.samples(auto, test[:2000], seed=seed, title=title)}
               if pairs_figure_allowed(x.shape[1]) else {})
    with output_directory(out, "train") as staging:
        (staging / "config.json").write_text(json.dumps(config, indent=2))
        (staging / "metrics.json").write_text(json.dumps(metrics, indent=2))
        (staging / "model_selection.csv").write_text(auto.results_csv())
        save(auto, staging / "model")
        plots.save_figures(staging / "figures", figures)
    for name, described in types.items():
        typer.echo(f"column {name}: {described}")
    stopped = ("" if auto.interrupted_ is None else
               f" (Ctrl-C stopped model selection during {auto.interrupted_}; chose among the "
               "candidates done before it)")
    typer.echo(f"wrote {out}: chose {auto.best_name_} by cross-validation, test NLL {metrics['test_nll']:.4f}{stopped}")


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

    from densitylab import plots
    from densitylab._files import output_directory
    from densitylab.cli._data import read_data
    from densitylab.estimators import ConditionalFlowDensity
    from densitylab.io import save
    from densitylab.plots import flows as flow_plots

    x, truth, names = read_data(data, n, seed)
    check_data(x, data)
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
               "best_val_nll": est.best_val_nll_,
               "train_log_density_quantiles": training_quantiles(
                   est.score_samples(x[:, given], x[:, modelled]))}
    config = {"command": "train", "data": data, "model": model, "condition_on": given,
              "modelled": modelled, "columns": names, "seed": seed, "n_train_and_val": len(x),
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


def training_quantiles(log_p) -> list[float]:
    """The training data's log-densities at :data:`~densitylab.outliers.QUANTILE_LEVELS`,
    recorded in ``metrics.json`` so ``score --contamination`` can set a threshold later."""
    import numpy as np

    from densitylab.outliers import QUANTILE_LEVELS

    return np.quantile(log_p, QUANTILE_LEVELS).tolist()


def environment() -> dict[str, str]:
    import numpy
    import torch

    from densitylab import __version__

    return {"densitylab": __version__, "torch": torch.__version__, "numpy": numpy.__version__,
            "python": platform.python_version(), "machine": platform.machine()}


def guarded(result, x, model: str, guard: float, seed: int):
    """The trained flow with the defensive component of weight ``guard`` fitted to ``x`` (the
    training data, as ``dl.FlowDensity`` fits it): the ``FlowDensity`` a run saves, scores and
    draws, so the shell's numbers are Python's ``score_samples``."""
    import numpy as np

    from densitylab.estimators import FlowDensity
    from densitylab.guard import Guard

    est = FlowDensity(model=model, guard=guard, random_state=seed)
    est.restore(result.flow, {"best_epoch": result.best_epoch,
                              "best_val_nll": result.best_val_loss,
                              "shift": np.zeros(x.shape[1]).tolist(),
                              "guard": Guard.of_data(x, guard).summary()})
    return est


def guarded_report(model, test, truth, seed: int) -> dict:
    """The numbers of :func:`~densitylab.evaluation.evaluate_flow` that are the density's or
    its samples', for the guarded ``FlowDensity`` ``model`` a run saves (the round trip and
    the latent codes stay the flow's)."""
    from densitylab import metrics

    test_nll, test_nll_se = metrics.nll_with_error(model.score_samples(test))
    samples = model.sample(5000, random_state=seed)
    report = {"test_nll": test_nll, "test_nll_se": test_nll_se, "guard_weight": model.guard,
              "sample_quality": metrics.sample_quality(
                  samples, test, truth.log_prob if truth is not None else None, max_points=5000)}
    if truth is not None:
        report["entropy_gap"] = metrics.entropy_gap(test_nll, truth.entropy())
        if model.n_features_in_ == 2:
            report["grid"] = metrics.grid_divergences(truth.log_prob, model.score_samples,
                                                      truth.bounds(), 200)
    return report


def write_run(claim, config: dict, result, x, test, truth, seed: int, keep_checkpoint: bool,
              guard: float = 0.0) -> dict:
    """Compute every output first, then swap the finished run directory into place.

    Returns the metrics; ``trained`` is false when no epoch improved on the untrained model
    (a run that diverged at once), and ``densitylab score``/``sample`` refuse such a run. The
    training data's log-densities are recorded as quantiles, for ``score --contamination``.
    With a ``guard`` weight the run saves the guarded ``FlowDensity``; its test NLL, training
    quantiles and density figures are the guarded density's (the latent codes and round trip
    stay the flow's).
    """
    from densitylab import plots
    from densitylab.evaluation import evaluate_flow, flow_log_prob, in_float64
    from densitylab.flows import function_evaluations
    from densitylab.io import save

    out = claim.path
    report = evaluate_flow(result.flow, test, truth, seed=seed)
    scorer = in_float64(result.flow)  # (the copy that scores, so that its evaluations count)
    before = function_evaluations(scorer)
    model = guarded(result, x, config["model"], guard, seed) if guard > 0 else result.flow
    train_scores = model.score_samples(x) if guard > 0 else flow_log_prob(scorer, x)
    if guard > 0:
        report |= guarded_report(model, test, truth, seed)
    if before is not None:  # a continuous flow: the solver's work to score the training points
        report["score_nfe"] = function_evaluations(scorer) - before
    report["train_log_density_quantiles"] = training_quantiles(train_scores)
    report |= {"trained": result.best_epoch > 0, "best_epoch": result.best_epoch,
               f"best_{validation_column(result)}": result.best_val_loss,
               "epochs_run": result.epochs_run, "stop_reason": result.stop_reason,
               "wall_time": result.wall_time,
               "seconds_per_epoch": result.wall_time / max(result.epochs_run, 1)}
    figures = run_figures(result, test, truth, seed, model)
    with claim.replace() as staging:
        (staging / "config.json").write_text(json.dumps(config, indent=2))
        (staging / "metrics.json").write_text(json.dumps(report, indent=2))
        with open(staging / "history.csv", "w", newline="") as handle:
            writer = csv.DictWriter(handle, ["epoch", *result.history.columns, "seconds"])
            writer.writeheader()
            writer.writerows(result.history.rows())
        save(model, staging / "model")
        plots.save_figures(staging / "figures", figures)
        if keep_checkpoint and (out / CHECKPOINT).is_dir():
            shutil.copytree(out / CHECKPOINT, staging / CHECKPOINT)
    return report


def run_figures(result, test, truth, seed: int, model) -> dict:
    """The run's figures; densities and samples are ``model``'s (the flow, or the guarded
    ``FlowDensity`` the run saves), the latent codes and layers the flow's."""
    import numpy as np

    from densitylab import views
    from densitylab.evaluation import latent_codes
    from densitylab.grids import make_grid
    from densitylab.plots import flows as flow_plots
    from densitylab.plots.kde import density_panels

    flow = result.flow
    entropy = truth.entropy() if truth is not None else None
    if flow.dim == 1:  # a histogram of the test data under the density, and samples beside it
        from densitylab import plots

        return {
            "loss": plots.loss(result, entropy=entropy, title="Negative log-likelihood per epoch"),
            "density": plots.density(model, data=test[:2000], seed=seed),
            "samples": plots.samples(model, test[:2000], seed=seed),
        }
    samples = views.draw(model, min(len(test), 2000), seed)
    figures = {
        "loss": loss_figure(result.history, entropy),
        "samples": flow_plots.samples_vs_data(test[:2000], samples, "Test data and flow samples"),
        "latent": flow_plots.latent_codes(latent_codes(flow, test[:2000]), "Latent codes of test points"),
    }
    if flow.dim == 2:
        trace = [t.detach().double().numpy() for t in flow.trace_to_data(1000, seed=seed)]
        steps = len(trace) - 1
        labels = (flow_plots.trace_labels(steps) if flow.config["builder"] != "cnf"
                  else [f"t = {k / steps:.2f}" for k in range(steps + 1)])
        figures["layers"] = flow_plots.trace_panels(trace, labels, "Samples after every layer, z -> x")
        bounds = truth.bounds() if truth is not None else flow_plots.robust_limits(test)
        grid = make_grid(bounds, 150)
        panels = {"flow p(x)": np.exp(views.log_density(model, grid.points)).reshape(grid.shape)}
        if truth is not None:
            truth_image = np.exp(truth.log_prob(grid.points)).reshape(grid.shape)
            panels = {"true p(x)": truth_image, **panels}
        figures["density"] = density_panels(panels, grid, "Density on a 150x150 grid")
    else:  # D > 2: 1-D and 2-D marginals (estimated from samples) against the test data
        from densitylab import plots

        if pairs_figure_allowed(flow.dim):
            figures["density"] = plots.pairs(model, test[:2000], seed=seed,
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

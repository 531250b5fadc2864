"""One runner for every flow experiment: prepare data, train (batched), evaluate, draw, conclude.

Runs that share an architecture, a budget and a data size are trained together with
:func:`densitylab.fit_many`, so a sweep costs little more than one model. Everything an
experiment produces is an :class:`Outcome`, written as ``outcome.json`` plus ``figures/*.png``
in the experiment's directory; the report is built from those files alone.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from densitylab import datasets, plots
from densitylab import metrics as metrics_
from densitylab.evaluation import evaluate_flow, flow_log_prob, flow_samples, latent_codes
from densitylab.experiments.outcome import Outcome, Table
from densitylab.experiments.spec import Data, FlowExperiment, Run
from densitylab.flows import build
from densitylab.grids import make_grid
from densitylab.plots import flows as flow_plots
from densitylab.plots.kde import density_panels
from densitylab.training import FitResult, fit_many


@dataclass
class Prepared:
    """A run's data: what it is fitted on, what it is tested on, and the truth if known."""

    fit: np.ndarray
    test: np.ndarray
    truth: datasets.Distribution
    test_fraction_split: bool = False  # test points split off the data (a small test set)


def prepare(data: Data) -> Prepared:
    truth = datasets.get(data.name, **data.params)
    x = truth.sample(data.n, seed=data.seed)
    if data.test_fraction is None:
        return Prepared(x, truth.sample(data.n_test, seed=data.seed + 1), truth)
    order = np.random.default_rng(data.seed).permutation(len(x))
    n_test = round(data.test_fraction * len(x))
    return Prepared(x[order[n_test:]], x[order[:n_test]], truth, test_fraction_split=True)


def train_runs(
    runs: list[Run], prepared: dict[str, Prepared], verbose: bool
) -> tuple[dict[str, FitResult], dict[str, int]]:
    """Train every run, batching those with one architecture, budget and data size.

    Returns the results and, per run, how many models were trained in its batch."""
    groups: dict[tuple, list[Run]] = defaultdict(list)
    for run in runs:
        key = (repr(run.model), repr(replace(run.budget, seed=0)), len(prepared[run.label].fit))
        groups[key].append(run)
    results, batch_sizes = {}, {}
    for group in groups.values():
        first = group[0]
        flows = [
            build(
                r.model.builder,
                dim=2,
                n_layers=r.model.layers,
                hidden=r.model.hidden,
                seed=r.budget.seed,
                **r.model.options,
            )
            for r in group
        ]
        budget = first.budget
        fitted = fit_many(
            flows,
            [prepared[r.label].fit for r in group],
            seed=[r.budget.seed for r in group],
            epochs=budget.epochs,
            batch_size=budget.batch_size,
            lr=budget.lr,
            val_fraction=budget.val_fraction,
            standardize=budget.standardize,
            schedule=budget.schedule,
            verbose=verbose,
        )
        for run, result in zip(group, fitted, strict=True):
            results[run.label], batch_sizes[run.label] = result, len(group)
    return results, batch_sizes


def energy_noise(truth, test: np.ndarray, n_samples: int = 5000, repeats: int = 8) -> float:
    """Standard deviation of the energy distance between ``n_samples`` draws of the truth
    itself and ``test``: the noise any sampler's energy distance to ``test`` carries."""
    if len(test) > 2000:  # large test sets: the noise is negligible next to model differences
        test = test[:2000]
    values = [metrics_.energy_distance(truth.sample(n_samples, seed=1000 + r), test)
              for r in range(repeats)]
    return float(np.std(values, ddof=1))


def run_metrics(run: Run, result: FitResult, data: Prepared, batched: int) -> dict[str, Any]:
    report = evaluate_flow(result.flow, data.test, data.truth, seed=run.budget.seed)
    centres = getattr(data.truth, "centres", None)
    if centres is not None:
        samples = flow_samples(result.flow, 2000, run.budget.seed)
        report["mode_coverage"] = metrics_.mode_coverage(samples, centres,
                                                         radius=2 * data.truth.std)
    if data.test_fraction_split:
        report["energy_se"] = energy_noise(data.truth, data.test)
    return report | {
        "data": data.truth.name,
        "data_params": data.truth.params,
        "n_fit": len(data.fit),
        "model": run.model.builder,
        "layers": run.model.layers,
        "hidden": list(run.model.hidden),
        "epochs": run.budget.epochs,
        "best_epoch": result.best_epoch,
        "best_val_nll": result.best_val_nll,
        "n_val": len(result.val_indices),
        "stop_reason": result.stop_reason,
        "train_seconds": result.wall_time,
        "trained_together": batched,
        "history": result.history.to_dict(),
    }


def summary_table(metrics: dict[str, dict[str, Any]]) -> Table:
    """The numbers a reader needs: test NLL ± SE, its gap to the entropy, KL on the grid."""
    rows = []
    for label, m in metrics.items():
        grid = m.get("grid", {})
        rows.append([
            label,
            f"{m['test_nll']:.4f} ± {m['test_nll_se']:.4f}",
            f"{m['entropy']:.4f}",
            f"{m['entropy_gap']:+.4f}",
            f"{grid.get('kl', float('nan')):.4f}",
            f"{m['sample_quality']['energy_distance']:.4f}",
            f"{m['sample_quality'].get('low_density_fraction', float('nan')):.3f}",
        ])
    columns = ["run", "test NLL ± SE", "entropy", "gap", "KL(true||model) on grid",
               "energy dist. (unbiased, 0 ideal)", "samples off-support"]
    return Table(
        "Test negative log-likelihood (nats per point) against the true entropy", columns, rows,
        note="Samples off-support: the share of 5000 model samples where the true density is "
        "below its 1% quantile on the test points (about 0.01 for a perfect model).",
    )


def checkpoint_rule(m: dict[str, Any]) -> str:
    """The weights kept, with the coursework's rule beside ours, from the run's history."""
    n_val = m["n_val"]
    val = m["history"]["val_nll"]
    ours = (f"best validation: epoch {m['best_epoch']} of {len(val)}, val NLL "
            f"{m['best_val_nll']:.3f}")
    if n_val < 500:
        return ours + (f" | coursework rule ({n_val} < 500 val points): final epoch, val NLL "
                       f"{val[-1]:.3f} ({val[-1] - m['best_val_nll']:+.3f})")
    return ours + f" (final epoch {val[-1]:.3f})"


def settings_table(experiment: FlowExperiment, runs: list[Run],
                   metrics: dict[str, dict[str, Any]], quick: bool) -> Table:
    """Every setting of every run, and where the study departs from its source document."""
    rows = []
    for run in runs:
        m = metrics[run.label]
        b = run.budget
        rows.append([
            run.label, f"{m['n_fit']} ({m['n_fit'] - m['n_val']} train + {m['n_val']} val)",
            m["n_test"], run.model.builder, run.model.layers, "x".join(map(str, run.model.hidden)),
            b.epochs, b.batch_size, f"{b.lr:g}" + (" cosine" if b.schedule else ""), b.seed,
            "yes" if b.standardize else "no", checkpoint_rule(m),
            f"{m['train_seconds']:.1f}"
            + (f" (x{m['trained_together']} batched)" if m["trained_together"] > 1 else ""),
        ])
    note = ""
    if experiment.source:
        note += f"Source document: {experiment.source} "
    if quick:
        note += ("This is a --quick preview: N, epochs and widths are cut (Run.quick), so "
                 "its numbers are not the study's. ")
    note += (f"Differences: {experiment.deviation}" if experiment.deviation
             else "This study runs at the source's settings.")
    return Table(
        "Settings of every run (Adam; s and t networks with LeakyReLU)",
        ["run", "N (fit)", "test points", "model", "K", "hidden", "epochs", "batch", "lr",
         "seed", "standardised", "weights kept", "train s"], rows, note=note, folded=True,
    )


def draw(experiment: FlowExperiment, runs: list[Run], results, prepared, metrics) -> dict:
    """The figures the experiment asks for; returns ``{file stem: (Figure, caption)}``."""
    figures = {}
    labels = [r.label for r in runs]
    if "loss" in experiment.figures:
        entropies = {round(metrics[lb]["entropy"], 6) for lb in labels}
        entropy = entropies.pop() if len(entropies) == 1 else None
        figures["loss"] = (
            flow_plots.loss_curves(
                {lb: results[lb].history for lb in labels},
                entropy,
                "Negative log-likelihood per epoch",
                groups=experiment.loss_groups,
            ),
            "Training (dashed) and validation (solid) negative log-likelihood per epoch.",
        )
    if "density" in experiment.figures:
        figures["density"] = density_figure(labels, results, prepared)
    if "layers" in experiment.figures:
        for lb in labels:
            trace = [
                t.detach().double().numpy() for t in results[lb].flow.trace_to_data(1000, seed=0)
            ]
            names = ["prior z"] + [f"layer {k}" for k in range(1, len(trace) - 1)] + ["x"]
            figures[f"layers-{slug(lb)}"] = (
                flow_plots.trace_panels(trace, names, f"{lb}: 1000 samples after every layer"),
                f"{lb}: samples pushed from the prior through each layer to data space "
                "(shared axes).",
            )
    if "samples" in experiment.figures:
        panels = {
            lb: (prepared[lb].test[:2000], flow_samples(results[lb].flow, 2000, 1)) for lb in labels
        }
        limits = flow_plots.robust_limits(*(test for test, _ in panels.values()), pad=0.25)
        figures["samples"] = (
            flow_plots.panel_row(flow_plots.draw_samples, panels,
                                 "Generated samples (red) under the held-out test points (blue)",
                                 size=3.6, shared_limits=limits),
            "Held-out test points (blue, outlined, drawn on top) and 2000 samples x-hat from "
            "each trained flow (red); every panel has the same axes.",
        )
    if "latent" in experiment.figures:
        panels = {lb: (latent_codes(results[lb].flow, prepared[lb].test[:2000]),) for lb in labels}
        figures["latent"] = (
            flow_plots.panel_row(flow_plots.draw_latent, panels, "Latent codes z of test points",
                                 size=3.6),
            "Test points mapped to latent space; a good flow makes them look like N(0, I).",
        )
    return figures


def density_figure(labels: list[str], results, prepared) -> tuple:
    """Truth and models on a 100x100 grid. Runs of one truth share one panel of it and one
    colour scale; runs of different truths get a column each, truth above model."""
    truths = {(prepared[lb].truth.name, repr(prepared[lb].truth.params)) for lb in labels}
    if len(truths) == 1 and len(labels) > 1:
        truth = prepared[labels[0]].truth
        grid = make_grid(truth.bounds(), 100)
        images = {"true p(x)": np.exp(truth.log_prob(grid.points)).reshape(grid.shape)}
        for lb in labels:
            images[f"{lb}: model"] = np.exp(flow_log_prob(results[lb].flow, grid.points)).reshape(
                grid.shape)
        return (
            density_panels(images, grid, f"{truth.label}: the truth and each model", max_cols=3),
            "The true density and each model's exp(log p(x)) on a 100x100 grid, one colour "
            "scale for all panels (ending at the 99.9% quantile of all pixels).",
        )
    columns = []
    for lb in labels:
        grid = make_grid(prepared[lb].truth.bounds(), 100)
        truth = np.exp(prepared[lb].truth.log_prob(grid.points))
        model = np.exp(flow_log_prob(results[lb].flow, grid.points))
        columns.append((lb, grid, truth, model))
    return (
        flow_plots.density_comparison(columns, "True density (upper) and the flow's (lower)"),
        "True density (upper) and the flow's density exp(log p(x)) (lower) on a 100x100 grid, "
        "one colour scale per column.",
    )


def slug(label: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in label.lower()).strip("-")


def run_flow_experiment(
    experiment: FlowExperiment, out: Path, quick: bool, verbose: bool
) -> Outcome:
    start = time.perf_counter()
    runs = [r.quick() if quick else r for r in experiment.runs]
    prepared = {r.label: prepare(r.data) for r in runs}
    results, batched = train_runs(runs, prepared, verbose)
    metrics = {
        r.label: run_metrics(r, results[r.label], prepared[r.label], batched[r.label]) for r in runs
    }
    figures = draw(experiment, runs, results, prepared, metrics)
    plots.save_figures(out / "figures", {name: fig for name, (fig, _) in figures.items()},
                       strict=True)
    return Outcome(
        name=experiment.name,
        title=experiment.title,
        question=experiment.question,
        findings=experiment.findings(metrics),
        figures={f"{name}.png": caption for name, (_, caption) in figures.items()},
        tables=[summary_table(metrics), settings_table(experiment, runs, metrics, quick)],
        metrics=metrics,
        seconds=time.perf_counter() - start,
    )

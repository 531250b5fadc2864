"""One runner for every flow experiment: prepare data, train (batched), evaluate, draw, conclude.

Runs that share an architecture, a budget and a data size are trained together with
:func:`densitylab.fit_many`, so a sweep costs little more than one model. Everything an
experiment produces is an :class:`Outcome`, written as ``outcome.json`` plus ``figures/*.png``
in the experiment's directory; the report is built from those files alone.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from densitylab import datasets, plots
from densitylab.evaluation import evaluate_flow, flow_log_prob, flow_samples, latent_codes
from densitylab.experiments.spec import Data, FlowExperiment, Run
from densitylab.flows import build
from densitylab.grids import make_grid
from densitylab.plots import flows as flow_plots
from densitylab.training import FitResult, fit_many


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list[Any]]


@dataclass
class Outcome:
    """What an experiment produced: figures (file names), tables, findings and raw metrics."""

    name: str
    title: str
    question: str
    findings: str
    figures: dict[str, str] = field(default_factory=dict)  # file name -> caption
    tables: list[Table] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def write(self, directory: Path) -> None:
        """``outcome.json`` (everything, for the report), plus ``metrics.json`` and
        ``findings.md`` for a reader of the directory."""
        (directory / "outcome.json").write_text(json.dumps(asdict(self), indent=2, default=float))
        (directory / "metrics.json").write_text(json.dumps(self.metrics, indent=2, default=float))
        (directory / "findings.md").write_text(f"# {self.title}\n\n{self.findings}\n")

    @classmethod
    def read(cls, directory: Path) -> Outcome:
        raw = json.loads((directory / "outcome.json").read_text())
        raw["tables"] = [Table(**t) for t in raw["tables"]]
        return cls(**raw)


@dataclass
class Prepared:
    """A run's data: what it is fitted on, what it is tested on, and the truth if known."""

    fit: np.ndarray
    test: np.ndarray
    truth: datasets.Distribution


def prepare(data: Data) -> Prepared:
    truth = datasets.get(data.name, **data.params)
    x = truth.sample(data.n, seed=data.seed)
    if data.test_fraction is None:
        return Prepared(x, truth.sample(data.n_test, seed=data.seed + 1), truth)
    order = np.random.default_rng(data.seed).permutation(len(x))
    n_test = round(data.test_fraction * len(x))
    return Prepared(x[order[n_test:]], x[order[:n_test]], truth)


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


def run_metrics(run: Run, result: FitResult, data: Prepared, batched: int) -> dict[str, Any]:
    report = evaluate_flow(result.flow, data.test, data.truth, seed=run.budget.seed)
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
        "stop_reason": result.stop_reason,
        "train_seconds": result.wall_time,
        "trained_together": batched,
        "history": result.history.to_dict(),
    }


def summary_table(metrics: dict[str, dict[str, Any]]) -> Table:
    rows = []
    for label, m in metrics.items():
        grid = m.get("grid", {})
        rows.append(
            [
                label,
                m["data"],
                m["model"],
                m["layers"],
                "x".join(map(str, m["hidden"])),
                m["n_fit"],
                m["epochs"],
                f"{m['test_nll']:.4f} ± {m['test_nll_se']:.4f}",
                f"{m['entropy']:.4f}",
                f"{m['entropy_gap']:.4f}",
                f"{grid.get('kl', float('nan')):.4f}",
                f"{grid.get('tv', float('nan')):.3f}",
                f"{m['sample_quality']['energy_distance']:.4f}",
                m["best_epoch"],
                f"{m['train_seconds']:.1f}"
                + (f" (x{m['trained_together']} batched)" if m["trained_together"] > 1 else ""),
            ]
        )
    columns = [
        "run",
        "data",
        "model",
        "K",
        "hidden",
        "n fit",
        "epochs",
        "test NLL",
        "entropy",
        "gap",
        "KL(true||model)",
        "TV",
        "energy dist.",
        "best epoch",
        "train s",
    ]
    return Table(
        "Test negative log-likelihood (nats per point) against the true entropy", columns, rows
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
                f"{experiment.title}: NLL per epoch",
            ),
            "Training (dashed) and validation (solid) negative log-likelihood per epoch.",
        )
    if "density" in experiment.figures:
        columns = []
        for lb in labels:
            grid = make_grid(prepared[lb].truth.bounds(), 100)
            truth = np.exp(prepared[lb].truth.log_prob(grid.points))
            model = np.exp(flow_log_prob(results[lb].flow, grid.points))
            columns.append((lb, grid, truth, model))
        figures["density"] = (
            flow_plots.density_comparison(
                columns, f"{experiment.title}: density on a 100x100 grid"
            ),
            "True density (top) and the flow's density exp(log p(x)) (bottom), "
            "one colour scale per column.",
        )
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
        figures["samples"] = (
            flow_plots.panel_row(
                flow_plots.draw_samples, panels, "Test data against generated samples"
            ),
            "Held-out test points (blue) and samples x-hat drawn from the trained flow (red).",
        )
    if "latent" in experiment.figures:
        panels = {lb: (latent_codes(results[lb].flow, prepared[lb].test[:2000]),) for lb in labels}
        figures["latent"] = (
            flow_plots.panel_row(flow_plots.draw_latent, panels, "Latent codes z of test points"),
            "Test points mapped to latent space; a good flow makes them look like N(0, I).",
        )
    return figures


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
    plots.save_figures(out / "figures", {name: fig for name, (fig, _) in figures.items()})
    return Outcome(
        name=experiment.name,
        title=experiment.title,
        question=experiment.question,
        findings=experiment.findings(metrics),
        figures={f"{name}.png": caption for name, (_, caption) in figures.items()},
        tables=[summary_table(metrics)],
        metrics=metrics,
        seconds=time.perf_counter() - start,
    )

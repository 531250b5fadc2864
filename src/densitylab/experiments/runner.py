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
from densitylab.evaluation import (
    evaluate_flow,
    flow_log_prob,
    flow_samples,
    gaussian_log_prob,
    gaussian_reference,
    latent_codes,
)
from densitylab.experiments.findings import paired_se, paired_table
from densitylab.experiments.outcome import Outcome, Table
from densitylab.experiments.spec import Data, FlowExperiment, Run
from densitylab.flows import build
from densitylab.grids import make_grid
from densitylab.plots import flows as flow_plots
from densitylab.plots.kde import density_panels
from densitylab.training import FitResult, fit_many


@dataclass
class Prepared:
    """A run's data: what it is trained on, validated on and tested on, and the truth."""

    fit: np.ndarray
    val: np.ndarray
    test: np.ndarray
    truth: datasets.Distribution


def prepare(data: Data) -> Prepared:
    """Training, validation and test points: three independent samples of the exact law
    (seeds ``seed``, ``seed + 2`` and ``seed + 1``, so the test set of a law is the same in
    every study)."""
    truth = datasets.get(data.name, **data.params)
    return Prepared(truth.sample(data.n, seed=data.seed),
                    truth.sample(data.n_val, seed=data.seed + 2),
                    truth.sample(data.n_test, seed=data.seed + 1), truth)


def train_runs(
    runs: list[Run], prepared: dict[str, Prepared], verbose: bool
) -> tuple[dict[str, FitResult], dict[str, int]]:
    """Train every run, batching those with one architecture, budget and data size.

    Returns the results and, per run, how many models were trained in its batch."""
    groups: dict[tuple, list[Run]] = defaultdict(list)
    for run in runs:
        data = prepared[run.label]
        key = (repr(run.model), repr(replace(run.budget, seed=0)), len(data.fit), len(data.val))
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
            x_val=[prepared[r.label].val for r in group],
            seed=[r.budget.seed for r in group],
            epochs=budget.epochs,
            batch_size=budget.batch_size,
            lr=budget.lr,
            val_fraction=budget.val_fraction,
            standardize=budget.standardize,
            schedule=budget.schedule,
            patience=budget.patience,
            engine=budget.engine,
            verbose=verbose,
            keep_final=True,
        )
        for run, result in zip(group, fitted, strict=True):
            results[run.label], batch_sizes[run.label] = result, len(group)
    return results, batch_sizes


_NOISE: dict[tuple, float] = {}


def energy_noise(truth, test: np.ndarray, n_samples: int = 5000, repeats: int = 8) -> float:
    """Standard deviation of the energy distance between ``n_samples`` draws of the truth
    itself and ``test``: the noise any sampler's energy distance to ``test`` carries (computed
    once per law and test set)."""
    test = test[:2000]  # the noise of the cross term is that of the smaller set
    key = (truth.name, repr(truth.params), n_samples, test.tobytes())
    if key not in _NOISE:
        values = [metrics_.energy_distance(truth.sample(n_samples, seed=1000 + r), test)
                  for r in range(repeats)]
        _NOISE[key] = float(np.std(values, ddof=1))
    return _NOISE[key]


def run_metrics(run: Run, result: FitResult, data: Prepared, batched: int) -> dict[str, Any]:
    report = evaluate_flow(result.flow, data.test, data.truth, seed=run.budget.seed,
                           max_points=2000)
    centres = getattr(data.truth, "centres", None)
    if centres is not None:
        samples = flow_samples(result.flow, 2000, run.budget.seed)
        report["mode_coverage"] = metrics_.mode_coverage(samples, centres,
                                                         radius=2 * data.truth.std)
    report["energy_se"] = energy_noise(data.truth, data.test)
    best_log_p, final_log_p = test_log_probs(result, data)
    final_nll, final_se = metrics_.nll_with_error(final_log_p)
    gaussian = gaussian_reference(data.fit, data.test, data.truth.entropy())
    # models scored on the same points: the paired error of their difference
    gaussian["paired_se"] = paired_se(best_log_p, gaussian_log_prob(data.fit, data.test))
    return report | {
        "final_test_nll": final_nll,
        "final_test_nll_se": final_se,
        "final_minus_best_se": paired_se(final_log_p, best_log_p),
        "final_entropy_gap": metrics_.entropy_gap(final_nll, data.truth.entropy()),
        "epochs_run": result.epochs_run,
        "data": data.truth.name,
        "data_params": data.truth.params,
        "data_label": data.truth.label,
        "n_fit": len(data.fit),
        "model": run.model.builder,
        "layers": run.model.layers,
        "hidden": list(run.model.hidden),
        "epochs": run.budget.epochs,
        "patience": run.budget.patience,
        "best_epoch": result.best_epoch,
        "best_val_nll": result.best_val_nll,
        "n_val": len(data.val),
        "stop_reason": result.stop_reason,
        "engine": result.engine,  # which engine engine="auto" picked
        "train_seconds": result.wall_time,
        "trained_together": batched,
        "history": result.history.to_dict(),
        "gaussian": gaussian,
        "run_key": run_key(run),
    }


def test_log_probs(result: FitResult, data: Prepared) -> tuple[np.ndarray, np.ndarray]:
    """Per-point test log-densities of the best-validation and the final weights."""
    final = result.final_model if result.final_model is not None else result.flow
    return flow_log_prob(result.flow, data.test), flow_log_prob(final, data.test)


def add_paired(metrics: dict[str, dict[str, Any]], results: dict[str, FitResult],
               prepared: dict[str, Prepared]) -> None:
    """Give every run the paired standard errors of its test NLL minus each other run's that
    was tested on the very same points (``paired_se``, and ``final_paired_se`` for the final
    weights): comparisons between them then use those, not the unpaired combination."""
    by_points: dict[bytes, list[str]] = defaultdict(list)
    for label, data in prepared.items():
        by_points[data.test.tobytes()].append(label)
    for labels in by_points.values():
        if len(labels) < 2:
            continue
        scores = {lb: test_log_probs(results[lb], prepared[lb]) for lb in labels}
        for index, key in enumerate(("paired_se", "final_paired_se")):
            table = paired_table({lb: s[index] for lb, s in scores.items()})
            for lb in labels:
                metrics[lb][key] = table[lb]


def run_key(run: Run) -> str:
    """What makes two runs one model: data, architecture and budget (not the label)."""
    return repr((run.data, run.model, run.budget))


GAUSSIAN_ROW = "single Gaussian (full covariance)"


def summary_table(metrics: dict[str, dict[str, Any]]) -> Table:
    """The numbers a reader needs: test NLL ± SE and KL(true || model) = test NLL - entropy,
    with a single full-covariance Gaussian on the same data as the reference row of each law;
    samples judged by support precision / recall, off-support share and energy distance."""
    rows, references = [], {}
    for label, m in metrics.items():
        grid = m.get("grid", {})
        quality = m["sample_quality"]
        rows.append([
            label,
            f"{m['test_nll']:.4f} ± {m['test_nll_se']:.4f}",
            f"{m['entropy']:.4f}",
            f"{m['entropy_gap']:.4f} ± {m['test_nll_se']:.4f}",
            f"{grid.get('kl', float('nan')):.4f}",
            f"{quality.get('low_density_fraction', float('nan')):.3f}",
            f"{quality['precision']:.3f} / {quality['recall']:.3f}",
            f"{quality['energy_distance']:.4f}",
        ])
        key = (m["data_label"], m["n_fit"])
        references.setdefault(key, m)
    for (law, n_fit), m in references.items():
        g = m["gaussian"]
        name = GAUSSIAN_ROW + (f", {law}" if len(references) > 1 else "")
        if len({k[0] for k in references}) == 1 and len(references) > 1:
            name = f"{GAUSSIAN_ROW}, N={n_fit}"
        rows.append([name, f"{g['test_nll']:.4f} ± {g['test_nll_se']:.4f}", f"{m['entropy']:.4f}",
                     f"{g['entropy_gap']:.4f} ± {g['test_nll_se']:.4f}", "—", "—", "—", "—"])
    columns = ["run", "test NLL ± SE", "entropy H", "KL(true||model) = NLL − H ± SE",
               "KL on grid", "samples off-support", "support precision / recall",
               "energy dist. (0 ideal)"]
    n_test = next(iter(metrics.values()))["n_test"]
    return Table(
        f"Test negative log-likelihood (nats per point, {n_test} fresh points of the exact law) "
        "and its excess over the entropy, KL(true || model)", columns, rows,
        note="KL(true || model) = E_true[-log p_model] - H is estimated by the test NLL minus "
        "the exact entropy; its standard error is the test NLL's. The single Gaussian is fitted "
        "by maximum likelihood to the same training points: a model that does not beat it has "
        "learned nothing a mean and a covariance do not say. Samples off-support: the share of "
        "5000 model samples where the true density is below its 1% quantile on the test points "
        "(about 0.01 for a perfect sampler). Support precision / recall (k=5 nearest "
        "neighbours, 2000 points each): the share of samples on the data's support / of data "
        "points on the samples' support; a low recall means missed modes (mode collapse), "
        "which energy distance can hide.",
    )


def checkpoint_rule(m: dict[str, Any]) -> str:
    """The weights kept under both rules, with their test NLL: densitylab's best validation
    epoch and the coursework's final epoch."""
    return (f"best validation: epoch {m['best_epoch']}, test NLL {m['test_nll']:.3f} | final: "
            f"epoch {m['epochs_run']}, test NLL {m['final_test_nll']:.3f}")


def settings_table(experiment: FlowExperiment, runs: list[Run],
                   metrics: dict[str, dict[str, Any]], quick: bool) -> Table:
    """Every setting of every run, and where the study departs from its source document."""
    rows = []
    for run in runs:
        m = metrics[run.label]
        b = run.budget
        rows.append([
            run.label, m["n_fit"], m["n_val"], m["n_test"], run.model.builder,
            run.model.layers, "x".join(map(str, run.model.hidden)),
            b.epochs, b.batch_size, f"{b.lr:g}" + (" cosine" if b.schedule else ""), b.seed,
            "yes" if b.standardize else "no", checkpoint_rule(m), m.get("engine") or "—",
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
        ["run", "train points", "fresh val. points", "fresh test points", "model", "K", "hidden",
         "epochs", "batch", "lr", "seed", "standardised", "weights kept", "engine", "train s"],
        rows,
        note=note, folded=True,
    )


def draw(experiment: FlowExperiment, runs: list[Run], results, prepared, metrics) -> dict:
    """The figures the experiment asks for; returns ``{file stem: (Figure, caption)}``."""
    figures = {}
    labels = [r.label for r in runs]
    shown = ran_labels(experiment, runs)
    if "loss" in experiment.figures:
        entropies = {round(metrics[lb]["entropy"], 6) for lb in labels}
        entropy = entropies.pop() if len(entropies) == 1 else None
        groups = None if experiment.loss_groups is None else {
            title + (" (--quick: cut)" if any(shown[lb] != lb for lb in members) else ""):
            tuple(shown[lb] for lb in members)
            for title, members in experiment.loss_groups.items()}
        figures["loss"] = (
            flow_plots.loss_curves(
                {shown[lb]: results[lb].history for lb in labels},
                entropy,
                "Negative log-likelihood per epoch",
                groups=groups,
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
            figures[f"layers-{slug(lb)}"] = (
                flow_plots.trace_panels(trace, flow_plots.trace_labels(len(trace) - 1),
                                        f"{lb}: 1000 samples after every layer"),
                f"{lb}: samples pushed from the prior through each layer to data space "
                "(shared axes).",
            )
    if "samples" in experiment.figures:
        panels = {shown[lb]: (prepared[lb].test[:2000], flow_samples(results[lb].flow, 2000, 1))
                  for lb in labels}
        limits = flow_plots.robust_limits(*(test for test, _ in panels.values()), pad=0.25)
        figures["samples"] = (
            flow_plots.panel_row(flow_plots.draw_samples, panels,
                                 "Generated samples (red) over held-out test points (blue)",
                                 size=3.6, shared_limits=limits),
            "2000 samples x-hat from each trained flow (red), drawn over 2000 held-out test "
            "points (light blue, underneath); every panel has the same axes.",
        )
    if "latent" in experiment.figures:
        panels = {shown[lb]: (latent_codes(results[lb].flow, prepared[lb].test[:2000]),)
                  for lb in labels}
        figures["latent"] = (
            flow_plots.panel_row(flow_plots.draw_latent, panels, "Latent codes z of test points",
                                 size=3.6),
            "Test points mapped to latent space; a good flow makes them look like N(0, I).",
        )
    return figures


def ran_labels(experiment: FlowExperiment, runs: list[Run]) -> dict[str, str]:
    """``{run label: the label a figure shows}``: the label itself, or, where the run trained
    a narrower network than its label says, or fewer points in a study that varies the
    number of points (``--quick`` cuts both), the label with what ran, so that three runs cut
    to one width are not shown as 64, 512 and 1024, nor two cut to one size as N=1500 and
    N=3000."""
    planned = {r.label: r for r in experiment.runs}
    varies_n = len({r.data.n for r in experiment.runs}) > 1

    def shown(run: Run) -> str:
        plan = planned.get(run.label, run)
        cuts = []
        if plan.model.hidden != run.model.hidden:
            cuts.append(f"width {'x'.join(map(str, run.model.hidden))}")
        if varies_n and plan.data.n != run.data.n:
            cuts.append(f"{run.data.n} training points")
        return run.label if not cuts else f"{run.label} (ran {', '.join(cuts)})"

    return {r.label: shown(r) for r in runs}


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
    add_paired(metrics, results, prepared)
    figures = draw(experiment, runs, results, prepared, metrics)
    plots.save_figures(out / "figures", {name: fig for name, (fig, _) in figures.items()},
                       strict=True)
    return Outcome(
        name=experiment.name,
        title=experiment.title,
        question=experiment.question,
        findings=[],  # computed from the saved metrics by experiments.run
        figures={f"{name}.png": caption for name, (_, caption) in figures.items()},
        tables=[summary_table(metrics), settings_table(experiment, runs, metrics, quick)],
        metrics=metrics,
        seconds=time.perf_counter() - start,
    )

"""limits: how close each model comes to the entropy, the floor of every test NLL.

Every built-in distribution, 10,000 training points, 20,000 fresh test points; the coursework's
RealNVP, Glow and the recommended spline flow (each family's 13 flows trained together with
:func:`densitylab.fit_many`, every flow seeing the data the same number of times) and KDE with a
cross-validated bandwidth. Reported: test NLL, gap to the entropy, training time per
distribution, and the recommended model's density beside the true one.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from densitylab import datasets, metrics, plots
from densitylab.evaluation import flow_log_prob
from densitylab.experiments.runner import Outcome, Table, prepare, train_runs
from densitylab.experiments.spec import Budget, Data, Model, Run
from densitylab.flows import RECOMMENDED_FIT, RECOMMENDED_MODEL, recommended_epochs
from densitylab.grids import make_grid
from densitylab.kde import KDE
from densitylab.plots import flows as flow_plots

N_FIT = 10_000
TARGET_GAP = 0.05  # nats: "at the entropy limit", for the findings
EPOCHS = recommended_epochs(N_FIT)  # every flow sees the data this many times

_RECOMMENDED_OPTIONS = {k: v for k, v in RECOMMENDED_MODEL.items()
                        if k not in ("n_layers", "hidden")}
FLOWS: dict[str, tuple[Model, Budget]] = {
    "coursework RealNVP": (Model("realnvp", layers=4, hidden=(32, 32)), Budget(EPOCHS)),
    "Glow": (Model("glow", layers=4, hidden=(32, 32)), Budget(EPOCHS, standardize=True)),
    "recommended": (
        Model("nsf", layers=RECOMMENDED_MODEL["n_layers"], hidden=RECOMMENDED_MODEL["hidden"],
              options=_RECOMMENDED_OPTIONS),
        Budget(EPOCHS, **RECOMMENDED_FIT),
    ),
}
KDE_CV = "KDE (CV)"
MODELS = (*FLOWS, KDE_CV)


def _runs(quick: bool) -> list[Run]:
    runs = [
        Run(f"{d.label} | {model_name}", Data(d.name, dict(d.params), n=N_FIT), model, budget)
        for d in datasets.catalogue()
        for model_name, (model, budget) in FLOWS.items()
    ]
    return [r.quick() for r in runs] if quick else runs


def _scores(log_p: np.ndarray, entropy: float, seconds: float) -> dict[str, float]:
    nll, se = metrics.nll_with_error(log_p)
    return {"test_nll": nll, "test_nll_se": se, "entropy_gap": nll - entropy,
            "train_seconds": seconds}


def run_limits(out: Path, quick: bool) -> Outcome:
    start = time.perf_counter()
    runs = _runs(quick)
    prepared = {r.label: prepare(r.data) for r in runs}
    results, batched = train_runs(runs, prepared, verbose=False)
    scores: dict[str, dict[str, Any]] = {}
    for run in runs:
        dist_label, model_name = run.label.split(" | ")
        data = prepared[run.label]
        share = results[run.label].wall_time / batched[run.label]
        scores.setdefault(dist_label, {"entropy": data.truth.entropy()})
        scores[dist_label][model_name] = _scores(
            flow_log_prob(results[run.label].flow, data.test), data.truth.entropy(), share
        )
    # the flows of one distribution share its data (same Data), so any run's copy will do
    per_distribution = {r.label.split(" | ")[0]: prepared[r.label] for r in runs}
    for dist_label, data in per_distribution.items():
        t0 = time.perf_counter()
        kde = KDE(bandwidth="cv").fit(data.fit)
        seconds = time.perf_counter() - t0
        scores[dist_label][KDE_CV] = _scores(kde.score_samples(data.test), data.truth.entropy(),
                                             seconds)
    figures = {"gaps": (_gap_figure(scores),
                        "Gap between each model's test NLL and the entropy, per distribution "
                        f"(log scale; gaps below 0.001 nats, sampling noise included, are drawn "
                        f"at 0.001). Dashed: {TARGET_GAP} nats."),
               "density": (_density_figure(runs, results, prepared, quick),
                           "The true density (upper) and the recommended model's (lower) for "
                           "every distribution, one colour scale per pair.")}
    plots.save_figures(out / "figures", {k: fig for k, (fig, _) in figures.items()}, strict=True)
    some = next(iter(per_distribution.values()))
    return Outcome(
        name="limits", title="How close to the entropy: every distribution, four models",
        question="The entropy of a distribution is the lowest expected test NLL any model can "
        f"reach. On every built-in distribution ({len(some.fit)} training points, "
        f"{len(some.test)} fresh test points), how close do the "
        "coursework's RealNVP, Glow, the recommended spline flow and KDE with a cross-validated "
        "bandwidth come, and at what training cost?",
        findings=_findings(scores),
        figures={f"{k}.png": caption for k, (_, caption) in figures.items()},
        tables=_tables(scores, runs), metrics=scores, seconds=time.perf_counter() - start,
    )


def _gap_figure(scores: dict[str, dict[str, Any]]):
    series = {m: [max(s[m]["entropy_gap"], 1e-3) for s in scores.values()] for m in MODELS}
    return flow_plots.grouped_bars(list(scores), series, "test NLL - entropy (nats)",
                                   "Gap to the entropy per distribution",
                                   reference=(TARGET_GAP, f"{TARGET_GAP} nats"))


def _density_figure(runs: list[Run], results, prepared, quick: bool):
    columns = []
    for run in runs:
        dist_label, model_name = run.label.split(" | ")
        if model_name != "recommended":
            continue
        truth = prepared[run.label].truth
        grid = make_grid(truth.bounds(), 60 if quick else 100)
        columns.append((dist_label, grid, np.exp(truth.log_prob(grid.points)),
                        np.exp(flow_log_prob(results[run.label].flow, grid.points))))
    return flow_plots.density_comparison(columns, "The recommended model against the truth",
                                         per_row=4)


def _tables(scores: dict[str, dict[str, Any]], runs: list[Run]) -> list[Table]:
    epochs = runs[0].budget.epochs
    nll_rows = [
        [dist, f"{s['entropy']:.4f}",
         *(f"{s[m]['test_nll']:.4f} ± {s[m]['test_nll_se']:.4f} ({s[m]['entropy_gap']:+.4f})"
           for m in MODELS)]
        for dist, s in scores.items()
    ]
    time_rows = [[dist, *(f"{s[m]['train_seconds']:.1f}" for m in MODELS)]
                 for dist, s in scores.items()]
    return [
        Table("Test NLL ± standard error (gap to the entropy), nats per point",
              ["distribution", "entropy", *MODELS], nll_rows),
        Table(f"Training seconds per distribution (flows: {epochs} epochs, {len(scores)} "
              "trained together, the batch's time shared out; KDE: bandwidth by "
              "cross-validation)", ["distribution", *MODELS], time_rows),
    ]


def _findings(scores: dict[str, dict[str, Any]]) -> str:
    n = len(scores)
    sentences = []
    for model in MODELS:
        gaps = {dist: s[model]["entropy_gap"] for dist, s in scores.items()}
        within = sum(g <= TARGET_GAP for g in gaps.values())
        worst = sorted(gaps, key=gaps.get, reverse=True)[:2]
        seconds = sum(s[model]["train_seconds"] for s in scores.values()) / n
        sentences.append(
            f"{model}: within {TARGET_GAP} nats of the entropy on {within} of {n} distributions, "
            f"median gap {np.median(list(gaps.values())):.3f}, largest on "
            + " and ".join(f"{d} ({gaps[d]:.3f})" for d in worst)
            + f"; {seconds:.1f} s of training per distribution."
        )
    best = {dist: min(MODELS, key=lambda m: s[m]["entropy_gap"]) for dist, s in scores.items()}
    wins = {m: sum(b == m for b in best.values()) for m in MODELS}
    leader = max(wins, key=wins.get)
    mean_gap = {dist: np.mean([s[m]["entropy_gap"] for m in MODELS])
                for dist, s in scores.items()}
    hardest = max(mean_gap, key=mean_gap.get)
    sentences.append(
        f"The {leader} model has the smallest gap on {wins[leader]} of {n} distributions. "
        f"Averaged over the four models, {hardest} is the hardest to reach "
        f"(mean gap {mean_gap[hardest]:.3f} nats)."
    )
    return " ".join(sentences)

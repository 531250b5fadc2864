"""limits: how close each model comes to the entropy, the floor of every test NLL.

Every built-in distribution, 10,000 training points, 2,000 fresh validation and 20,000 fresh
test points; the coursework's RealNVP, Glow and the recommended spline flow (each family's flows
trained together with :func:`densitylab.fit_many`) and KDE with a cross-validated bandwidth.
Every flow gets the same budget and is trained to convergence: until :data:`PATIENCE` epochs
bring no better validation NLL, at most :data:`CAP` epochs (the findings count those that hit
the cap). Reported: test NLL, gap to the entropy, convergence in epochs and in seconds, and the
recommended model's density beside the true one. Models are compared on paired standard
errors: all are scored on the same test points.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from densitylab import datasets, metrics, plots
from densitylab.evaluation import flow_log_prob, gaussian_log_prob, gaussian_reference
from densitylab.experiments.findings import Z, best_group, compare, pair, paired_table
from densitylab.experiments.runner import Outcome, Table, prepare, train_runs
from densitylab.experiments.spec import Budget, Data, Model, Run
from densitylab.flows import RECOMMENDED_FIT, RECOMMENDED_MODEL
from densitylab.grids import make_grid
from densitylab.kde import KDE
from densitylab.plots import flows as flow_plots

N_FIT = 10_000
TARGET_GAP = 0.05  # nats: "at the entropy limit", for the findings
CAP, PATIENCE = 120, 15  # every flow: at most CAP epochs, stopped after PATIENCE without a
# better validation NLL on the fresh validation points (converged)

_RECOMMENDED_OPTIONS = {k: v for k, v in RECOMMENDED_MODEL.items()
                        if k not in ("n_layers", "hidden")}
FLOWS: dict[str, tuple[Model, Budget]] = {
    # the compiled engine skips a stopped flow's epochs (torch steps all 12 stacked flows until
    # the last stops): 33 s of CPU against 56 s for RealNVP's 12 laws, measured (RESULTS.md)
    "coursework RealNVP": (Model("realnvp", layers=4, hidden=(32, 32)),
                           Budget(CAP, patience=PATIENCE, engine="compiled")),
    "Glow": (Model("glow", layers=4, hidden=(32, 32)),
             Budget(CAP, standardize=True, patience=PATIENCE)),
    "recommended": (
        Model("nsf", layers=RECOMMENDED_MODEL["n_layers"], hidden=RECOMMENDED_MODEL["hidden"],
              options=_RECOMMENDED_OPTIONS),
        Budget(CAP, patience=PATIENCE, **RECOMMENDED_FIT),
    ),
}
KDE_CV = "KDE (CV)"
MODELS = (*FLOWS, KDE_CV)
GAUSSIAN = "single Gaussian"  # the reference every model must beat


def distinct_laws() -> tuple[list, dict[str, str]]:
    """The built-in distributions with duplicates of one law removed (``gmm`` with sigma 0.5 is
    the coursework's ``gaussians-grid``): equal log-densities on a sample of the first.
    Returns the distinct ones and ``{dropped label: the label it duplicates}``."""
    kept, dropped = [], {}
    for d in datasets.catalogue():
        probe = d.sample(200, seed=0)
        twin = next((k for k in kept
                     if np.allclose(k.log_prob(probe), d.log_prob(probe), atol=1e-9)), None)
        if twin is None:
            kept.append(d)
        else:
            dropped[d.label] = twin.label
    return kept, dropped


def _runs(quick: bool) -> list[Run]:
    laws, _ = distinct_laws()
    runs = [
        Run(f"{d.label} | {model_name}", Data(d.name, dict(d.params), n=N_FIT), model, budget)
        for d in laws
        for model_name, (model, budget) in FLOWS.items()
    ]
    return [r.quick() for r in runs] if quick else runs


def _scores(log_p: np.ndarray, entropy: float, seconds: float) -> dict[str, float]:
    nll, se = metrics.nll_with_error(log_p)
    return {"test_nll": nll, "test_nll_se": se, "entropy_gap": nll - entropy,
            "train_seconds": seconds}


def _convergence_record(result, run: Run, batched: int) -> dict[str, Any]:
    """When a flow stopped and why, in epochs and in seconds (its batch's time shared out
    among the flows trained together)."""
    seconds = result.history.seconds
    return {"best_epoch": result.best_epoch, "epochs_run": result.epochs_run,
            "epochs": run.budget.epochs, "patience": run.budget.patience,
            "n_val": run.data.n_val,
            "hit_cap": result.stop_reason == "completed", "stop_reason": result.stop_reason,
            "seconds_to_best": seconds[result.best_epoch - 1] / batched if result.best_epoch
            else 0.0}


def run_limits(out: Path, quick: bool) -> Outcome:
    start = time.perf_counter()
    runs = _runs(quick)
    prepared = {r.label: prepare(r.data) for r in runs}
    load_before = os.getloadavg()[0]
    results, batched = train_runs(runs, prepared, verbose=False)
    load_after = os.getloadavg()[0]
    scores: dict[str, dict[str, Any]] = {}
    log_p: dict[str, dict[str, np.ndarray]] = {}
    for run in runs:
        dist_label, model_name = run.label.split(" | ")
        data = prepared[run.label]
        # its batch's time up to its own last epoch, shared out among the flows trained together
        share = results[run.label].history.seconds[-1] / batched[run.label]
        scores.setdefault(dist_label, {"entropy": data.truth.entropy()})
        points = log_p.setdefault(dist_label, {})
        points[model_name] = flow_log_prob(results[run.label].flow, data.test)
        scores[dist_label][model_name] = _scores(points[model_name], data.truth.entropy(), share)
        scores[dist_label][model_name] |= _convergence_record(results[run.label], run,
                                                              batched[run.label])
    for dist_label in scores:  # do RealNVP and Glow agree point by point, or only on average?
        a, b = log_p[dist_label]["coursework RealNVP"], log_p[dist_label]["Glow"]
        scores[dist_label]["realnvp_glow_mean_abs_diff"] = float(np.mean(np.abs(a - b)))
    # the flows of one distribution share its data (same Data), so any run's copy will do
    per_distribution = {r.label.split(" | ")[0]: prepared[r.label] for r in runs}
    for dist_label, data in per_distribution.items():
        t0 = time.perf_counter()
        kde = KDE(bandwidth="cv").fit(data.fit)
        seconds = time.perf_counter() - t0
        log_p[dist_label][KDE_CV] = kde.score_samples(data.test)
        scores[dist_label][KDE_CV] = _scores(log_p[dist_label][KDE_CV], data.truth.entropy(),
                                             seconds)
        scores[dist_label][GAUSSIAN] = gaussian_reference(data.fit, data.test,
                                                          data.truth.entropy())
        log_p[dist_label][GAUSSIAN] = gaussian_log_prob(data.fit, data.test)
        # every model scored on the same test points: paired errors of every difference
        for model, errors in paired_table(log_p[dist_label]).items():
            scores[dist_label][model]["paired_se"] = errors
    figures = {"gaps": (_gap_figure(scores),
                        "Gap between each model's test NLL and the entropy, per distribution "
                        f"(log scale; gaps below 0.001 nats, sampling noise included, are drawn "
                        f"at 0.001), with error bars of {Z:g} standard errors. Dashed: "
                        f"{TARGET_GAP} nats."),
               "density": (_density_figure(runs, results, prepared, quick),
                           "The true density (upper) and the recommended model's (lower) for "
                           "every distribution, one colour scale per pair.")}
    plots.save_figures(out / "figures", {k: fig for k, (fig, _) in figures.items()}, strict=True)
    some = next(iter(per_distribution.values()))
    _, dropped = distinct_laws()
    load = {"before": load_before, "after": load_after, "cores": os.cpu_count() or 1}
    for dist_label in scores:  # a shared machine slows the flows' seconds: how shared it was
        scores[dist_label]["training_load"] = load
    return Outcome(
        name="limits", title="How close to the entropy: every distribution, four models",
        question="The entropy of a distribution is the lowest expected test NLL any model can "
        f"reach. On every built-in distribution ({_setting(len(some.fit), len(some.test), dropped)}"
        "), how close do the "
        "coursework's RealNVP, Glow, the recommended spline flow and KDE with a cross-validated "
        "bandwidth come, and at what training cost? Every flow gets the same budget and trains "
        f"to convergence: until {runs[0].budget.patience} epochs bring no better NLL on "
        f"{len(some.val)} fresh validation points, at most {runs[0].budget.epochs} epochs.",
        findings=[],
        figures={f"{k}.png": caption for k, (_, caption) in figures.items()},
        tables=_tables(scores, runs), metrics=scores, seconds=time.perf_counter() - start,
    )


def _setting(n_fit: int, n_test: int, dropped: dict[str, str]) -> str:
    """The study's data in one parenthesis: sizes, then each law left out as a duplicate."""
    return "; ".join([f"{n_fit} training points", f"{n_test} fresh test points",
                      *(f"{a} is left out: it is the same law as {b}"
                        for a, b in dropped.items())])


def _gap_figure(scores: dict[str, dict[str, Any]]):
    series = {m: [max(s[m]["entropy_gap"], 1e-3) for s in scores.values()] for m in MODELS}
    errors = {m: [Z * s[m]["test_nll_se"] for s in scores.values()] for m in MODELS}
    return flow_plots.grouped_bars(list(scores), series, "test NLL - entropy (nats)",
                                   "Gap to the entropy per distribution",
                                   reference=(TARGET_GAP, f"{TARGET_GAP} nats"), errors=errors)


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
    cap, patience = runs[0].budget.epochs, runs[0].budget.patience
    budget = (f"at most {cap} epochs, stopped after {patience} without a better validation NLL "
              "on the fresh validation points")
    nll_rows = [
        [dist, f"{s['entropy']:.4f}",
         *(f"{s[m]['test_nll']:.4f} ± {s[m]['test_nll_se']:.4f} ({s[m]['entropy_gap']:+.4f})"
           for m in (*MODELS, GAUSSIAN))]
        for dist, s in scores.items()
    ]
    time_rows = [[dist, *(f"{s[m]['best_epoch']} / {s[m]['epochs_run']}"
                          + (" (cap)" if s[m]["hit_cap"] else "")
                          + f"; {s[m]['seconds_to_best']:.1f} / {s[m]['train_seconds']:.1f} s"
                          for m in FLOWS), f"{s[KDE_CV]['train_seconds']:.1f} s"]
                 for dist, s in scores.items()]
    return [
        Table("Test NLL ± standard error (KL(true || model) = NLL − entropy), nats per point",
              ["distribution", "entropy", *MODELS, f"{GAUSSIAN} (reference)"], nll_rows,
              note="The single Gaussian is fitted by maximum likelihood to the same training "
              "points: the reference every model must beat. Every model is scored on the same "
              "test points, so differences are judged on paired standard errors."),
        Table(f"Convergence: best validation epoch / epochs run; seconds to the best epoch / "
              f"in all (flows: {budget}; each family's {len(scores)} flows trained together, "
              "the batch's time shared out; KDE: seconds of the cross-validated fit)",
              ["distribution", *FLOWS, KDE_CV], time_rows,
              note="(cap): the flow was still improving when the cap stopped it."),
        Table("Architectures", ["model", "architecture and training"], [
            ["coursework RealNVP", "4 affine couplings, alternating masks, s and t 2-32-32-2 "
             f"LeakyReLU MLPs; batch 64, Adam 1e-3, {budget}; best-validation weights; "
             "the compiled engine"],
            ["Glow", "4 steps of ActNorm, LU-parameterised invertible linear map and affine "
             "coupling (32-32 MLPs); standardised data; as RealNVP otherwise, on the torch "
             "engine"],
            ["recommended", f"Neural Spline Flow: {RECOMMENDED_MODEL['n_layers']} "
             f"rational-quadratic spline couplings, {RECOMMENDED_MODEL['bins']} bins on "
             f"[-{RECOMMENDED_MODEL['bound']:g}, {RECOMMENDED_MODEL['bound']:g}], conditioner "
             f"MLPs {'-'.join(map(str, RECOMMENDED_MODEL['hidden']))} reading "
             f"{RECOMMENDED_MODEL['fourier']} octaves of Fourier features; batch "
             f"{RECOMMENDED_FIT['batch_size']}, Adam {RECOMMENDED_FIT['lr']:g} with a cosine "
             f"schedule over the {cap} epochs, standardised data, {budget}; the compiled engine"],
            ["KDE (CV)", "Gaussian kernels; bandwidth shape and width by cross-validated "
             "likelihood"],
        ], folded=True),
    ]


def limits_findings(scores: dict[str, dict[str, Any]]) -> list[str]:
    """The section's text from its metrics."""
    bullets = _findings(scores)
    leader = bullets.pop()
    return [leader, *bullets, *_agreement(scores), *_convergence(scores)]


def _convergence(scores: dict[str, dict[str, Any]]) -> list[str]:
    """How each flow family converged, in epochs and in seconds; how many hit the cap; which
    family gets to its best first by each clock; how loaded the machine was."""
    n, first = len(scores), next(iter(scores.values()))
    some = first[next(iter(FLOWS))]
    cap, patience, n_val = some["epochs"], some["patience"], some["n_val"]
    out, medians = [], {}
    for model in FLOWS:
        records = [s[model] for s in scores.values()]
        capped = sum(r["hit_cap"] for r in records)
        converged = sum(r["stop_reason"] == "early-stopping" for r in records)
        other = n - capped - converged  # diverged or interrupted
        epochs = [r["best_epoch"] for r in records]
        seconds = [r["seconds_to_best"] for r in records]
        medians[model] = (float(np.median(epochs)), float(np.median(seconds)))
        out.append(
            f"{model}: converged (stopped by early stopping) on {converged} of {n} "
            f"distributions, hit the {cap}-epoch cap (still improving) on {capped}"
            + (f", stopped otherwise (diverged) on {other}" if other else "") + "; best "
            f"epoch {min(epochs)}-{max(epochs)} (median {medians[model][0]:g}), reached after "
            f"{min(seconds):.1f}-{max(seconds):.1f} s (median {medians[model][1]:.1f} s).")
    by_epochs = min(FLOWS, key=lambda m: medians[m][0])
    by_seconds = min(FLOWS, key=lambda m: medians[m][1])
    load = first["training_load"]
    busy = max(load["before"], load["after"]) > 1.5
    out.append(
        f"Every flow had the same budget (at most {cap} epochs, early stopping after {patience} "
        f"without a better validation NLL on {n_val} fresh points). Fewest epochs to the best "
        f"(median over the {n} laws): {by_epochs}; fewest seconds: {by_seconds}"
        + (" (the two clocks agree)." if by_epochs == by_seconds else
           " (the clocks disagree: an epoch costs each family a different time).")
        + f" Load average while training: {load['before']:.1f} before, {load['after']:.1f} "
        f"after, on {load['cores']} cores"
        + ("; other work shared the cores, so the seconds are slower than alone and compare "
           "families only roughly." if busy else "; the machine was otherwise idle."))
    return out


def _findings(scores: dict[str, dict[str, Any]]) -> list[str]:
    n = len(scores)
    sentences = []
    for model in MODELS:
        gaps = {dist: s[model]["entropy_gap"] for dist, s in scores.items()}
        se = {dist: s[model]["test_nll_se"] for dist, s in scores.items()}
        # within the target unless the gap exceeds it beyond noise
        within = sum(gaps[d] - Z * se[d] <= TARGET_GAP for d in gaps)
        worst = sorted(gaps, key=gaps.get, reverse=True)[:2]
        seconds = sum(s[model]["train_seconds"] for s in scores.values()) / n
        sentences.append(
            f"{model}: gap to the entropy at most {TARGET_GAP} nats, or above it by less than "
            f"{Z:g} standard errors, on {within} of {n} distributions; median gap "
            f"{np.median(list(gaps.values())):.3f}, "
            "largest on " + " and ".join(f"{d} ({gaps[d]:.3f})" for d in worst)
            + f"; {seconds:.1f} s of training per distribution."
        )
    groups = {dist: best_group({m: (s[m]["entropy_gap"], s[m]["test_nll_se"]) for m in MODELS},
                               paired=_paired(s))
              for dist, s in scores.items()}
    wins = {m: sum(g == [m] for g in groups.values()) for m in MODELS}
    shared = {m: sum(m in g and len(g) > 1 for g in groups.values()) for m in MODELS}
    leader = max(MODELS, key=lambda m: (wins[m] + shared[m], wins[m]))
    mean_gap = {dist: np.mean([s[m]["entropy_gap"] for m in MODELS])
                for dist, s in scores.items()}
    beaten = sum(all(compare(s[m]["test_nll"], s[m]["test_nll_se"], s[GAUSSIAN]["test_nll"],
                             s[GAUSSIAN]["test_nll_se"], paired=pair(_paired(s), m, GAUSSIAN))
                     < 0 for m in MODELS)
                 for s in scores.values())
    hardest = max(mean_gap, key=mean_gap.get)
    sentences.append(
        f"The {leader} model has the smallest gap alone on {wins[leader]} of {n} distributions "
        f"and shares it, within noise, on {shared[leader]} more "
        f"({Z:g}-standard-error rule{_kind(scores)}). Averaged over the four models, "
        f"{hardest} is the hardest to reach (mean gap {mean_gap[hardest]:.3f} nats). "
        + f"All four models beat the single Gaussian beyond noise on {beaten} of {n} "
        "distributions."
    )
    return sentences


def _paired(s: dict[str, Any]) -> dict[str, dict[str, float]]:
    """One distribution's stored paired standard errors (every model on its test points)."""
    return {m: s[m]["paired_se"] for m in (*MODELS, GAUSSIAN) if "paired_se" in s[m]}


def _kind(scores: dict[str, dict[str, Any]]) -> str:
    """Which standard errors the comparisons used, for the sentence."""
    paired = all(_paired(s) for s in scores.values())
    return (", paired standard errors: every model on the same test points" if paired
            else ", unpaired standard errors")


def _agreement(scores: dict[str, dict[str, Any]]) -> list[str]:
    """Where RealNVP and Glow give nearly the same test NLL, say whether they agree point by
    point (the same density) or only on average (different densities, equal scores)."""
    close = [d for d, s in scores.items()
             if abs(s["coursework RealNVP"]["test_nll"] - s["Glow"]["test_nll"]) < 0.002]
    if not close:
        return []
    parts = []
    for d in close:
        a, b = scores[d]["coursework RealNVP"]["test_nll"], scores[d]["Glow"]["test_nll"]
        apart = scores[d]["realnvp_glow_mean_abs_diff"]
        kind = ("two different densities that score alike" if apart > 0.02
                else "nearly the same density point by point")
        parts.append(f"{d} ({a:.4f} against {b:.4f}; their log-densities differ by {apart:.3f} "
                     f"nats per test point on average: {kind})")
    return ["RealNVP and Glow reach nearly the same test NLL on " + "; ".join(parts) + "."]

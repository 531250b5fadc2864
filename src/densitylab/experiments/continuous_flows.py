"""continuous-flows: a continuous normalizing flow, by maximum likelihood and by flow matching,
beside the coupling flows of the course.

Every distinct built-in law, the recommended spline flow, the coursework RealNVP, a CNF trained
by maximum likelihood through the ODE solver (FFJORD) and a CNF of the same size trained by flow
matching (straight paths, no solver in training), its field fed Fourier features of ``x`` as in
the ``cnf-fm`` recipe (cheap for flow matching; they stiffen the ODE that maximum likelihood
solves every step). Each family's flows are trained together, one per
law (:func:`densitylab.fit_many`), each law's share of the time reported. Reported: the gap
between the test NLL and the entropy (which is KL(true || model)) with its standard error,
training seconds, and the solver's function evaluations (NFE) per solve.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from densitylab import metrics, plots, views
from densitylab.evaluation import flow_log_prob, in_float64
from densitylab.experiments.findings import Z, compare, paired_table
from densitylab.experiments.limits import distinct_laws
from densitylab.experiments.runner import Outcome, Table
from densitylab.flows import (
    RECOMMENDED_FIT,
    cnf,
    function_evaluations,
    realnvp,
    recommended,
    recommended_epochs,
)
from densitylab.flows.flow import INFERENCE_CHUNK
from densitylab.plots import flows as flow_plots
from densitylab.plots.kde import density_panels
from densitylab.training import fit_many

TARGET_GAP = 0.05  # nats
SEED = 8
CNF_HIDDEN = (64, 64)  # the vector field of both CNFs (zuko's CNF default size)
FM_FOURIER = 4  # Fourier octaves of x in the flow-matching CNF's field (the cnf-fm recipe's)
SHOWN = "8gaussians"  # the law whose transport is drawn
ML, FM = "CNF (max. likelihood)", "CNF (flow matching)"
MODELS = ("recommended spline", "coursework RealNVP", ML, FM)
FULL = {"n": 5000, "n_test": 20_000, "steps": {MODELS[0]: 1000, MODELS[1]: 1000, ML: 200,
                                                FM: 6000}}
QUICK = {"n": 1000, "n_test": 4000, "steps": {MODELS[0]: 60, MODELS[1]: 60, ML: 8, FM: 150}}
FITS = {  # how each model is built (dim, seed) and trained
    MODELS[0]: (lambda seed: recommended(2, seed=seed), dict(RECOMMENDED_FIT)),
    MODELS[1]: (lambda seed: realnvp(2, 4, (32, 32), seed=seed), {"batch_size": 64, "lr": 1e-3}),
    ML: (lambda seed: cnf(2, CNF_HIDDEN, zero_init=True, seed=seed),
         {"batch_size": 256, "lr": 3e-3, "schedule": "cosine", "standardize": True}),
    FM: (lambda seed: cnf(2, CNF_HIDDEN, fourier=FM_FOURIER, seed=seed),
         {"batch_size": 256, "lr": 1e-2, "schedule": "cosine", "standardize": True,
          "objective": "flow-matching"}),
}


def run_continuous_flows(out: Path, quick: bool) -> Outcome:
    start = time.perf_counter()
    plan = QUICK if quick else FULL
    laws, _ = distinct_laws()
    fits = [law.sample(plan["n"], seed=0) for law in laws]
    tests = [law.sample(plan["n_test"], seed=1) for law in laws]
    scores: dict[str, dict[str, Any]] = {law.label: {"entropy": law.entropy()} for law in laws}
    kept, log_p = {}, {law.label: {} for law in laws}
    for model in MODELS:
        build, options = FITS[model]
        epochs = recommended_epochs(plan["n"], batch_size=options["batch_size"],
                                    steps=plan["steps"][model])
        t0 = time.perf_counter()
        results = fit_many([build(SEED) for _ in laws], fits, epochs=epochs, seed=SEED,
                           verbose=False, **options)
        share = (time.perf_counter() - t0) / len(laws)
        for law, result, test in zip(laws, results, tests, strict=True):
            scores[law.label][model], log_p[law.label][model] = _evaluate(
                result, test, law.entropy(), share)
            kept[law.label, model] = result
    for label, points in log_p.items():  # every model on the law's test points: paired
        for model, errors in paired_table(points).items():
            scores[label][model]["paired_se"] = errors
    shown = next(law for law in laws if law.name == SHOWN)
    figures = {
        "gaps": (_gap_figure(scores), "Gap between each model's test NLL and the entropy "
                 f"(KL from the truth), per distribution, log scale (gaps below 0.001 drawn "
                 f"at 0.001). Dashed: {TARGET_GAP} nats."),
        "transport": (_transport_figure(kept[shown.label, FM], shown, quick),
                      f"The flow-matching CNF on {shown.label}: the density at times t from the "
                      "base Gaussian (t = 0) to the model (t = 1), carried by the ODE, beside "
                      "the true density."),
    }
    plots.save_figures(out / "figures", {k: f for k, (f, _) in figures.items()}, strict=True)
    return Outcome(
        name="continuous-flows",
        title="Continuous flows: maximum likelihood and flow matching beside coupling flows",
        question="The course ends on continuous normalizing flows, a flow with infinitely many "
        "layers. On every built-in distribution "
        f"({plan['n']} training points, {plan['n_test']} fresh test points), how close to the "
        "entropy do a CNF trained by maximum likelihood through the ODE solver and the same "
        "CNF trained by flow matching come, beside the recommended spline flow and the "
        "coursework RealNVP, and at what training time and number of function evaluations?",
        findings=continuous_flows_findings(scores),
        figures={f"{k}.png": caption for k, (_, caption) in figures.items()},
        tables=_tables(scores, plan), metrics=scores, seconds=time.perf_counter() - start,
    )


def _evaluate(result, test: np.ndarray, entropy: float, seconds: float
              ) -> tuple[dict[str, Any], np.ndarray]:
    """Test NLL with its standard error, gap, seconds and the solver's work; and the
    per-point test log-densities. Coupling flows score in float64 (far from the data ``exp(s)``
    overflows float32); a CNF has no such exponential and scores in float32 at its solver's
    tolerance (1e-5), half the time of float64 (the gaps agreed to 0.001 nats at rtol 1e-7,
    ``benchmarks/RESULTS.md``)."""
    before = function_evaluations(result.flow)
    flow = result.flow if before is not None else in_float64(result.flow)
    t0 = time.perf_counter()
    log_p = flow_log_prob(flow, test) if before is None else _log_prob(flow, test)
    scoring = time.perf_counter() - t0
    nll, se = metrics.nll_with_error(log_p)
    row = {"test_nll": nll, "test_nll_se": se, "entropy_gap": nll - entropy,
           "train_seconds": seconds, "score_seconds": scoring, "best_epoch": result.best_epoch,
           "epochs_run": result.epochs_run, "lowest_val_epoch": _lowest_val_epoch(result)}
    if before is not None:
        solves = math.ceil(len(test) / INFERENCE_CHUNK)
        row["nfe_per_solve"] = (function_evaluations(flow) - before) / solves
        nfe = result.history.columns.get("train_nfe")
        row["train_nfe_first_last"] = [nfe[0], nfe[-1]] if nfe else [0.0, 0.0]
    return row, log_p


def _lowest_val_epoch(result) -> int:
    """The epoch (1-based) of the lowest validation loss recorded: where the run stopped
    improving, whichever epoch it kept (flow matching keeps its last)."""
    columns = result.history.columns
    val = np.asarray(columns.get("val_nll") or columns.get("val_fm") or [], dtype=float)
    finite = np.isfinite(val)
    return int(np.argmin(np.where(finite, val, np.inf))) + 1 if finite.any() else 0


def _log_prob(flow, x: np.ndarray) -> np.ndarray:
    """Log-densities of ``x`` under ``flow`` in its own precision."""
    with torch.no_grad():
        return flow.log_prob(torch.as_tensor(x, dtype=flow.dtype)).double().numpy()


def _gap_figure(scores: dict[str, dict[str, Any]]):
    series = {m: [max(s[m]["entropy_gap"], 1e-3) for s in scores.values()] for m in MODELS}
    return flow_plots.grouped_bars(list(scores), series, "test NLL - entropy (nats)",
                                   "Gap to the entropy per distribution",
                                   reference=(TARGET_GAP, f"{TARGET_GAP} nats"))


def _transport_figure(result, law, quick: bool):
    bounds = law.bounds()
    grid, images = views.density_along_time(result, bounds, (0.0, 0.25, 0.5, 0.75, 1.0),
                                            40 if quick else 90)
    panels = {f"t = {t:.2f}": image for t, image in images.items()}
    panels["true density"] = np.exp(law.log_prob(grid.points)).reshape(grid.shape)
    return density_panels(panels, grid, f"{law.label}: the Gaussian carried along t by the "
                          "flow-matching CNF", max_cols=3)


def _pair(s: dict[str, Any], a: str, b: str) -> float | None:
    """The stored paired standard error of ``a - b`` on one law's test points, if any."""
    return s[a].get("paired_se", {}).get(b)


def _kind(scores: dict[str, dict[str, Any]]) -> str:
    """How the models' differences' standard errors were formed, for the page."""
    return ("paired (every model on the same test points)"
            if all(_pair(s, FM, ML) is not None for s in scores.values()) else "unpaired")


def _within(s: dict[str, Any]) -> bool:
    """Within the target gap unless above it beyond noise."""
    return s["entropy_gap"] - Z * s["test_nll_se"] <= TARGET_GAP


def continuous_flows_findings(scores: dict[str, dict[str, Any]]) -> list[str]:
    """The section's text from its saved metrics: a short summary, then bullets."""
    n = len(scores)
    within = {m: sum(_within(s[m]) for s in scores.values()) for m in MODELS}
    better_cnf = sum(_within(s[ML]) or _within(s[FM]) for s in scores.values())
    verdicts = [compare(s[FM]["entropy_gap"], s[FM]["test_nll_se"], s[ML]["entropy_gap"],
                        s[ML]["test_nll_se"], paired=_pair(s, FM, ML)) for s in scores.values()]
    ratio = np.median([s[ML]["train_seconds"] / s[FM]["train_seconds"] for s in scores.values()])
    spline_ahead = sum(
        all(compare(s[MODELS[0]]["entropy_gap"], s[MODELS[0]]["test_nll_se"],
                    s[c]["entropy_gap"], s[c]["test_nll_se"], paired=_pair(s, MODELS[0], c))
            == -1 for c in (ML, FM))
        for s in scores.values())
    summary = (f"The better of the two CNFs comes within {TARGET_GAP} nats of the entropy on "
               f"{better_cnf} of {n} laws, the recommended spline flow on {within[MODELS[0]]}. "
               f"Flow matching is closer to the entropy than maximum likelihood on "
               f"{verdicts.count(-1)} of {n} laws, farther on {verdicts.count(1)} and within "
               f"noise on {verdicts.count(0)}, while maximum likelihood takes {ratio:.1f} times "
               f"its training time (median). The spline flow is closer than both CNFs beyond noise "
               f"on {spline_ahead} of {n} laws.")
    bullets = []
    for model in MODELS:
        gaps = {d: s[model]["entropy_gap"] for d, s in scores.items()}
        worst = max(gaps, key=gaps.get)
        seconds = np.mean([s[model]["train_seconds"] for s in scores.values()])
        bullets.append(f"{model}: within {TARGET_GAP} nats on {within[model]} of {n} laws, "
                       f"median gap {np.median(list(gaps.values())):.3f} (largest {worst}, "
                       f"{gaps[worst]:.3f}), {seconds:.1f} s of training per law.")
    nfe = {m: np.median([s[m]["nfe_per_solve"] for s in scores.values()]) for m in (ML, FM)}
    growth = np.median([s[ML]["train_nfe_first_last"][1] / max(s[ML]["train_nfe_first_last"][0],
                                                               1.0) for s in scores.values()])
    score_ratio = np.median([s[FM]["score_seconds"] / s[MODELS[0]]["score_seconds"]
                             for s in scores.values()])
    bullets.append(f"Function evaluations per test solve (median): {nfe[ML]:.0f} for maximum "
                   f"likelihood, {nfe[FM]:.0f} for flow matching.")
    bullets.append(f"During maximum-likelihood training the NFE per step grew {growth:.1f}-fold "
                   "from the first epoch to the last (median).")
    bullets.append(f"Scoring the test points took the flow-matching CNF {score_ratio:.0f} times "
                   "the spline flow's time (median).")
    late = {m: sum(s[m]["lowest_val_epoch"] >= 0.9 * s[m]["epochs_run"]
                   for s in scores.values())
            for m in MODELS if all("lowest_val_epoch" in s[m] for s in scores.values())}
    if late:
        bullets.append("Lowest validation loss in the last tenth of its fixed step budget (still "
                       "improving when the budget ran out): "
                       + ", ".join(f"{m} on {k} of {n} laws" for m, k in late.items())
                       + "; those gaps are what this budget reaches, not the model's limit.")
    return [summary, *bullets]


def _tables(scores: dict[str, dict[str, Any]], plan: dict[str, Any]) -> list[Table]:
    gap_rows = [[d, f"{s['entropy']:.4f}",
                 *(f"{s[m]['entropy_gap']:+.4f} ± {s[m]['test_nll_se']:.4f}" for m in MODELS)]
                for d, s in scores.items()]
    cost_rows = [[d, *(f"{s[m]['train_seconds']:.1f}" for m in MODELS),
                  *(f"{s[m]['nfe_per_solve']:.0f}" for m in (ML, FM))]
                 for d, s in scores.items()]
    steps = plan["steps"]
    return [
        Table("Gap to the entropy (test NLL - entropy = KL(true || model)) ± standard error, "
              "nats", ["distribution", "entropy", *MODELS], gap_rows,
              note=f"A gap counts as within {TARGET_GAP} nats of the entropy when it is not "
              f"above {TARGET_GAP} by more than {Z:g} standard errors. Two models of a law "
              f"differ when their gaps differ by more than {Z:g} standard errors of the "
              f"difference, {_kind(scores)}."),
        Table("Training seconds per law (each family trained together, the time shared out) "
              "and function evaluations per test solve", ["distribution", *MODELS,
                                                           "NFE (ML)", "NFE (FM)"], cost_rows,
              folded=True),
        Table("Models and budgets", ["model", "architecture and training"], [
            [MODELS[0], f"dl.flows.recommended(2) with its recipe, {steps[MODELS[0]]} steps"],
            [MODELS[1], f"4 affine couplings of (32, 32), batch 64, Adam 1e-3, "
             f"{steps[MODELS[1]]} steps"],
            [ML, f"dl.flows.cnf(2, {CNF_HIDDEN}, zero_init=True): ELU field of (x, 3 time "
             f"frequencies) starting at 0 (the flow at the identity), exact divergence, "
             f"dopri5 at rtol = atol = 1e-5; standardised data, batch 256, Adam "
             f"3e-3 cosine, {steps[ML]} steps, best validation NLL kept"],
            [FM, f"dl.flows.cnf(2, {CNF_HIDDEN}, fourier={FM_FOURIER}): the same field fed "
             f"{FM_FOURIER} octaves of Fourier features of x, trained by conditional flow "
             f"matching (straight paths, independent pairs), Adam 1e-2 cosine, {steps[FM]} "
             f"steps, the last epoch kept"],
        ], folded=True),
    ]

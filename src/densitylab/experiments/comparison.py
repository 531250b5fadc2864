"""flows-vs-baselines: RealNVP, Glow, KDE, VAE and GAN on the same data, by likelihood and samples.

Likelihoods are labelled for what they are: exact for flows, KDE and the single Gaussian, an
importance-weighted estimate (with its standard error) beside the ELBO bound for the VAE, and
none for the GAN. Every model trains on the same 800 points, validates on the same 2000 fresh
points and is tested on the same 20,000 fresh points of the exact law; the flows get equal
budgets and stop early once converged. Sample quality is judged by what sees support and
modes (off-support share, support precision and recall) beside energy distance.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from densitylab import baselines, metrics, plots
from densitylab.evaluation import flow_log_prob, flow_samples, gaussian_log_prob
from densitylab.experiments.findings import (
    Z,
    best_group,
    compare,
    pair,
    paired_table,
    recall_se,
)
from densitylab.experiments.runner import (
    GAUSSIAN_ROW,
    Outcome,
    Table,
    energy_noise,
    prepare,
    run_key,
    train_runs,
)
from densitylab.experiments.spec import Budget, Data, Model, Run
from densitylab.kde import KDE
from densitylab.plots import flows as flow_plots

DATA = {
    "mixture of Gaussians": ("gaussians-grid", {}),
    "moons": ("moons", {}),
    "checkerboard": ("checkerboard", {}),
    "gaussians-rot(7)": ("gaussians-rot", {"num_gaussians": 7}),
}
N_FIT = 800  # the project's 80% of 1000 points
EPOCHS, PATIENCE = 600, 150  # every flow: the same budget, stopped early once converged
HEAVY_TAIL_SE = 0.05  # a test NLL this uncertain on 20,000 points rests on a few of them
VAE_EPOCHS = 200
FREE_BITS = 0.5  # nats per latent coordinate: what kept the VAE from collapsing (README)
IW_SAMPLES, IW_POINTS = 500, 5000  # importance samples per point, test points estimated
N_SAMPLES = 2000
FLOW_MODELS = {"RealNVP": Model("realnvp", 4, (32, 32)), "Glow": Model("glow", 4, (32, 32))}
VAE_PLAIN, VAE_FIXED = "VAE (plain ELBO)", "VAE (free bits)"
MODELS = ("RealNVP", "Glow", "KDE (CV)", VAE_PLAIN, VAE_FIXED, "GAN")


def _runs(quick: bool) -> list[Run]:
    epochs, patience = (10, None) if quick else (EPOCHS, PATIENCE)
    runs = [Run(f"{label} | {name}", Data(data, params, n=N_FIT), model,
                Budget(epochs, standardize=True, patience=patience))
            for label, (data, params) in DATA.items() for name, model in FLOW_MODELS.items()]
    return runs


def _score(samples: np.ndarray, test: np.ndarray, truth, log_p: np.ndarray | None) -> dict:
    """Likelihood on every test point; samples against as many test points as samples."""
    quality = metrics.sample_quality(samples, test[:N_SAMPLES], truth.log_prob)
    row: dict[str, Any] = {k: quality[k] for k in ("energy_distance", "mmd", "precision",
                                                   "recall", "low_density_fraction")}
    row["recall_se"] = recall_se(quality["recall"], N_SAMPLES)
    if log_p is not None:
        row["test_nll"], row["test_nll_se"] = metrics.nll_with_error(log_p)
        row["entropy_gap"] = row["test_nll"] - truth.entropy()
        row["median_nll"], row["worst_nll"] = float(np.median(-log_p)), float(np.max(-log_p))
    centres = getattr(truth, "centres", None)
    if centres is not None:
        coverage = metrics.mode_coverage(samples, centres, radius=2 * truth.std)
        row["mode_coverage"], row["mode_precision"] = coverage["coverage"], coverage["precision"]
    return row


def _vae(fit, val, test, truth, quick: bool, free_bits: float) -> tuple[dict, np.ndarray]:
    """A VAE trained on standardised data; its IW NLL, ELBO and samples."""
    start = time.perf_counter()
    vae = baselines.fit_vae(baselines.VAE(2, seed=8), fit, x_val=val,
                            epochs=10 if quick else VAE_EPOCHS, standardize=True,
                            free_bits=free_bits, verbose=False).model
    seconds = time.perf_counter() - start
    points = test[:1000 if quick else IW_POINTS]
    with torch.no_grad():
        iw, iw_se = vae.log_prob_iw(points, k=100 if quick else IW_SAMPLES, seed=2)
        elbo = vae.elbo(points, n_samples=10, seed=3)
        samples = vae.sample(N_SAMPLES, seed=1).double().numpy()
    row = _score(samples, test, truth, iw.double().numpy())
    row |= {"elbo_nll": float(-elbo.mean()), "iw_se": float(iw_se.mean()),
            "train_seconds": seconds, "n_nll_points": len(points)}
    return row, samples


def run_comparison(out: Path, quick: bool) -> Outcome:
    start = time.perf_counter()
    runs = _runs(quick)
    prepared = {r.label: prepare(r.data) for r in runs}
    results, batched = train_runs(runs, prepared, verbose=False)
    scores: dict[str, dict[str, dict]] = {label: {} for label in DATA}
    panels: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}
    for label in DATA:
        data = prepared[f"{label} | RealNVP"]
        fit, val, test, truth = data.fit, data.val, data.test, data.truth
        noise = energy_noise(truth, test, n_samples=N_SAMPLES)
        log_p = {GAUSSIAN_ROW: gaussian_log_prob(fit, test)}  # every test point: paired
        for run in (r for r in runs if r.label.startswith(f"{label} | ")):
            name, result = run.label.split(" | ")[1], results[run.label]
            samples = flow_samples(result.flow, N_SAMPLES, seed=1)
            log_p[name] = flow_log_prob(result.flow, test)
            scores[label][name] = _score(samples, test, truth, log_p[name])
            scores[label][name] |= {
                "train_seconds": result.wall_time / batched[run.label],
                "seconds_to_best": result.history.seconds[result.best_epoch - 1]
                / batched[run.label] if result.best_epoch else 0.0,
                "best_epoch": result.best_epoch, "epochs_run": result.epochs_run,
                "stop_reason": result.stop_reason, "run_key": run_key(run),
                "data_label": truth.label, "epochs": run.budget.epochs}
            panels[label, name] = (test[:N_SAMPLES], samples)
        t0 = time.perf_counter()
        kde = KDE(bandwidth="cv").fit(fit)
        samples = kde.sample(N_SAMPLES, random_state=1)
        log_p["KDE (CV)"] = kde.score_samples(test)
        scores[label]["KDE (CV)"] = _score(samples, test, truth, log_p["KDE (CV)"])
        scores[label]["KDE (CV)"]["train_seconds"] = time.perf_counter() - t0
        panels[label, "KDE (CV)"] = (test[:N_SAMPLES], samples)
        for name, free_bits in ((VAE_PLAIN, 0.0), (VAE_FIXED, FREE_BITS)):
            scores[label][name], samples = _vae(fit, val, test, truth, quick, free_bits)
            panels[label, name] = (test[:N_SAMPLES], samples)
        t0 = time.perf_counter()
        gan = baselines.fit_gan(baselines.GAN(2, seed=8), fit, epochs=10 if quick else 200,
                                standardize=True, verbose=False).model
        seconds = time.perf_counter() - t0
        with torch.no_grad():
            samples = gan.sample(N_SAMPLES, seed=1).double().numpy()
        scores[label]["GAN"] = _score(samples, test, truth, None) | {"train_seconds": seconds}
        panels[label, "GAN"] = (test[:N_SAMPLES], samples)
        scores[label][GAUSSIAN_ROW] = metrics_gaussian(fit, test, truth)
        for name, errors in paired_table(log_p).items():  # the VAEs' NLL: other points
            scores[label][name]["paired_se"] = errors
        for name in (VAE_PLAIN, VAE_FIXED):
            vae = scores[label][name]
            points = test[:vae["n_nll_points"]]
            reference = metrics_gaussian(fit, points, truth)
            vae["collapse"] = baselines.collapse_diagnosis(
                vae["elbo_nll"], vae["test_nll"], vae["test_nll_se"], reference["test_nll"],
                reference["test_nll_se"], z=Z)
        for name, row in scores[label].items():
            if name != GAUSSIAN_ROW:
                row["energy_se"] = noise
    by_model = {(model, data): panel for (data, model), panel in panels.items()}
    figure = flow_plots.sample_grid(by_model, list(MODELS), list(DATA),
                                    "Samples of every model (red) over held-out data (blue)")
    plots.save_figures(out / "figures", {"samples": figure}, strict=True)
    n_test = len(prepared[runs[0].label].test)
    return Outcome(
        name="flows-vs-baselines",
        title="Flows against KDE, a VAE and a GAN",
        question="The RealNVP/Glow project sets out to compare flows with traditional generative "
        "models: RealNVP, Glow, KDE (bandwidth by cross-validation), a VAE and a GAN on a "
        "mixture of Gaussians, moons, the checkerboard and seven rotated Gaussians (the "
        f"project's 800 training points, standardised; {n_test} fresh test points): likelihood "
        "where it exists, and sample quality, beside a single full-covariance Gaussian.",
        findings=[],
        figures={"samples.png": f"Rows: models; columns: data sets (each column on its own "
                 f"axes). {N_SAMPLES} generated samples (red) drawn over {N_SAMPLES} held-out "
                 "test points (light blue, underneath)."},
        tables=[_table(scores, quick), _architectures()], metrics=scores,
        seconds=time.perf_counter() - start,
    )


def metrics_gaussian(fit: np.ndarray, test: np.ndarray, truth) -> dict[str, float]:
    from densitylab.evaluation import gaussian_reference

    return gaussian_reference(fit, test, truth.entropy()) | {"train_seconds": 0.0}


def _fmt(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _table(scores, quick: bool) -> Table:
    rows = []
    for label, per_model in scores.items():
        for name, s in per_model.items():
            nll = s.get("test_nll")
            kind = {VAE_PLAIN: f"IW, K={IW_SAMPLES}", VAE_FIXED: f"IW, K={IW_SAMPLES}",
                    "GAN": "no likelihood"}.get(name, "exact")
            rows.append([
                label, name,
                "—" if nll is None else f"{nll:.3f} ± {s['test_nll_se']:.3f}", kind,
                _fmt(s.get("elbo_nll")), _fmt(s.get("entropy_gap")),
                _fmt(s.get("low_density_fraction")),
                "—" if "recall" not in s else f"{s['precision']:.3f} / {s['recall']:.3f}",
                "—" if "energy_distance" not in s else
                f"{s['energy_distance']:.4f} ± {s['energy_se']:.4f}",
                _fmt(s.get("mode_coverage"), 2),
                "—" if "best_epoch" not in s else f"{s['best_epoch']} / {s['epochs_run']}",
                f"{s['train_seconds']:.1f}",
            ])
    columns = ["data", "model", "test NLL ± SE", "NLL kind", "-ELBO (bound)",
               "KL(true||model) = NLL − H", "samples off-support", "support precision / recall",
               "energy dist. ± noise (0 ideal)", "mode coverage", "best / last epoch", "train s"]
    budget = "10 epochs (--quick)" if quick else (f"{EPOCHS} epochs, stopped after {PATIENCE} "
                                                  "without a better validation NLL")
    note = (f"Flows: the same budget for RealNVP and Glow, {budget}; best-validation weights on "
            f"2000 fresh points. VAEs: {VAE_EPOCHS} epochs, their NLL estimated by importance "
            f"sampling on the first {IW_POINTS} test points (the plain-ELBO VAE is kept to show "
            "what posterior collapse looks like). The single Gaussian is fitted by maximum "
            "likelihood to the same 800 points: the reference every model must beat. Energy "
            "distance: the unbiased estimate (can dip below 0); its noise is the spread of the "
            "same statistic between fresh samples of the true law and the test points.")
    return Table("Likelihood and samples of every model on the same data (nats per point)",
                 columns, rows, note=note)


def _architectures() -> Table:
    rows = [
        ["RealNVP", "4 affine couplings, alternating masks; s and t: 2-32-32-2 MLPs with "
         "LeakyReLU; standardised input", "flow NLL, Adam 1e-3, batch 64"],
        ["Glow", "4 steps of ActNorm, invertible 1x1 (LU) linear map and affine coupling "
         "(32-32 MLPs); standardised input", "flow NLL, Adam 1e-3, batch 64"],
        ["KDE (CV)", "Gaussian kernels, bandwidth shape and width by cross-validated "
         "likelihood", "no training"],
        ["VAE", "latent 2; encoder and decoder MLPs 64-64 (LeakyReLU); Gaussian decoder with "
         "one learned std per coordinate", "negative ELBO (plain, or with free bits "
         f"{FREE_BITS} nats per latent coordinate); Adam 1e-3, batch 64, seed 8"],
        ["GAN", "latent 2; generator and discriminator MLPs 64-64 (LeakyReLU)",
         "non-saturating GAN loss with an R1 penalty (gamma 1); Adam 1e-3, batch 64, seed 8; "
         "final weights"],
        [GAUSSIAN_ROW, "mean and covariance of the training points", "maximum likelihood"],
    ]
    return Table("Architectures of the compared models", ["model", "architecture", "objective"],
                 rows, folded=True)


def _heavy(s: dict) -> bool:
    """A test NLL whose mean rests on a few points given almost no density: its standard
    error is over :data:`HEAVY_TAIL_SE` on the study's 20,000 points."""
    return s.get("test_nll_se", 0.0) > HEAVY_TAIL_SE and "worst_nll" in s


def _nll_bullet(label: str, per_model: dict[str, dict]) -> str:
    """One law's likelihood ranking by the page's rule; a model within noise of the best only
    because a heavy tail widened its standard error is said to be undecided, with its median."""
    nll = {m: (s["test_nll"], s["test_nll_se"]) for m, s in per_model.items() if "test_nll" in s}
    paired = _paired(per_model)
    best = best_group(nll, paired=paired)
    g = per_model[GAUSSIAN_ROW]
    beat = [m for m in nll if m != GAUSSIAN_ROW
            and compare(*nll[m], g["test_nll"], g["test_nll_se"],
                        paired=pair(paired, m, GAUSSIAN_ROW)) < 0]
    ties = [m for m in best[1:] if not _heavy(per_model[m])]
    undecided = [m for m in best[1:] if _heavy(per_model[m])]
    top = per_model[best[0]]
    text = (f"{label}: lowest test NLL {best[0]} ({nll[best[0]][0]:.3f}, KL(true || model) "
            f"{top['entropy_gap']:.3f})"
            + (f", {', '.join(ties)} within noise" if ties else
               ", beyond noise" if not undecided else ""))
    if undecided:
        text += ("; the mean cannot decide against " + ", ".join(
            f"{m} ({per_model[m]['test_nll']:.3f} ± {per_model[m]['test_nll_se']:.3f}: a few "
            f"test points given almost no density, the worst "
            f"{per_model[m]['worst_nll']:.0f} nats; median {per_model[m]['median_nll']:.3f} "
            f"against {top.get('median_nll', float('nan')):.3f})" for m in undecided))
    return (text + f"; beating the single Gaussian ({g['test_nll']:.3f}): "
            + (", ".join(beat) if beat else "none") + ".")


def _f1(s: dict) -> tuple[float, float]:
    """Support F1 of a sampler, ``2PR / (P + R)``, and its standard error by the delta method
    from the binomial errors of precision and recall: it sees both failures, samples off the
    data (low precision: over-dispersion, bridges) and data without samples (low recall)."""
    p, r = s["precision"], s["recall"]
    if p + r == 0:
        return 0.0, recall_se(0.0, N_SAMPLES)
    f1 = 2 * p * r / (p + r)
    d_p, d_r = 2 * r * r / (p + r) ** 2, 2 * p * p / (p + r) ** 2
    return f1, float(np.hypot(d_p * recall_se(p, N_SAMPLES), d_r * recall_se(r, N_SAMPLES)))


def _gan_verdict(label: str, per_model: dict[str, dict]) -> tuple[str, str]:
    """What the GAN's measured columns say on one law: ``("modes", text)`` when the
    mode-coverage column shows missed modes (mode collapse), ``("support", text)`` when its
    support recall is below the best model's beyond noise with no mode missed (or no modes to
    count), else ``("", "")``."""
    gan = per_model["GAN"]
    if gan.get("mode_coverage", 1.0) < 1.0:
        return "modes", f"{label} (mode coverage {gan['mode_coverage']:.2f})"
    best_recall = max(s["recall"] for s in per_model.values() if "recall" in s)
    leader = next(m for m, s in per_model.items() if s.get("recall") == best_recall)
    if compare(gan["recall"], gan["recall_se"], best_recall, per_model[leader]["recall_se"],
               lower_is_better=False) > 0:
        modes = (f", every mode reached (coverage {gan['mode_coverage']:.2f})"
                 if "mode_coverage" in gan else "")
        return "support", (f"{label} (recall {gan['recall']:.3f} against {leader}'s "
                           f"{best_recall:.3f}{modes})")
    return "", ""


def _count(k: int, n: int) -> str:
    return "every law" if k == n else "no law" if k == 0 else f"{k} of {n} laws"


def comparison_findings(scores: dict[str, dict[str, dict]]) -> list[str]:
    """The section's text from its metrics: likelihood ranking, VAE collapse, sample quality."""
    bullets = [_nll_bullet(label, per_model) for label, per_model in scores.items()]
    for name in (VAE_PLAIN, VAE_FIXED):
        verdicts = {label: per_model[name]["collapse"] for label, per_model in scores.items()}
        collapsed = [lb for lb, v in verdicts.items() if v["collapsed"]]
        bullets.append(
            f"{name}: IW NLL minus the single Gaussian's (negative: better than it) "
            + ", ".join(f"{lb} {-v['margin']:+.3f} (noise {v['noise']:.3f})"
                        for lb, v in verdicts.items())
            + "; -ELBO minus IW NLL: "
            + ", ".join(f"{v['bound_gap']:.3f}" for v in verdicts.values())
            + (f". Collapsed (no better than one Gaussian) on {', '.join(collapsed)}."
               if collapsed else ". Not collapsed on any law."))
    found: dict[str, list[str]] = {"modes": [], "support": []}
    listing = []
    for label, per_model in scores.items():
        gan = per_model["GAN"]
        kind, text = _gan_verdict(label, per_model)
        if kind:
            found[kind].append(text)
        listing.append(f"{label} precision {gan['precision']:.3f}, recall {gan['recall']:.3f}, "
                       f"off-support {gan['low_density_fraction']:.3f}"
                       + (f", mode coverage {gan['mode_coverage']:.2f}"
                          if "mode_coverage" in gan else "")
                       + f", energy distance {gan['energy_distance']:.4f}")
    bullets.append(
        "GAN samples: " + "; ".join(listing) + ". Mode collapse (modes missed, by the "
        "mode-coverage column): " + ("; ".join(found["modes"]) or "on no law") + ". Support "
        "missed without a missed mode (recall below the best model's beyond noise): "
        + ("; ".join(found["support"]) or "on no law") + ".")
    closest = {}
    for label, per_model in scores.items():
        f1 = {m: _f1(s) for m, s in per_model.items() if "recall" in s and "precision" in s}
        closest[label] = best_group(f1, lower_is_better=False)
    bullets.append(
        "Closest samples by support F1 (2PR / (P + R) of support precision P and recall R: "
        "over-dispersed samples lose precision, collapsed ones recall), best first and those "
        "within noise of it: " + "; ".join(
            f"{lb}: " + ", ".join(
                f"{m} (P {scores[lb][m]['precision']:.3f}, R {scores[lb][m]['recall']:.3f})"
                for m in group) for lb, group in closest.items()) + ".")
    plain = sum(v[VAE_PLAIN]["collapse"]["collapsed"] for v in scores.values())
    fixed = sum(v[VAE_FIXED]["collapse"]["collapsed"] for v in scores.values())
    winners = sorted({best_group({m: (s["test_nll"], s["test_nll_se"]) for m, s in p.items()
                                  if "test_nll" in s}, paired=_paired(p))[0]
                      for p in scores.values()})
    ahead = {m: sum(m in g for g in closest.values()) for m in MODELS}
    leader = max(MODELS, key=lambda m: (ahead[m], -MODELS.index(m)))
    n = len(scores)
    counted = sum("mode_coverage" in p["GAN"] for p in scores.values())
    summary = ((f"{winners[0]} has the lowest test NLL on every law. " if len(winners) == 1
                else f"The lowest test NLL belongs to {', '.join(winners)}, by law. ")
               + f"The plain-ELBO VAE is no better than a single Gaussian (collapsed) on "
               f"{_count(plain, n)}, the VAE with free bits on {_count(fixed, n)}. "
               f"By support F1, which sees samples off the data as well as data without "
               f"samples, {leader}'s samples are the closest or within noise of it on "
               f"{_count(ahead[leader], n)}"
               + (f"; the GAN misses modes on {len(found['modes'])} of the {counted} laws with "
                  "modes to count." if counted else "."))
    bullets.extend(_convergence(scores))
    bullets.append("Test NLLs are compared on paired standard errors (the per-point differences "
                   "on the same 20,000 test points) between the flows, KDE and the single "
                   "Gaussian; the VAEs' importance-weighted NLL, estimated on fewer points, on "
                   "unpaired ones.")
    return [summary, *bullets]


def _convergence(scores: dict[str, dict[str, dict]]) -> list[str]:
    """How the flows converged under their equal budget, in epochs and in seconds, and which
    got to its best first by each clock."""
    flows = [(lb, m, s) for lb, p in scores.items() for m, s in p.items() if "best_epoch" in s]
    if not flows:
        return []
    capped = [f"{lb} {m} (best epoch {s['best_epoch']} of {s['epochs']})"
              for lb, m, s in flows if s["stop_reason"] == "completed"]
    cap = flows[0][2]["epochs"]
    parts = []
    for lb, p in scores.items():
        runs = {m: s for m, s in p.items() if "best_epoch" in s}
        reach = "; ".join(f"{m} epoch {s['best_epoch']}, {s['seconds_to_best']:.1f} s"
                          for m, s in runs.items())
        by = {clock: min(runs, key=lambda m, k=key: runs[m][k])
              for clock, key in (("epochs", "best_epoch"), ("seconds", "seconds_to_best"))}
        same = by["epochs"] == by["seconds"]
        parts.append(f"{lb}: {reach} (first by epochs {by['epochs']}, by seconds "
                     f"{by['seconds']}{'' if same else ': the clocks disagree'})")
    return [f"Convergence under the flows' equal budget (at most {cap} epochs, early "
            f"stopping): {len(flows) - len(capped)} of {len(flows)} runs stopped converged; hit "
            "the cap (still improving): " + ("; ".join(capped) if capped else "none")
            + ". Best epoch and seconds to it: " + "; ".join(parts) + "."]


def _paired(per_model: dict[str, dict]) -> dict[str, dict[str, float]]:
    """The stored paired standard errors of one law's models (those scored on every test
    point)."""
    return {m: s["paired_se"] for m, s in per_model.items() if "paired_se" in s}

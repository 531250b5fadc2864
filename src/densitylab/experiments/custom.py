"""Studies that are not "train these flows": the distributions themselves and the KDE study."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from densitylab import datasets, metrics, plots
from densitylab.experiments.findings import paired_table
from densitylab.experiments.outcome import Outcome, Table
from densitylab.experiments.spec import CustomExperiment
from densitylab.grids import make_grid

KDE_PART = {"gmm sigma=0.5": ("gmm", {"sigma": 0.5}), "gmm sigma=1": ("gmm", {"sigma": 1.0}),
            "spiral": ("spiral", {})}
BANDWIDTHS = (0.1, 0.5, 1.0)
RULES = ("scott", "silverman", "cv")


def run_datasets(out: Path, quick: bool) -> Outcome:
    """Scatter plots of every built-in distribution, and their entropies."""
    from densitylab.plots.datasets import overview

    start = time.perf_counter()
    dists = datasets.catalogue()
    flows_part = {d.label: d.sample(1000, seed=0) for d in dists}
    n_kde = 2000 if quick else 10000
    kde_part = {label: datasets.get(name, **params).sample(n_kde, seed=0)
                for label, (name, params) in KDE_PART.items()}
    figures = {
        "flow-part": (overview(flows_part, "Every built-in distribution, 1000 samples each"),
                      "Samples of every toy distribution (N=1000), as drawn for the flow studies."),
        "kde-part": (overview(kde_part, f"The KDE study's distributions, {n_kde} samples each"),
                     f"The two Gaussian mixtures and the spiral of the KDE study (N={n_kde})."),
    }
    plots.save_figures(out / "figures", {k: fig for k, (fig, _) in figures.items()}, strict=True)
    rows = [[d.name, d.params_text or "-", f"{d.entropy():.4f}", d.description]
            for d in dists]
    entropies = {d.label: d.entropy() for d in dists}
    return Outcome(
        name="datasets", title="The toy distributions",
        question="Both parts of the coursework begin by drawing samples from each distribution "
        "and displaying them: 1000 points for the flow part, 10000 for the KDE part.",
        findings=[], figures={f"{k}.png": c for k, (_, c) in figures.items()},
        tables=[Table("Built-in distributions and their exact entropies (nats)",
                      ["name", "parameters", "entropy", "description"], rows)],
        metrics={"entropy": entropies}, seconds=time.perf_counter() - start,
    )


def datasets_findings(metrics: dict) -> list[str]:
    entropies = metrics["entropy"]
    low, high = min(entropies, key=entropies.get), max(entropies, key=entropies.get)
    twins: dict[str, list[str]] = {}
    for label, h in entropies.items():
        twins.setdefault(f"{h:.4f}", []).append(label)
    bullets = [f"{' and '.join(labels)} have the same entropy ({h}); the parameters in the "
               "table show why: they are one law, drawn in both parts of the coursework."
               for h, labels in twins.items() if len(labels) > 1]
    return [
        f"Each toy law's exact entropy is the floor of any model's expected test NLL; they span "
        f"{entropies[low]:.3f} nats ({low}) to {entropies[high]:.3f} nats ({high}).",
        *bullets,
    ]


def run_kde_bandwidth(out: Path, quick: bool) -> Outcome:
    """The coursework's KDE study: h in {0.1, 0.5, 1} against the truth, and the rules' choices."""
    from densitylab.kde import KDE
    from densitylab.plots.kde import density_panels

    start = time.perf_counter()
    n, resolution = (2000, 60) if quick else (10000, 100)
    rows, results, figures = [], {}, {}
    for label, (name, params) in KDE_PART.items():
        truth = datasets.get(name, **params)
        x, held_out = truth.sample(n, seed=0), truth.sample(n, seed=1)
        grid = make_grid(truth.bounds(), resolution)
        images = {"true density": np.exp(truth.log_prob(grid.points)).reshape(grid.shape)}
        held_out_scores = {}
        for bandwidth in (*BANDWIDTHS, *RULES):
            kde = KDE(bandwidth=bandwidth).fit(x)
            score = _score(kde, truth, held_out, resolution)
            held_out_scores[_name(bandwidth)] = kde.score_samples(held_out)
            results[f"{label} | {bandwidth}"] = score
            rows.append([label, _bandwidth_label(bandwidth, kde), f"{score['ise']:.5f}",
                         f"{score['kl']:.4f}",
                         f"{-score['held_out_ll']:.4f} ± {score['held_out_ll_se']:.4f}"])
            if bandwidth in BANDWIDTHS:
                images[f"KDE h={bandwidth:g}"] = kde.evaluate_grid(grid)
        # every bandwidth scored on the same held-out points: paired errors of the differences
        for bandwidth, errors in zip((*BANDWIDTHS, *RULES),
                                     paired_table(held_out_scores).values(), strict=True):
            results[f"{label} | {bandwidth}"]["paired_se"] = errors
        results[f"{label} | roughness"] = roughness(truth, n) | {"entropy": truth.entropy()}
        slug = label.replace(" ", "-").replace("=", "")
        figures[f"kde-{slug}"] = (
            density_panels(images, grid, f"{label}: true density and KDE estimates (N={n})"),
            f"{label}: the true density beside the KDE with H = hI, all on one colour scale.",
        )
    plots.save_figures(out / "figures", {k: fig for k, (fig, _) in figures.items()}, strict=True)
    return Outcome(
        name="kde-bandwidth", title="Kernel density estimation: the bandwidth trade-off",
        question="Coursework Part I: estimate two Gaussian mixtures (sigma 0.5 and 1) and the "
        f"spiral from N={n} samples with H = hI for h in 0.1, 0.5, 1; compare with the true "
        "density, discuss the trade-off, and say which distribution is easiest and hardest.",
        findings=[],
        figures={f"{k}.png": c for k, (_, c) in figures.items()},
        tables=[Table("KDE against the truth: integrated squared error, KL(true || KDE) on the "
                      "grid, and the negative log-likelihood of fresh points (lower is better)",
                      ["distribution", "bandwidth", "ISE", "KL", "held-out NLL ± SE"],
                      rows, note=f"Settings: N={n} samples (seed 0), {n} fresh held-out points "
                      f"(seed 1), a {resolution}x{resolution} grid over each law's plotted box, "
                      "the separable Gaussian kernel with H = hI, as the coursework sets"
                      + (" (a --quick preview: N cut from 10000)" if quick else "") + ".")],
        metrics=results, seconds=time.perf_counter() - start,
    )


def _name(bandwidth) -> str:
    """A bandwidth as the findings name it: ``h=0.5`` for a fixed one, a rule by its name."""
    return f"h={bandwidth:g}" if bandwidth in BANDWIDTHS else str(bandwidth)


def _score(kde, truth, held_out: np.ndarray, resolution: int) -> dict[str, float]:
    grid = metrics.grid_divergences(truth.log_prob, kde.score_samples, truth.bounds(), resolution)
    scores = kde.score_samples(held_out)
    return {"ise": grid["ise"], "kl": grid["kl"], "tv": grid["tv"],
            "held_out_ll": float(np.mean(scores)),
            "held_out_ll_se": float(np.std(scores, ddof=1) / np.sqrt(len(scores))),
            "bandwidth": kde.bandwidth_.tolist()}


def roughness(truth, n: int, resolution: int = 400) -> dict[str, float]:
    """The curvature that makes a density hard for a KDE, and what it predicts.

    With H = hI and a Gaussian kernel in 2-D, the asymptotic mean integrated squared error is
    ``1 / (4 pi n h^2) + h^4 R / 4`` with ``R = integral of (laplacian f)^2``: the bias grows
    with the density's curvature. Its minimiser is ``h* = (2 pi n R)^(-1/6)``, its minimum
    ``AMISE* = 3 / (8 pi n h*^2)``. ``R`` by finite differences on a fine grid of the truth,
    and on one half as fine: where the two disagree by more than :data:`FINITE_R_GROWTH` the
    integral diverges (jumps, a singular point) and ``finite`` is False.
    """
    r, coarse = _curvature(truth, resolution), _curvature(truth, resolution // 2)
    h_star = (2 * np.pi * n * r) ** (-1 / 6)
    finite = r < FINITE_R_GROWTH * coarse  # a finite R converges as the grid is refined
    return {"R": r, "R_coarse": coarse, "finite": bool(finite), "h_star": float(h_star),
            "amise_star": float(3 / (8 * np.pi * n * h_star**2))}


FINITE_R_GROWTH = 1.5  # R estimates that grow more than this on a twice-finer grid diverge


def _curvature(truth, resolution: int) -> float:
    """``integral of (laplacian f)^2`` by finite differences on a ``resolution`` grid."""
    grid = make_grid(truth.bounds(), resolution)
    f = np.exp(truth.log_prob(grid.points)).reshape(grid.shape)
    dy, dx = grid.ys[1] - grid.ys[0], grid.xs[1] - grid.xs[0]
    laplacian = (np.gradient(np.gradient(f, dx, axis=1), dx, axis=1)
                 + np.gradient(np.gradient(f, dy, axis=0), dy, axis=0))
    return float(np.sum(laplacian**2) * dx * dy)


def _bandwidth_label(bandwidth, kde) -> str:
    if isinstance(bandwidth, str):
        h = np.sqrt(np.diag(kde.covariance_))
        return f"{bandwidth} (std per axis {h[0]:.3f}, {h[1]:.3f})"
    return f"h = {bandwidth:g}"


def _effective_h(score: dict) -> float:
    """The scalar bandwidth of a bandwidth matrix H: sqrt(|det H|), the h of H = hI."""
    return float(np.sqrt(abs(np.linalg.det(np.asarray(score["bandwidth"])))))


def _nll(score: dict) -> tuple[float, float]:
    return -score["held_out_ll"], score["held_out_ll_se"]


def _paired(results: dict, label: str, bandwidths) -> dict:
    """``{b: {c: paired standard error of b - c}}`` for bandwidths of one law (all scored on
    the same held-out points), keyed as ``bandwidths`` are; empty where none was stored."""
    return {b: {c: results[f"{label} | {b}"]["paired_se"][_name(c)] for c in bandwidths
                if c != b and _name(c) in results[f"{label} | {b}"].get("paired_se", {})}
            for b in bandwidths}


def _trade_off(label: str, fixed: dict, paired: dict) -> tuple[float, str]:
    """The best of the coursework's bandwidths by held-out NLL, and what the others lose,
    each side decided by the page's rule (on the paired standard errors of the same held-out
    points): smaller h loses to variance, larger h to bias."""
    from densitylab.experiments.findings import Z, best_group, compare, pair, se_kind

    nll = {h: _nll(fixed[h]) for h in BANDWIDTHS}
    best = best_group(nll, paired=paired)[0]
    worse = {h for h in BANDWIDTHS if h != best
             and compare(*nll[best], *nll[h], paired=pair(paired, best, h)) < 0}
    smaller = sorted(h for h in worse if h < best)
    larger = sorted(h for h in worse if h > best)
    ties = sorted(h for h in BANDWIDTHS if h != best and h not in worse)
    parts = []
    if smaller:
        parts.append(f"smaller h ({', '.join(f'{h:g}' for h in smaller)}) is worse beyond "
                     "noise: the estimate follows the sample's noise (variance)")
    if larger:
        parts.append(f"larger h ({', '.join(f'{h:g}' for h in larger)}) is worse beyond noise: "
                     "it blurs the structure away (bias)")
    if ties:
        parts.append(f"h = {', '.join(f'{h:g}' for h in ties)} within noise of it")
    listing = ", ".join(f"h={h:g} {v:.3f} ± {se:.3f}" for h, (v, se) in nll.items())
    other = next(h for h in BANDWIDTHS if h != best)
    rule = f"{Z:g} standard errors, {se_kind(pair(paired, best, other))}"
    return best, (f"{label}: held-out NLL {listing}; best h={best:g}; " + "; ".join(parts)
                  + f" ({rule}).")


def kde_findings(results: dict[str, dict[str, float]]) -> list[str]:
    """The KDE section's text from its metrics (held-out NLL throughout, lower is better);
    the curvature theory only where it holds."""
    from densitylab.experiments.findings import Z, best_group, compare, pair

    bullets, best_fixed, best_kl, cv_ok = [], {}, {}, []
    for label in KDE_PART:
        fixed = {h: results[f"{label} | {h}"] for h in BANDWIDTHS}
        paired = _paired(results, label, (*BANDWIDTHS, *RULES))
        best_fixed[label], bullet = _trade_off(label, fixed, paired)
        bullets.append(bullet)
        scores = [*fixed.values(), *(results[f"{label} | {r}"] for r in RULES)]
        best_kl[label] = min(s["kl"] for s in scores)
        cv, best = results[f"{label} | cv"], fixed[best_fixed[label]]
        if compare(*_nll(cv), *_nll(best), paired=pair(paired, "cv", best_fixed[label])) <= 0:
            cv_ok.append(label)
    rules = []
    for label in KDE_PART:
        scored = {r: _nll(results[f"{label} | {r}"]) for r in RULES}
        group = best_group(scored, paired=_paired(results, label, RULES))
        winner = (f"{group[0]} best beyond noise" if len(group) == 1 else
                  f"{' / '.join(group)} within noise of each other"
                  + (" (all three)" if len(group) == len(RULES) else ""))
        rules.append(f"{label}: " + ", ".join(
            f"{r} {v:.3f} (h {_effective_h(results[f'{label} | {r}']):.3f})"
            for r, (v, _) in scored.items()) + f"; {winner}")
    same = [label for label in KDE_PART if results[f"{label} | scott"]["bandwidth"]
            == results[f"{label} | silverman"]["bandwidth"]]
    kind = ("paired: the same held-out points" if all(
        "paired_se" in results[f"{label} | {r}"] for label in KDE_PART for r in RULES)
        else "unpaired")
    bullets.append(f"Rules, held-out NLL (effective h = sqrt|det H|; within noise: under {Z:g} "
                   f"standard errors, {kind}): " + "; ".join(rules) + "."
                   + (f" Scott's and Silverman's bandwidths are identical on {len(same)} of "
                      f"{len(KDE_PART)} laws (in 2-D their factors coincide)." if same else ""))
    below = []
    for label in KDE_PART:  # a held-out NLL below the entropy is sampling noise: say how much
        entropy = results[f"{label} | roughness"]["entropy"]
        for bandwidth in (*BANDWIDTHS, *RULES):
            score = results[f"{label} | {bandwidth}"]
            gap = entropy + score["held_out_ll"]
            if gap > 0:
                below.append((label, bandwidth, gap / score["held_out_ll_se"]))
    if below:
        bullets.append(
            f"{len(below)} held-out NLLs fall below the entropy, by at most "
            f"{max(z for *_, z in below):.1f} standard errors (sampling noise of the held-out "
            "points): " + ", ".join(f"{lb} {b if isinstance(b, str) else f'h={b:g}'}"
                                    for lb, b, _ in below) + ".")
    rough = {label: results[f"{label} | roughness"] for label in KDE_PART}
    for label, r in rough.items():
        if r["finite"]:
            measured = min(results[f"{label} | {b}"]["ise"] for b in (*BANDWIDTHS, *RULES))
            cv_h = _effective_h(results[f"{label} | cv"])
            bullets.append(
                f"Theory, {label} (R = integral of (Laplacian f)^2 = {r['R']:.3g}, finite): "
                f"the asymptotic best h* = (2 pi N R)^(-1/6) = {r['h_star']:.3f} against "
                f"cross-validation's {cv_h:.3f}; the predicted best error AMISE* "
                f"{r['amise_star']:.5f} against the lowest measured ISE {measured:.5f}.")
        else:
            bullets.append(
                f"Theory, {label}: R is infinite (its density jumps and has a singular "
                f"centre; the estimate grows from {r['R_coarse']:.3g} to {r['R']:.3g} when the "
                "grid is made twice as fine), so no h* or AMISE* exists and none is quoted.")
    order = sorted(KDE_PART, key=best_kl.get)
    by_r = sorted(KDE_PART, key=lambda lb: rough[lb]["R"] if rough[lb]["finite"] else np.inf)
    why = ("the order of their curvature R ("
           + ", ".join(f"{rough[lb]['R']:.3g}" if rough[lb]["finite"] else "infinite"
                       for lb in order)
           + "): a KDE's bias is about h^2/2 times the Laplacian, so rougher laws cost more"
           if order == by_r else "not the order of their curvature R")
    summary = [
        f"By the lowest KL(true || KDE) any bandwidth reached, {order[0]} is the easiest "
        f"({best_kl[order[0]]:.4f}) and {order[-1]} the hardest ({best_kl[order[-1]]:.4f}), "
        f"{why}.",
        "Of h = 0.1, 0.5, 1 the held-out NLL is lowest at " + ", ".join(
            f"h={best_fixed[lb]:g} for {lb}" for lb in KDE_PART)
        + ": the trade-off between noise (small h) and blur (large h) is measured below.",
        f"Cross-validation's bandwidth is as good as the best fixed h or better on "
        f"{len(cv_ok)} of {len(KDE_PART)} laws.",
    ]
    return [" ".join(summary), *bullets]


def _comparison(out: Path, quick: bool) -> Outcome:
    from densitylab.experiments.comparison import run_comparison

    return run_comparison(out, quick)


def _limits(out: Path, quick: bool) -> Outcome:
    from densitylab.experiments.limits import run_limits

    return run_limits(out, quick)


def _triangular(out: Path, quick: bool) -> Outcome:
    from densitylab.experiments.triangular import run_triangular

    return run_triangular(out, quick)


def _real_data(out: Path, quick: bool) -> Outcome:
    from densitylab.experiments.real_data import run_real_data

    return run_real_data(out, quick)


def _comparison_findings(metrics: dict) -> list[str]:
    from densitylab.experiments.comparison import comparison_findings

    return comparison_findings(metrics)


def _limits_findings(metrics: dict) -> list[str]:
    from densitylab.experiments.limits import limits_findings

    return limits_findings(metrics)


def _triangular_findings(metrics: dict) -> list[str]:
    from densitylab.experiments.triangular import triangular_findings

    return triangular_findings(metrics)


def _real_data_findings(metrics: dict) -> list[str]:
    from densitylab.experiments.real_data import real_data_findings

    return real_data_findings(metrics)


def _engines_findings(metrics: dict) -> list[str]:
    from densitylab.experiments.engines import engines_findings

    return engines_findings(metrics)


def _continuous_flows_findings(metrics: dict) -> list[str]:
    from densitylab.experiments.continuous_flows import continuous_flows_findings

    return continuous_flows_findings(metrics)


def _images_findings(metrics: dict) -> list[str]:
    from densitylab.experiments.images import images_findings

    return images_findings(metrics)


def _continuous_flows(out: Path, quick: bool) -> Outcome:
    from densitylab.experiments.continuous_flows import run_continuous_flows

    return run_continuous_flows(out, quick)


def _engines(out: Path, quick: bool) -> Outcome:
    from densitylab.experiments.engines import run_engines

    return run_engines(out, quick)


def _images(out: Path, quick: bool) -> Outcome:
    from densitylab.experiments.images import run_images

    return run_images(out, quick)


CUSTOM_STUDIES = (
    CustomExperiment("datasets", "The toy distributions", "Scatter of every toy distribution.",
                     run_datasets, cost=0.2, findings=datasets_findings),
    CustomExperiment("kde-bandwidth", "Kernel density estimation: the bandwidth trade-off",
                     "The coursework's KDE study: bandwidths 0.1, 0.5, 1 against the truth on two "
                     "Gaussian mixtures and the spiral, and what Scott, Silverman and CV choose.",
                     run_kde_bandwidth, cost=1.0, findings=kde_findings),
    CustomExperiment("flows-vs-baselines", "Flows against KDE, a VAE and a GAN",
                     "RealNVP, Glow, KDE, a VAE and a GAN on four data sets: likelihood where it "
                     "exists, gap to the entropy, sample distances and training time.",
                     _comparison, cost=4.2, findings=_comparison_findings),
    CustomExperiment("limits", "How close to the entropy: every distribution, four models",
                     "The coursework RealNVP, Glow, the recommended spline flow and KDE (CV) on "
                     "all 13 built-in distributions (10,000 points), every flow trained to "
                     "convergence under one cap: gap to the entropy, epochs and seconds.",
                     _limits, cost=9.0, findings=_limits_findings),
    CustomExperiment("triangular-coupling", "Triangular coupling (z_a = A x_a) in 4 and 8 "
                     "dimensions", "The plain and the triangular coupling flow on rotated "
                     "products of toy laws in D = 4 and 8: likelihood, determinant, samples, cost.",
                     _triangular, cost=2.0, exclusive=True, findings=_triangular_findings),
    CustomExperiment("real-data", "Real data: densitylab beside scikit-learn",
                     "Held-out log-likelihood on data sets that ship with scikit-learn, by K-fold "
                     "cross-validation: AutoDensity, KDE (cv), FlowDensity against "
                     "KernelDensity + GridSearchCV and GaussianMixture (BIC).",
                     _real_data, cost=3.0, findings=_real_data_findings),
    CustomExperiment("continuous-flows", "Continuous flows: maximum likelihood and flow "
                     "matching beside coupling flows", "A CNF trained by maximum likelihood "
                     "and by flow matching, the recommended spline flow and the coursework "
                     "RealNVP on every built-in distribution: gap to the entropy, training "
                     "time, function evaluations, and a density carried along t.",
                     _continuous_flows, cost=4.0, findings=_continuous_flows_findings),
    CustomExperiment("numpy-vs-torch", "NumPy against PyTorch (and the compiled engine)",
                     "The same RealNVP in NumPy, torch autograd and the compiled engine: seconds "
                     "per epoch and test NLL for batch sizes 64 to 1500 and widths 32 to 512.",
                     _engines, cost=3.1, exclusive=True, findings=_engines_findings),
    CustomExperiment("images", "Images: multi-scale RealNVP and Glow on 8x8 digits",
                     "Multi-scale Glow, multi-scale RealNVP and a single-scale flow of the same "
                     "size on the digits: bits/dim, time, samples by temperature, dequantization "
                     "and likelihoods for novelty.", _images, cost=3.0,
                     findings=_images_findings),
)

"""real-data: densitylab's estimators beside scikit-learn's on data nobody here simulated.

The protocol of ``benchmarks/real_data.py`` (the scikit-learn and NSF papers' one), as a
function the benchmark can import instead of its own copy: :func:`held_out_log_likelihood`.
K-fold cross-validation; inside each fold the training part is projected (PCA, where asked)
and standardised by its own statistics, every method is fitted and tuned on it alone, and the
held-out part is scored in the data's own units (the standardisation's log-Jacobian counted).
Columns read as discrete on the training fold (rounded, integer, binary) are spread over their
lattice cells (:func:`densitylab._rounding.dequantise`) before any method is fitted, and the
held-out rows scored at their recorded values: fitted to the recorded values, scikit-learn's
BIC mixture puts components of variance ``reg_covar`` on lattice lines and claims probabilities
above 1 for held-out rows on them (12% of the held-out rows of iris' sepals), a lead no density
of the measured quantity can have. A cell is the mean held-out log-likelihood in nats per point
over the folds ± its standard error (std over folds / sqrt(K)), with the wall time.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from densitylab.experiments.findings import Z, best_group, compare, paired_table
from densitylab.experiments.runner import Outcome, Table
from densitylab.mixtures import select_by_bic

Scorer = Callable[[np.ndarray], np.ndarray]
Method = Callable[[np.ndarray, int], Scorer]  # (standardised training data, seed) -> scorer


@dataclass
class Cell:
    """One method on one data set: the folds' mean held-out log-likelihoods and wall times."""

    fold_means: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    worst: float = math.inf  # the lowest held-out log-density of any point in any fold
    notes: list[str] = field(default_factory=list)

    @property
    def mean(self) -> float:
        return float(np.mean(self.fold_means))

    @property
    def se(self) -> float:
        if len(self.fold_means) < 2:
            return float("nan")
        return float(np.std(self.fold_means, ddof=1) / math.sqrt(len(self.fold_means)))


def held_out_log_likelihood(
    x: np.ndarray, methods: Mapping[str, Method], folds: int = 3, seed: int = 0,
    project: int | None = None, raw: bool = False,
) -> dict[str, Cell]:
    """Every method on every fold of ``x``: held-out log-likelihood in the units of ``x``.

    Args:
        x: ``(n, D)`` data.
        methods: ``{name: method}``; ``method(z_train, seed)`` fits on the fold's standardised
            training part and returns a function giving log-densities of standardised points.
        folds: K of K-fold (shuffled with ``seed``).
        project: principal components to keep, fitted on each training fold (the scores are
            then densities of the projected data, as in scikit-learn's digits KDE example).
        raw: fit on the recorded values of discrete columns instead of spreading them over
            their lattice cells (see the module's docstring).
    """
    from sklearn.decomposition import PCA
    from sklearn.model_selection import KFold

    from densitylab._rounding import dequantise
    from densitylab.columns import detect_column_types

    cells = {name: Cell() for name in methods}
    splits = KFold(folds, shuffle=True, random_state=seed).split(x)
    for k, (train, test) in enumerate(splits):
        x_train, x_test = x[train], x[test]
        if project is not None:
            pca = PCA(project, random_state=seed).fit(x_train)
            x_train, x_test = pca.transform(x_train), pca.transform(x_test)
        if not raw:  # the density of the measured quantity, for every method alike
            steps = np.array([t.step if t.discrete else 0.0
                              for t in detect_column_types(x_train)])
            x_train = dequantise(x_train, steps, seed + k)
        mean, sd = x_train.mean(axis=0), x_train.std(axis=0)
        sd = np.where(sd > 0, sd, 1.0)
        z_train, z_test = (x_train - mean) / sd, (x_test - mean) / sd
        log_jacobian = -float(np.sum(np.log(sd)))
        for name, method in methods.items():
            start = time.perf_counter()
            scores = np.asarray(method(z_train, seed + k)(z_test)) + log_jacobian
            cells[name].seconds.append(time.perf_counter() - start)
            cells[name].fold_means.append(float(np.mean(scores)))
            cells[name].worst = min(cells[name].worst, float(np.min(scores)))
            if not np.all(np.isfinite(scores)):
                cells[name].notes.append(f"fold {k}: non-finite held-out log-density")
    return cells


# -- the methods: densitylab's and scikit-learn's ---------------------------------------------
def sklearn_kde(x: np.ndarray, seed: int) -> Scorer:
    """KernelDensity + GridSearchCV over 30 bandwidths; the chosen bandwidth is scored exactly
    (every kernel summed), since scikit-learn's tree sums can be off in 15+ dimensions."""
    from sklearn.model_selection import GridSearchCV
    from sklearn.neighbors import KernelDensity

    from densitylab import KDE

    search = GridSearchCV(KernelDensity(kernel="gaussian"),
                          {"bandwidth": np.logspace(-2, 1, 30)}, cv=3).fit(x)
    return KDE(bandwidth=float(search.best_params_["bandwidth"])).fit(x).score_samples


def sklearn_gmm(x: np.ndarray, seed: int) -> Scorer:
    """GaussianMixture chosen by BIC over k = 1..10 and the four covariance types."""
    return select_by_bic(x, seed=seed)[0].score_samples


def densitylab_kde(x: np.ndarray, seed: int) -> Scorer:
    from densitylab import KDE

    return KDE(bandwidth="cv").fit(x).score_samples


def densitylab_flow(x: np.ndarray, seed: int) -> Scorer:
    from densitylab import FlowDensity

    return FlowDensity(random_state=seed).fit(x).score_samples


CHOICES: list[str] = []


def densitylab_auto(x: np.ndarray, seed: int) -> Scorer:
    from densitylab import AutoDensity

    # every column a density, as the baselines give it (a typed column's mass is another
    # quantity; benchmarks/real_data.py --tables compares in that convention)
    auto = AutoDensity(random_state=seed, column_types="continuous").fit(x)
    CHOICES.append(auto.best_name_)
    return auto.score_samples


METHODS: dict[str, Method] = {
    "sklearn KernelDensity + GridSearchCV": sklearn_kde,
    "sklearn GaussianMixture (BIC)": sklearn_gmm,
    "dl.KDE(bandwidth='cv')": densitylab_kde,
    "dl.FlowDensity()": densitylab_flow,
    "dl.AutoDensity()": densitylab_auto,
}
SKLEARN = tuple(METHODS)[:2]


@dataclass(frozen=True)
class RealSet:
    load: Callable[[], np.ndarray]
    note: str
    project: int | None = None


def _sets() -> dict[str, RealSet]:
    from sklearn import datasets as sk

    return {
        "wine": RealSet(lambda: sk.load_wine().data, "13 chemical measurements of 178 wines"),
        "iris (sepal)": RealSet(lambda: sk.load_iris().data[:, :2],
                                "sepal length and width of 150 irises: 2-D, rounded to 0.1 cm"),
        "breast cancer": RealSet(lambda: sk.load_breast_cancer().data,
                                 "30 cell-nucleus features of 569 samples"),
        "digits, PCA-15": RealSet(lambda: sk.load_digits().data.astype(float),
                                  "1797 8x8 digits on 15 principal components (fitted per fold)",
                                  project=15),
    }


QUICK = ("wine", "iris (sepal)")


def run_real_data(out: Path, quick: bool) -> Outcome:
    start = time.perf_counter()
    sets = _sets()
    names = QUICK if quick else tuple(sets)
    folds = 2 if quick else 3
    results: dict[str, dict[str, Cell]] = {}
    shapes: dict[str, str] = {}
    picks: dict[str, list[str]] = {}
    for name in names:
        spec = sets[name]
        x = spec.load()
        shapes[name] = f"({len(x)}, {spec.project or x.shape[1]})"
        before = len(CHOICES)
        results[name] = held_out_log_likelihood(x, METHODS, folds=folds, project=spec.project)
        picks[name] = CHOICES[before:]
    rows = []
    for name, cells in results.items():
        rows.append([f"{name} {shapes[name]}"]
                    + [f"{c.mean:.2f} ± {c.se:.2f}" for c in cells.values()]
                    + [", ".join(picks[name])])
    time_rows = [[name] + [f"{np.mean(c.seconds):.1f}" for c in cells.values()]
                 for name, cells in results.items()]
    worst_rows = [[name] + [f"{c.worst:.1f}" for c in cells.values()]
                  for name, cells in results.items()]
    metrics = {name: {m: {"fold_means": c.fold_means, "mean": c.mean, "se": c.se,
                          "seconds": c.seconds, "worst": c.worst, "notes": c.notes}
                      for m, c in cells.items()} | {"auto_picked": picks[name]}
               for name, cells in results.items()}
    budget = (f"{folds}-fold cross-validation on {', '.join(names)}"
              + (" (a --quick preview: two folds, two small sets)" if quick else ""))
    return Outcome(
        name="real-data", title="Real data: densitylab beside scikit-learn",
        question="A practitioner's question: on real tabular data that ships with "
        "scikit-learn, is densitylab's density as good as a few lines of scikit-learn? Held-out "
        f"log-likelihood by {budget}; every choice (bandwidth, mixture size, flow, AutoDensity's "
        "pick) made on the training folds only.",
        findings=[],
        tables=[
            Table("Held-out mean log-likelihood, nats per point in the data's own units "
                  "(higher is better), ± standard error over the folds",
                  ["data (n, D)", *METHODS, "AutoDensity picked (per fold)"], rows,
                  note="Protocol: densitylab.experiments.real_data.held_out_log_likelihood "
                  "(the protocol of benchmarks/real_data.py): standardise inside each fold, "
                  "score in original units. Data: "
                  + "; ".join(f"{n}: {sets[n].note}" for n in names) + "."),
            Table("Mean seconds per fold (fit + score)", ["data", *METHODS], time_rows,
                  folded=True),
            Table("Lowest held-out log-density of any point in any fold (nats): an absurd "
                  "value would show here", ["data", *METHODS], worst_rows, folded=True),
        ],
        metrics=metrics, seconds=time.perf_counter() - start,
    )


def real_data_findings(metrics: dict[str, dict[str, Any]]) -> list[str]:
    """The section's text from its metrics (per data set: every method's mean and SE)."""
    sentences, verdicts = [], []
    for name, per_set in metrics.items():
        cells = {m: c for m, c in per_set.items() if m != "auto_picked"}
        estimates = {m: (c["mean"], c["se"]) for m, c in cells.items()}
        # every method on the same folds: the error of a difference from the folds' differences
        paired = paired_table({m: c["fold_means"] for m, c in cells.items()})
        group = best_group(estimates, lower_is_better=False, paired=paired)
        best_sk = max(SKLEARN, key=lambda m: cells[m]["mean"])
        auto, sk = cells["dl.AutoDensity()"], cells[best_sk]
        outcome = compare(auto["mean"], auto["se"], sk["mean"], sk["se"], lower_is_better=False,
                          paired=paired["dl.AutoDensity()"][best_sk])
        verdicts.append(outcome)
        verdict = {-1: "better than", 0: "within noise of", 1: "worse than"}[outcome]
        sentences.append(
            f"{name}: the best is {group[0]} ({cells[group[0]]['mean']:.2f} ± "
            f"{cells[group[0]]['se']:.2f})"
            + (f", with {', '.join(group[1:])} within noise of it" if len(group) > 1 else "")
            + f"; AutoDensity ({auto['mean']:.2f}, picked "
            f"{', '.join(sorted(set(per_set['auto_picked'])))}) is {verdict} the better "
            f"scikit-learn baseline, {best_sk} ({sk['mean']:.2f})."
        )
    summary = (f"On {len(metrics)} real data sets, AutoDensity is better than the better "
               f"scikit-learn baseline on {verdicts.count(-1)}, within noise on "
               f"{verdicts.count(0)} and worse on {verdicts.count(1)} (held-out "
               f"log-likelihood, {Z:g} standard errors over the folds, paired: every method "
               "on the same folds).")
    return [summary, *sentences]

"""Real-data benchmark: densitylab's estimators beside scikit-learn's tuned KDE and mixture.

Protocol (the scikit-learn and NSF papers' one): K-fold cross-validation (3 folds by default,
shuffled with a fixed seed). Inside each fold the training part is standardised (its own mean and
standard deviation), every method is fitted and tuned on the standardised training part only,
and the held-out part is scored; the log-density is put back in the data's ORIGINAL units by
subtracting ``sum(log sd)``. A cell is the mean held-out log-likelihood in nats per point over the
folds, +- its standard error (std over folds / sqrt(K)), and the mean fit + score wall time per
fold. ``worst`` is the lowest held-out log-density seen in any fold (a default estimator must not
give any held-out point an absurd or non-finite value).

Data (all ship inside scikit-learn, nothing is downloaded):
  digits-pca15   8x8 digits projected on 15 principal components (scikit-learn's KDE example);
                 the projection is fitted on the training fold only
  digits-64      the raw 64 pixels, dequantised: uniform noise on [0, 1) added to the integer
                 levels 0..16 once with a fixed seed (the density of continuous pixels)
  wine, breast-cancer, diabetes (the 10 raw features: age and sex are rounded / binary),
  iris-4 (four measurements rounded to 0.1 cm), iris-2 (sepal length and width: a small 2-D set
                 of rounded measurements with many repeated points)

Methods (all choices by cross-validation or BIC on the training fold only):
  sk-kde   KernelDensity(gaussian) + GridSearchCV over 30 bandwidths on logspace(-2, 1); the
           chosen bandwidth is scored EXACTLY (every kernel, NumPy): scikit-learn's own tree
           sums are wrong by up to tens of nats in 15-64 dimensions (scikit-learn issue #7492);
           its own numbers are listed below the table
  sk-gmm   GaussianMixture, BIC over k = 1..10 and the four covariance types
  dl-kde   dl.KDE(bandwidth="cv"): leave-one-out over kernel shapes and widths
  dl-flow  dl.FlowDensity(): the default recipe for real data
  dl-flow-mix  dl.FlowDensity(model="tabular-mixture"): the same flow on a Gaussian-mixture
           base fitted (BIC) to the training fold first
  dl-maf   dl.FlowDensity(model="tabular-maf"): the same recipe with an affine masked
           autoregressive flow (issue #21)
  dl-maf-spline  dl.FlowDensity(model="tabular-maf-spline"), spline MAF layers: only when named
           in --methods
  dl-flow-plain, dl-flow-mix-plain, dl-maf-plain  the three flows with guard=0 (no defensive
           component, densitylab.guard; the same trained flows): only when named in --methods
  auto     dl.AutoDensity(random_state=0, column_types="continuous"): the best of its
           candidates by 3-fold CV, every column modelled as a continuous density

Discrete columns in the plain protocol: a column read as rounded, integer or binary on the
training fold (:func:`densitylab.columns.detect_column_types`) is spread by uniform noise over
its lattice cell before EVERY method is fitted (the dequantisation of ``--tables`` below), and
the held-out rows are scored at their recorded values (the midpoint rule), as densities. Fitted
to the recorded values, scikit-learn's BIC mixture can put a component of variance
``reg_covar`` (1e-6) on a lattice line and score held-out rows that lie on it as if it had
measured them a thousand times more precisely than they were recorded (a probability above 1;
on iris-2 its mean fell from -1.42 to -1.62 once spread); densitylab's KDE and flows refuse that
by construction (the resolution floor, their own dequantisation). ``--raw`` fits every method on
the recorded values (the protocol of the earlier tables); the closing notes list each set's
discrete columns and how often the raw mixture claims a probability above 1.

``--tables`` runs the tables with integer, binary and bounded columns (``TABLES``) in their raw
units instead, in two views (``VIEWS``), every method in one convention: a log-density in the
continuous columns plus a log-probability (mass) in the discrete ones, the column types detected
on the training fold (:func:`densitylab.columns.detect_column_types`).

- ``all columns``: every column. A density fitted to a discrete column's raw values can pile
  onto its lattice and claim a "mass" (density x step) above 1, so the baselines get
  AutoDensity's own discrete treatment: they are trained on the training fold with every
  discrete column spread by uniform noise over its lattice cell (dequantisation), standardised,
  and a held-out value's mass is the density at it times the step (the midpoint rule
  AutoDensity uses). ``gmm mass>1`` is the fraction of held-out rows for which that BIC
  mixture's own 1-D marginal of some discrete column, times its step, still exceeds 1.
- ``continuous columns``: only the columns read as continuous on the whole table, where the
  baselines' densities apply as they are (sets where that is none or every column are left
  out: the first view covers the latter).

``auto`` is dl.AutoDensity(column_types="continuous") on the standardised (spread) fold, as the
baselines; ``auto-typed`` is dl.AutoDensity() with its detected column types (discrete columns
dequantised and scored by probability mass, bounded ones mapped), fitted on the raw training
fold. ``samples ok`` checks that auto-typed's samples keep every lattice, level and bound.

Run:  OMP_NUM_THREADS=1 .venv/bin/python benchmarks/real_data.py [--quick] [--folds 3]
      [--only NAME,...] [--methods NAME,...] [--json out.json]
``--quick`` runs two folds on three of the sets. Wall times on a shared machine are noisy.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# one thread for torch and BLAS: the measurements are per core
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402
from scipy.special import logsumexp  # noqa: E402
from sklearn import datasets as skdata  # noqa: E402
from sklearn.decomposition import PCA  # noqa: E402
from sklearn.model_selection import GridSearchCV, KFold  # noqa: E402
from sklearn.neighbors import KernelDensity  # noqa: E402

import densitylab as dl  # noqa: E402
from densitylab.experiments.real_data import densitylab_kde, sklearn_gmm  # noqa: E402

torch.set_num_threads(1)


# -- data -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RealSet:
    """A data set and how a fold's training part is turned into features (PCA for digits)."""

    load: Callable[[], np.ndarray]
    note: str
    project: int | None = None  # principal components fitted inside each training fold


def _digits() -> np.ndarray:
    return skdata.load_digits().data.astype(np.float64)


def _dequantised_digits() -> np.ndarray:
    x = _digits()
    return x + np.random.default_rng(0).random(x.shape)


DATA: dict[str, RealSet] = {
    "digits-pca15": RealSet(_digits, "8x8 digits, PCA to 15 dims (fitted per fold)", project=15),
    "digits-64": RealSet(_dequantised_digits, "raw 64 pixels + U[0,1) noise (dequantised)"),
    "wine": RealSet(lambda: skdata.load_wine().data, "13 chemical measurements"),
    "breast-cancer": RealSet(lambda: skdata.load_breast_cancer().data, "30 cell-nucleus features"),
    "diabetes": RealSet(lambda: skdata.load_diabetes(scaled=False).data,
                        "10 raw features (age integer, sex binary)"),
    "iris-4": RealSet(lambda: skdata.load_iris().data, "4 measurements rounded to 0.1 cm"),
    "iris-2": RealSet(lambda: skdata.load_iris().data[:, :2],
                      "sepal length, width: rounded, repeated"),
}
QUICK_DATA = ("wine", "iris-2", "digits-pca15")
TABLES: dict[str, RealSet] = {
    "diabetes": DATA["diabetes"],
    "wine": RealSet(lambda: skdata.load_wine().data,
                    "13 measurements (magnesium, proline: integers), all positive"),
    "iris-4": DATA["iris-4"],
    "breast-cancer": RealSet(lambda: skdata.load_breast_cancer().data,
                             "30 features, all non-negative, some near 0"),
    "digits-16": RealSet(lambda: _digits()[:, [19, 20, 27, 28, 35, 36, 43, 44, 21, 26, 37, 42,
                                                 29, 34, 30, 33]],
                         "16 central pixels: integers 0..16"),
}
"""Public tables that ship inside scikit-learn with integer, binary and bounded columns."""


# -- methods: each fits on standardised training data and returns a scorer ---------------------
def exact_isotropic_kde(data: np.ndarray, h: float, q: np.ndarray) -> np.ndarray:
    """Every kernel summed in log space (NumPy only): the exact log-density of an isotropic
    Gaussian KDE of bandwidth ``h``, to score scikit-learn's choice independently of its tree."""
    d = data.shape[1]
    out = np.empty(len(q))
    sq = np.sum(data**2, axis=1)
    for i in range(0, len(q), 256):
        block = q[i : i + 256]
        d2 = np.maximum(np.sum(block**2, axis=1)[:, None] + sq[None, :] - 2 * block @ data.T, 0)
        out[i : i + 256] = logsumexp(-0.5 * d2 / h**2, axis=1)
    return out - math.log(len(data)) - d * (math.log(h) + 0.5 * math.log(2 * math.pi))


SKLEARN_REPORTED: dict[tuple[str, int], float] = {}  # sklearn's own held-out mean, per fold


def sk_kde(x: np.ndarray, seed: int) -> Callable[[np.ndarray], np.ndarray]:
    grid = GridSearchCV(KernelDensity(kernel="gaussian"),
                        {"bandwidth": np.logspace(-2, 1, 30)}, cv=3).fit(x)
    h = float(grid.best_params_["bandwidth"])

    def score(q: np.ndarray) -> np.ndarray:
        SKLEARN_REPORTED[(CURRENT[0], CURRENT[1])] = float(
            np.mean(grid.best_estimator_.score_samples(q))) + CURRENT[2]
        return exact_isotropic_kde(x, h, q)

    return score


def flow_recipe(model: str, guard: float | None = None
                ) -> Callable[[np.ndarray, int], Callable[[np.ndarray], np.ndarray]]:
    """A method that fits ``dl.FlowDensity(model=model, guard=guard)``."""

    def method(x: np.ndarray, seed: int) -> Callable[[np.ndarray], np.ndarray]:
        return dl.FlowDensity(model=model, random_state=seed, guard=guard).fit(x).score_samples

    return method


def dl_auto(x: np.ndarray, seed: int) -> Callable[[np.ndarray], np.ndarray]:
    # densities of every column, as the baselines give them (see --tables for typed columns)
    auto = dl.AutoDensity(random_state=seed, column_types="continuous").fit(x)
    CHOICES.append(auto.best_name_)
    return auto.score_samples


CHOICES: list[str] = []  # AutoDensity's pick in each fold, for the table
CURRENT: list[Any] = ["", 0, 0.0]  # data set, fold, log-Jacobian of its standardisation
METHODS: dict[str, Callable[[np.ndarray, int], Callable[[np.ndarray], np.ndarray]]] = {
    "sk-kde": sk_kde,
    "sk-gmm": sklearn_gmm,
    "dl-kde": densitylab_kde,
    "dl-flow": flow_recipe("tabular"),
    "dl-flow-mix": flow_recipe("tabular-mixture"),
    "dl-maf": flow_recipe("tabular-maf"),
    "auto": dl_auto,
}
EXTRA_METHODS = {"dl-maf-spline": flow_recipe("tabular-maf-spline"),
                 # the same flows without their defensive component (guard=0, densitylab.guard):
                 # trained identically, so they show what the guard changes (issue #34)
                 "dl-flow-plain": flow_recipe("tabular", 0.0),
                 "dl-flow-mix-plain": flow_recipe("tabular-mixture", 0.0),
                 "dl-maf-plain": flow_recipe("tabular-maf", 0.0)}
"""Run only when named in ``--methods`` (the default run keeps to 15 minutes)."""


# -- protocol ---------------------------------------------------------------------------------
@dataclass
class Cell:
    fold_means: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    worst: float = math.inf
    note: str = ""

    @property
    def mean(self) -> float:
        return float(np.mean(self.fold_means))

    @property
    def se(self) -> float:
        return float(np.std(self.fold_means, ddof=1) / math.sqrt(len(self.fold_means)))

    def add_fold(self, label: str, scores: np.ndarray, seconds: float, what: str) -> None:
        """Record one fold's held-out ``scores`` (``what``: log-density or log-likelihood) and
        its time, and print the line of progress."""
        self.seconds.append(seconds)
        self.fold_means.append(float(np.mean(scores)))
        self.worst = min(self.worst, float(np.min(scores)))
        if not np.all(np.isfinite(scores)):
            self.note = f"non-finite held-out {what}"
        print(f"  {label} {np.mean(scores):10.3f}  {seconds:7.1f} s", flush=True)


def run_set(name: str, methods: list[str], folds: int, seed: int = 0,
            raw: bool = False) -> dict[str, Cell]:
    """Every method on every fold of one data set; scores in nats per point, original units.

    Columns read as discrete on the training fold (rounded, integer, binary) are spread over
    their lattice cells before every method is fitted (the ``--tables`` treatment, scored as
    densities at the recorded values), unless ``raw``; the note of ``sk-gmm`` says how often
    the BIC mixture fitted to the raw values claims a probability above 1 there."""
    from densitylab.columns import detect_column_types

    spec = DATA[name]
    x = spec.load()
    cells = {m: Cell() for m in methods}
    impossible = []
    for k, (train, test) in enumerate(KFold(folds, shuffle=True, random_state=seed).split(x)):
        x_train, x_test = x[train], x[test]
        log_jacobian = 0.0
        if spec.project is not None:  # a linear map fitted on the training fold only
            pca = PCA(spec.project, random_state=seed).fit(x_train)
            x_train, x_test = pca.transform(x_train), pca.transform(x_test)
        types = detect_column_types(x_train)
        if any(t.discrete for t in types):
            raw_sd = x_train.std(axis=0)
            raw_mean = x_train.mean(axis=0)
            impossible.append(impossible_masses((x_train - raw_mean) / raw_sd,
                                                (x_test - raw_mean) / raw_sd, types, raw_sd,
                                                seed + k))
            if not raw:
                x_train = spread(x_train, types, seed + k)
        mean, sd = x_train.mean(axis=0), x_train.std(axis=0)
        z_train, z_test = (x_train - mean) / sd, (x_test - mean) / sd
        log_jacobian = -float(np.sum(np.log(sd)))
        CURRENT[:] = [name, k, log_jacobian]
        for m in methods:
            start = time.perf_counter()
            scores = (METHODS | EXTRA_METHODS)[m](z_train, seed + k)(z_test) + log_jacobian
            cells[m].add_fold(f"{name} fold {k}: {m:8s}", scores, time.perf_counter() - start,
                              "log-density")
    if "auto" in cells:
        cells["auto"].note = ", ".join(CHOICES[-folds:])
    if impossible:
        kinds = sorted({t.kind for t in types if t.discrete})
        SPREAD_NOTES[name] = (f"{sum(t.discrete for t in types)} of {len(types)} columns "
                              f"{'/'.join(kinds)}, {'fitted raw' if raw else 'spread'}; "
                              f"the raw BIC mixture's mass > 1 on "
                              f"{100 * np.mean(impossible):.0f}% of held-out rows")
    return cells


SPREAD_NOTES: dict[str, str] = {}
"""Per data set of the plain protocol: its discrete columns and how they were treated."""


TABLE_METHODS = ("sk-kde", "sk-gmm", "dl-kde", "auto", "auto-typed")
VIEWS = ("all columns", "continuous columns")
"""The two comparisons of ``--tables`` (see the module's docstring)."""


def continuous_columns(x: np.ndarray) -> list[int]:
    """The columns of ``x`` that :func:`densitylab.columns.detect_column_types` reads as
    continuous (bounded or not): where the baselines' densities apply as they are."""
    from densitylab.columns import detect_column_types

    return [j for j, t in enumerate(detect_column_types(x)) if not t.discrete]


def spread(x: np.ndarray, types: list, seed: int) -> np.ndarray:
    """``x`` with every discrete column spread by uniform noise over its lattice cell (width
    its step): the dequantisation AutoDensity applies to its own training rows."""
    from densitylab._rounding import dequantise

    return dequantise(x, np.array([t.step if t.discrete else 0.0 for t in types]), seed)


def run_table(name: str, folds: int, view: str, seed: int = 0) -> tuple[dict[str, Cell], dict]:
    """The ``--tables`` protocol on one set, in one of ``VIEWS``: every method scored as
    log-density of continuous columns plus log-mass of discrete ones (see the module's
    docstring)."""
    from densitylab.columns import detect_column_types

    x = TABLES[name].load()
    if view == "continuous columns":
        x = x[:, continuous_columns(x)]
    cells = {m: Cell() for m in TABLE_METHODS}
    extra = {"samples ok": True, "types": "", "gmm mass>1": 0.0}
    picks: dict[str, list[str]] = {"auto": [], "auto-typed": []}
    for k, (train, test) in enumerate(KFold(folds, shuffle=True, random_state=seed).split(x)):
        x_train, x_test = x[train], x[test]
        types = detect_column_types(x_train)
        discrete = [j for j, t in enumerate(types) if t.discrete]
        log_steps = float(sum(math.log(types[j].step) for j in discrete))
        extra["types"] = ", ".join(t.kind + ("+" if t.lower is not None else "")
                                   for t in types)
        # the baselines get AutoDensity's discrete treatment: trained on the spread rows
        x_spread = spread(x_train, types, seed + k)
        mean, sd = x_spread.mean(axis=0), x_spread.std(axis=0)
        z_train, z_test = (x_spread - mean) / sd, (x_test - mean) / sd
        log_jacobian = -float(np.sum(np.log(sd)))
        CURRENT[:] = [name, k, log_jacobian + log_steps]
        extra["gmm mass>1"] += impossible_masses(z_train, z_test, types, sd, seed + k) / folds
        for m in TABLE_METHODS:
            start = time.perf_counter()
            if m == "auto-typed":
                auto = dl.AutoDensity(random_state=seed + k).fit(x_train)
                scores = auto.score_samples(x_test)
                picks[m].append(auto.best_name_)
                extra["samples ok"] &= samples_valid(auto, auto.sample(2000, random_state=k))
            else:
                scores = METHODS[m](z_train, seed + k)(z_test) + log_jacobian + log_steps
                if m == "auto":
                    picks[m].append(CHOICES[-1])
            cells[m].add_fold(f"{name} fold {k}: {m:10s}", scores, time.perf_counter() - start,
                              "log-likelihood")
    cells["auto"].note = (f"auto: {', '.join(picks['auto'])}; "
                          f"typed: {', '.join(picks['auto-typed'])}")
    return cells, extra


def impossible_masses(z_train: np.ndarray, z_test: np.ndarray, types: list, sd: np.ndarray,
                      seed: int) -> float:
    """The fraction of held-out rows where the BIC mixture (sk-gmm's) gives some discrete
    column a 1-D marginal mass (density x step) above 1."""
    from densitylab.auto import GaussianMixtureBIC

    mixture = GaussianMixtureBIC(random_state=seed).fit(z_train)
    over = np.zeros(len(z_test), dtype=bool)
    for j, t in enumerate(types):
        if t.discrete:
            alone = np.full_like(z_test, np.nan)
            alone[:, j] = z_test[:, j]
            over |= mixture.score_samples(alone) + math.log(t.step / sd[j]) > 0
    return float(np.mean(over))


def samples_valid(auto: Any, draws: np.ndarray) -> bool:
    """Every discrete column on its lattice and levels, every bound respected."""
    for j, t in enumerate(auto.column_types_):
        column = draws[:, j]
        if t.lower is not None and column.min() < t.lower:
            return False
        if t.upper is not None and column.max() > t.upper:
            return False
        if t.discrete:
            lattice = (column - t.origin) / t.step
            if not np.allclose(lattice, np.round(lattice), atol=1e-6):
                return False
    return True


def table(results: dict[str, dict[str, Cell]], methods: list[str], shapes: dict) -> str:
    head = "| data (n, D) | " + " | ".join(methods) + " | auto picked |"
    lines = [head, "|" + "---|" * (len(methods) + 2)]
    for name, cells in results.items():
        best = max(cells[m].mean for m in methods)
        row = [f"{name} {shapes[name]}"]
        for m in methods:
            c = cells[m]
            text = f"{c.mean:.2f} ± {c.se:.2f} ({np.mean(c.seconds):.1f} s)"
            row.append(f"**{text}**" if c.mean == best else text)
        row.append(cells["auto"].note if "auto" in cells else "")
        lines.append("| " + " | ".join(row) + " |")
    if SKLEARN_REPORTED:
        lines.append("")
        lines.append("scikit-learn's KernelDensity.score_samples at its chosen bandwidth, as it "
                     "reports itself (mean over folds), beside the exact value:")
        lines.append("")
        for name in results:
            own = [v for (n, _), v in SKLEARN_REPORTED.items() if n == name]
            if own:
                lines.append(f"- {name}: {np.mean(own):.2f} reported, "
                             f"{results[name]['sk-kde'].mean:.2f} exact")
    lines.append("")
    lines.append("Lowest held-out log-density in any fold (nats; absurd or non-finite values "
                 "would show here):")
    lines.append("")
    lines.append("| data | " + " | ".join(methods) + " |")
    lines.append("|" + "---|" * (len(methods) + 1))
    for name, cells in results.items():
        lines.append(f"| {name} | " + " | ".join(f"{cells[m].worst:.1f}" for m in methods) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 folds on three sets")
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--only", help="comma-separated data sets")
    parser.add_argument("--methods", help="comma-separated methods", default=",".join(METHODS))
    parser.add_argument("--json", help="write every fold's numbers here")
    parser.add_argument("--raw", action="store_true",
                        help="fit every method on the recorded values of discrete columns "
                             "(the protocol before issue #34's iris-2 study), not spread")
    parser.add_argument("--tables", action="store_true",
                        help="the tables with integer, binary and bounded columns, typed")
    args = parser.parse_args()
    if args.tables:
        return main_tables(args)
    names = args.only.split(",") if args.only else list(QUICK_DATA if args.quick else DATA)
    methods = args.methods.split(",")
    folds = 2 if args.quick else args.folds
    known = METHODS | EXTRA_METHODS
    for bad in [n for n in names if n not in DATA] + [m for m in methods if m not in known]:
        sys.exit(f"error: unknown data set or method {bad!r}")
    start, load_before = time.perf_counter(), os.getloadavg()[0]
    results, shapes = {}, {}
    for name in names:
        x = DATA[name].load()
        dim = DATA[name].project or x.shape[1]
        shapes[name] = f"({len(x)}, {dim})"
        print(f"{name} {shapes[name]}: {DATA[name].note}", flush=True)
        results[name] = run_set(name, methods, folds, raw=args.raw)
    total = time.perf_counter() - start
    print()
    print(table(results, methods, shapes))
    if SPREAD_NOTES:
        print("\nDiscrete columns (detected on each training fold):\n")
        print("\n".join(f"- {name}: {note}" for name, note in SPREAD_NOTES.items()))
    finish(args, results, folds, total, load_before,
           f", {torch.get_num_threads()} thread(s)")


def finish(args: argparse.Namespace, results: dict, folds: int, total: float,
           load_before: float, extra: str = "") -> None:
    """The run's closing line (folds, time, machine, load) and the ``--json`` file."""
    print(f"\n{folds}-fold CV, total {total / 60:.1f} min on {platform.machine()} "
          f"({os.cpu_count()} cores, load average {load_before:.1f} at the start and "
          f"{os.getloadavg()[0]:.1f} at the end), torch {torch.__version__}{extra}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({n: {m: vars(c) for m, c in cells.items()} for n, cells in results.items()},
                      handle, indent=1)


def main_tables(args: argparse.Namespace) -> None:
    names = args.only.split(",") if args.only else list(TABLES)
    for bad in [n for n in names if n not in TABLES]:
        sys.exit(f"error: unknown table {bad!r}; choose from {', '.join(TABLES)}")
    start, load_before = time.perf_counter(), os.getloadavg()[0]
    results: dict[str, dict[str, Cell]] = {}
    reports = []
    for view in VIEWS:
        rows, shapes, extras = {}, {}, {}
        for name in names:
            x = TABLES[name].load()
            width = len(continuous_columns(x)) if view == "continuous columns" else x.shape[1]
            if view == "continuous columns" and width in (0, x.shape[1]):
                continue  # no continuous column, or all of them (the first view already)
            shapes[name] = f"({len(x)}, {width})"
            print(f"[{view}] {name} {shapes[name]}: {TABLES[name].note}", flush=True)
            rows[name], extras[name] = run_table(name, args.folds, view)
            results[f"{name} ({view})"] = rows[name]
        lines = [f"### {view}", "", table(rows, list(TABLE_METHODS), shapes), ""]
        lines += [f"- {name}: types {extra['types']} (+: bounded); auto-typed samples valid: "
                  f"{extra['samples ok']}; gmm mass>1 on {100 * extra['gmm mass>1']:.0f}% of "
                  "held-out rows" for name, extra in extras.items()]
        reports.append("\n".join(lines))
    total = time.perf_counter() - start
    print()
    print("\n\n".join(reports))
    finish(args, results, args.folds, total, load_before)


if __name__ == "__main__":
    main()

"""``AutoDensity``: the best of densitylab's density estimators for the data at hand, chosen by
cross-validated held-out log-likelihood on the training data only.

Candidates (a registry, :data:`CANDIDATES`): a KDE whose kernel shape and width are chosen by
leave-one-out likelihood (``KDE(bandwidth="cv")``), scikit-learn's ``GaussianMixture`` with the
number of components and the covariance type chosen by BIC (:class:`GaussianMixtureBIC`), the
tabular spline flow (``FlowDensity()``) and the tabular masked autoregressive flow
(``FlowDensity(model="tabular-maf")``); the same spline flow on a Gaussian-mixture base
(``FlowDensity(model="tabular-mixture")``) when asked for by name. Each is itself a complete,
self-tuning procedure, so the K-fold comparison is honest: every choice inside a candidate is
made on its training folds.
"""

from __future__ import annotations

import csv
import io
import math
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from sklearn.base import BaseEstimator, DensityMixin
from sklearn.exceptions import NotFittedError
from sklearn.mixture import GaussianMixture
from sklearn.model_selection import KFold
from sklearn.utils.validation import _check_sample_weight, validate_data

from densitylab import threads
from densitylab._validation import complete_rows
from densitylab.mixtures import COVARIANCE_TYPES, ROWS_PER_THREAD, select_by_bic


def _check_random_state(random_state: Any) -> int:
    if isinstance(random_state, bool) or not isinstance(random_state, int | np.integer):
        raise ValueError(f"random_state must be an int seed, got {random_state!r}")
    return int(random_state)


class GaussianMixtureBIC(DensityMixin, BaseEstimator):
    """scikit-learn's ``GaussianMixture`` with ``k = 1..max_components`` and the covariance type
    chosen by the Bayesian information criterion on the training data (the usual recipe).

    Attributes:
        mixture_: the fitted ``GaussianMixture`` with the lowest BIC.
        bic_: ``{(covariance_type, k): BIC}`` of every mixture fitted.
    """

    def __init__(self, max_components: int = 10,
                 covariance_types: Sequence[str] = COVARIANCE_TYPES,
                 reg_covar: float = 1e-6, random_state: int = 0) -> None:
        self.max_components = max_components
        self.covariance_types = covariance_types
        self.reg_covar = reg_covar
        self.random_state = random_state

    def fit(self, X: ArrayLike, y: Any = None,
            sample_weight: ArrayLike | None = None) -> GaussianMixtureBIC:
        """Fit every (type, k) with at least 2 points per component; keep the lowest BIC.

        ``sample_weight``: whole-number row weights, fitted as the rows repeated that many
        times (exactly: the BIC counts the repeated rows). scikit-learn's ``GaussianMixture``
        takes no weights, so other weights are a ``ValueError``."""
        x = validate_data(self, X, dtype=np.float64, ensure_min_samples=2)
        if sample_weight is not None:
            weights = _check_sample_weight(sample_weight, x, ensure_non_negative=True)
            if not np.all(weights == np.round(weights)):
                raise ValueError("GaussianMixtureBIC takes whole-number weights only (it is "
                                 "fitted on repeated rows)")
            x = np.repeat(x, weights.astype(np.int64), axis=0)
            if len(x) < 2:
                raise ValueError("the weights leave fewer than 2 rows to fit")
        if isinstance(self.max_components, bool) or not isinstance(
                self.max_components, int | np.integer) or self.max_components < 1:
            raise ValueError(f"max_components must be an integer >= 1, "
                             f"got {self.max_components!r}")
        self.mixture_, self.bic_ = select_by_bic(
            x, self.max_components, self.covariance_types, self.reg_covar,
            _check_random_state(self.random_state))
        return self

    def score_samples(self, X: ArrayLike) -> np.ndarray:
        """Log-density of each row of ``X``; a row with missing cells (NaN) gets the exact
        marginal density of its observed cells."""
        _check_fitted(self, "mixture_")
        x = validate_data(self, X, dtype=np.float64, reset=False, ensure_all_finite="allow-nan")
        if not np.isnan(x).any():
            with threads.budget(work=len(x), grain=ROWS_PER_THREAD):
                return self.mixture_.score_samples(x)
        from densitylab.missing import (
            full_covariances,
            gaussian_mixture_marginal,
            marginal_log_density,
        )

        gmm = self.mixture_
        return marginal_log_density(x, gaussian_mixture_marginal(
            gmm.weights_, gmm.means_, full_covariances(gmm)))

    def score(self, X: ArrayLike, y: Any = None) -> float:
        """Total log-likelihood of ``X``."""
        return float(np.sum(self.score_samples(X)))

    def sample(self, n_samples: int = 1, random_state: int | None = None) -> np.ndarray:
        """``(n_samples, d)`` points; ``random_state`` seeds this draw only (no global state)."""
        _check_fitted(self, "mixture_")
        from densitylab._validation import check_positive_int

        check_positive_int(n_samples, "n_samples")
        gmm = self.mixture_
        rng = np.random.default_rng(random_state)
        component = rng.choice(len(gmm.weights_), size=n_samples, p=gmm.weights_)
        z = rng.standard_normal((n_samples, gmm.means_.shape[1]))
        cov = gmm.covariances_
        expand: dict[str, Callable[[int], np.ndarray]] = {
            "full": lambda c: cov[c],
            "tied": lambda c: cov,
            "diag": lambda c: np.diag(cov[c]),
            "spherical": lambda c: cov[c] * np.eye(gmm.means_.shape[1]),
        }
        out = np.empty_like(z)
        for c in range(len(gmm.weights_)):
            rows = component == c
            chol = np.linalg.cholesky(expand[gmm.covariance_type](c))
            out[rows] = gmm.means_[c] + z[rows] @ chol.T
        return out


def _kde(random_state: int) -> BaseEstimator:
    from densitylab.kde import KDE

    return KDE(bandwidth="cv")


def _mixture(random_state: int) -> BaseEstimator:
    return GaussianMixtureBIC(random_state=random_state)


def _flow(model: str) -> Callable[[int], BaseEstimator]:
    """The factory of ``FlowDensity(model=model)``, a recipe for real data."""

    def factory(random_state: int) -> BaseEstimator:
        from densitylab.estimators import FlowDensity

        return FlowDensity(model=model, random_state=random_state)

    return factory


CANDIDATES: dict[str, Callable[[int], BaseEstimator]] = {
    "kde": _kde,
    "gaussian-mixture": _mixture,
    "flow": _flow("tabular"),
    "flow-mixture": _flow("tabular-mixture"),
    "maf": _flow("tabular-maf"),
    "cnf": _flow("cnf"),
    "cnf-fm": _flow("cnf-fm"),
}
"""Candidate name -> its factory, taking a seed. Every one models data of any dimension.
The continuous flows (``"cnf"``, maximum likelihood; ``"cnf-fm"``, flow matching) are asked for
by name: they cost minutes where the tabular flow costs seconds."""
DEFAULT_CANDIDATES = ("kde", "gaussian-mixture", "flow", "maf")
"""The candidates compared when none are named. The mixture-based flow is left to be asked
for: on the real-data benchmark it never beat the best default candidate (see
``benchmarks/RESULTS.md``), and it costs about 1.4 times the tabular flow (the compiled engine
trains both)."""
MARGINALISING = ("kde", "gaussian-mixture")
"""The candidates that score rows with missing cells by their exact marginal."""
BY_CATEGORY = "by-category"
"""``best_name_`` of an AutoDensity fitted on a table with categorical columns: its
``best_estimator_`` is a :class:`~densitylab.CategoricalDensity`."""
FLOW_CANDIDATES = ("flow", "flow-mixture", "maf", "cnf", "cnf-fm")
"""The candidates that are :class:`~densitylab.estimators.FlowDensity` estimators (saved by
:mod:`densitylab.io`'s flow state, not by :data:`STATES`)."""


def equal_folds(n: int, k: int, seed: int,
                groups: np.ndarray | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Shuffled ``k``-fold ``(train, test)`` indices of ``n`` points whose training sets all
    have the smallest one's size (a larger one leaves out a few points, drawn by ``seed``), so
    that a flow's folds can train together; every point is tested once. With ``groups`` (see
    :func:`densitylab._ties.tie_groups`) that hold copies, the copies of a row fall in one fold:
    none is held out while another trains."""
    if groups is not None and groups.max() + 1 < n:
        from densitylab._ties import grouped_kfold

        tests = grouped_kfold(groups, k, seed)
        if min(len(t) for t in tests) == 0:
            raise ValueError(f"these data hold fewer than {k} distinct rows: too few for "
                             f"{k}-fold cross-validation")
        folds = [(np.setdiff1d(np.arange(n), test), test) for test in tests]
    else:
        folds = list(KFold(k, shuffle=True, random_state=seed).split(np.zeros((n, 1))))
    size = min(len(train) for train, _ in folds)
    rng = np.random.default_rng(seed)
    return [(np.sort(rng.choice(train, size, replace=False)), test) for train, test in folds]


def _fold_scores(make: Callable[[], BaseEstimator], z: np.ndarray,
                 folds: list[tuple[np.ndarray, np.ndarray]],
                 scored: np.ndarray | None = None,
                 weights: np.ndarray | None = None) -> list[np.ndarray]:
    """Held-out log-densities of each fold (of the rows ``scored``, by default ``z``), by new
    estimators from ``make`` fitted on ``z`` (weighted by ``weights``, see
    :func:`fit_weighted`); the folds of an estimator that can fit several data sets at once
    (``fit_together``: the flows) train as one batched computation when unweighted."""
    scored = z if scored is None else scored
    estimator, trains = make(), [z[train] for train, _ in folds]
    if weights is not None:
        fitted = [fit_weighted(make(), z[train], weights[train]) for train, _ in folds]
    elif hasattr(estimator, "fit_together"):
        fitted = estimator.fit_together(trains)
    else:
        fitted = [make().fit(x) for x in trains]
    if any(getattr(f, "stop_reason_", None) == "interrupted" for f in fitted):
        raise KeyboardInterrupt  # training kept Ctrl-C to itself: the folds are cut short
    return [np.asarray(f.score_samples(scored[test]), dtype=np.float64)
            for f, (_, test) in zip(fitted, folds, strict=True)]


def fit_weighted(estimator: BaseEstimator, z: np.ndarray,
                 weights: np.ndarray | None) -> BaseEstimator:
    """``estimator`` fitted on rows ``z`` weighted by ``weights``: passed on where its ``fit``
    takes ``sample_weight`` (every candidate: the KDE's kernels, the flows' weighted NLL, the
    mixture's repeated rows, which need whole numbers), else as repeated rows; ``ValueError``
    where the weights do not suit the estimator."""
    import inspect

    if weights is None:
        return estimator.fit(z)
    if "sample_weight" in inspect.signature(estimator.fit).parameters:
        return estimator.fit(z, sample_weight=weights)
    if not np.all(weights == np.round(weights)):
        raise ValueError(f"{type(estimator).__name__} takes whole-number weights only (it is "
                         "fitted on repeated rows)")
    return estimator.fit(np.repeat(z, weights.astype(np.int64), axis=0))


@contextmanager
def _progress(enabled: bool, names: list[str]) -> Iterator[Callable[[tuple], None]]:
    """A rich progress bar over the candidates, or a silent no-op; yields ``advance(row)``."""
    if not enabled:
        yield lambda row: None
        return
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("[bold]model selection[/]"), BarColumn(),
               TextColumn("{task.completed}/{task.total} {task.fields[status]}"),
               TimeElapsedColumn())
    with Progress(*columns) as progress:
        task = progress.add_task("select", total=len(names), status=f"scoring {names[0]}")

        def advance(row: tuple) -> None:
            done = int(progress.tasks[0].completed) + 1
            status = f"{row[0]}: {row[1]:.3f}"
            if done < len(names):
                status += f"; scoring {names[done]}"
            progress.update(task, advance=1, status=status)

        yield advance


def _digest(x: np.ndarray) -> str:
    """A fingerprint of the training data (to recognise them later)."""
    import hashlib

    return hashlib.sha256(np.ascontiguousarray(x, dtype=np.float64).tobytes()).hexdigest()


def _check_fitted(estimator: BaseEstimator, attribute: str) -> None:
    if not hasattr(estimator, attribute):
        raise NotFittedError(f"this {type(estimator).__name__} is not fitted yet; call fit first")


class AutoDensity(DensityMixin, BaseEstimator):
    """Chooses the density estimator with the best cross-validated held-out log-likelihood.

    ``fit(X)`` reads the type of every column (``column_types_``, see
    :mod:`densitylab.columns`): discrete columns (integer, rounded, binary) are dequantised and
    scored by their probability mass, bounded ones mapped onto the real line, so samples keep
    to the lattice and the bounds. It then standardises (the maps and the standardisation are
    part of the model: densities stay in the units of ``X``), scores every candidate by
    ``cv``-fold cross-validation on ``X`` (mean held-out log-likelihood per point and its
    standard error over the folds), then refits the winner on all of ``X``. The training sets
    of the folds have one size (see :func:`equal_folds`), so a flow candidate trains its folds
    together, as one batched computation. Candidates that fail on the data (a singular
    covariance, say) are listed with the reason and skipped.

    A table with a column holding text, or one declared ``"categorical"``, is modelled as
    ``P(category) x p(rest | category)`` by a :class:`~densitylab.CategoricalDensity` built
    on AutoDensities of the other columns (``best_name_`` is ``"by-category"``): its
    ``cv_results_`` then compare the strategies for the rest (one shared model, one per
    category, a conditional flow) by the same cross-validation, a row's log-likelihood is the
    log-probability of its labels plus the rest's log-density, and samples carry the labels.

    Args:
        candidates: names from :data:`CANDIDATES`; ``None`` means :data:`DEFAULT_CANDIDATES`.
        cv: number of folds (at least 2).
        random_state: seeds the folds and every candidate; the same seed, the same choice.
        threads: the most threads of every candidate (the KDE's sums share their work among
            them; a flow candidate's compiled engine trains that many folds at a time);
            ``None``: the idle cores, each candidate using what its work needs
            (:mod:`densitylab.threads`). The caller's settings are restored afterwards.
        verbose: a progress bar over the candidates (``None``: when stderr is a terminal).
        column_types: ``"auto"`` (detect them), ``"continuous"`` (every column continuous and
            unbounded), or a dict of declarations (column index or DataFrame name -> type such
            as ``"integer"``, ``"positive"``, ``"bounded(0,1)"``, ``"categorical"``; the
            rest detected).

    Attributes:
        cv_results_: dict of lists, one entry per candidate: ``candidate``,
            ``mean_log_likelihood`` (nats per point, in the units of ``X``), ``std_error``,
            ``seconds`` (fitting and scoring all folds), ``rank``, ``note``.
        best_name_, best_estimator_: the winner, refitted on all of ``X`` (standardised).
        interrupted_: the candidate during which Ctrl-C stopped model selection (it and
            those after it are not compared; the winner is the best of those done), or
            ``None``.
        n_duplicates_: rows of ``X`` that copy another (to ``1e-6`` standard deviations);
            the folds keep every copy of a row together.
        mean_, scale_: the standardisation.
        column_types_: a :class:`~densitylab.columns.ColumnType` per column. A row's
            log-likelihood is a log-density in its continuous columns and a log-probability
            (mass) in its discrete and categorical ones.
        categorical_columns_, categories_: the categorical columns (empty for a numeric
            table) and their labels.
        oof_score_samples_: each training row's log-density under the winner's fold that held
            it out (what :class:`~densitylab.OutlierDetector` sets its threshold from).

    Example:
        >>> import numpy as np
        >>> x = np.random.default_rng(0).normal(size=(200, 2))
        >>> auto = AutoDensity(candidates=["kde", "gaussian-mixture"], random_state=0).fit(x)
        >>> auto.best_name_
        'gaussian-mixture'
        >>> auto.score_samples(x[:2]).round(2)
        array([-1.86, -2.11])
    """

    def __init__(self, candidates: Sequence[str] | None = None, cv: int = 3,
                 random_state: int = 0, threads: int | None = None,
                 verbose: bool | None = False, column_types: Any = "auto",
                 missing: str = "error") -> None:
        self.candidates = candidates
        self.cv = cv
        self.random_state = random_state
        self.threads = threads
        self.verbose = verbose
        self.column_types = column_types
        self.missing = missing

    def _candidate_names(self) -> list[str]:
        names = list(DEFAULT_CANDIDATES if self.candidates is None else self.candidates)
        unknown = [c for c in names if c not in CANDIDATES]
        if unknown or not names:
            raise ValueError(f"unknown candidate(s) {unknown or names!r}; choose from "
                             f"{', '.join(CANDIDATES)}")
        return names

    def fit(self, X: ArrayLike, y: Any = None,
            sample_weight: ArrayLike | None = None) -> AutoDensity:
        """Cross-validate every candidate on ``X`` ``(n, d)``, refit the best; ``y`` ignored.

        ``sample_weight``: non-negative row weights. The standardisation and every fold's
        held-out mean are weighted; every candidate's ``fit`` gets them (the KDE weights its
        kernels, the flows their NLL, the mixture repeats rows, which needs whole numbers: else
        it is listed as failed). Whole-number weights give what repeated rows give (the flows:
        in expectation over their batches), but for the folds, which are drawn over the
        distinct rows."""
        names = self._candidate_names()
        seed = _check_random_state(self.random_state)
        if isinstance(self.cv, bool) or not isinstance(self.cv, int | np.integer) or self.cv < 2:
            raise ValueError(f"cv must be an integer >= 2, got {self.cv!r}")
        from densitylab._labels import holds_categories

        if holds_categories(X, self.column_types):
            return self._fit_by_category(X, seed, sample_weight)
        self.categorical_columns_, self.categories_ = [], []
        x = validate_data(self, X, dtype=np.float64, ensure_min_samples=2,
                          ensure_all_finite=False)
        weights = None
        if sample_weight is not None:
            weights = _check_sample_weight(sample_weight, x, ensure_non_negative=True)
            weights = weights[~np.isnan(x).any(axis=1)]  # the rows "drop" keeps
        x, self.n_dropped_ = complete_rows(x, self.missing,
                                           getattr(self, "feature_names_in_", None))
        if len(x) < 2 * self.cv:
            raise ValueError(f"AutoDensity needs at least {2 * self.cv} points for {self.cv}-fold "
                             f"cross-validation, got {len(x)}")
        self._set_types(x)
        mapped = self._table.for_fitting(x, seed)
        self.mean_ = np.average(mapped, axis=0, weights=weights)
        self.scale_ = np.sqrt(np.average((mapped - self.mean_) ** 2, axis=0, weights=weights))
        if np.any(self.scale_ <= 0):
            raise ValueError(f"column {int(np.argmin(self.scale_))} of X is constant; a density "
                             "needs every column to vary (drop it)")
        z = (mapped - self.mean_) / self.scale_
        scored, log_jacobian = self._mapped(x)
        from densitylab._ties import duplicate_count, tie_groups

        groups = tie_groups(x)  # copies in the data as given (before any dequantisation)
        self.n_duplicates_ = duplicate_count(groups)
        folds = equal_folds(len(z), self.cv, seed, groups)
        from densitylab.runtime import progress_enabled, torch_threads

        rows = []
        self.interrupted_ = None
        with torch_threads(self.threads), _progress(progress_enabled(self.verbose),
                                                    names) as advance:
            for name in names:
                if self.interrupted_ is not None:
                    rows.append((name, -math.inf, math.nan, 0.0, "not run: interrupted", None))
                    continue
                start = time.perf_counter()
                try:
                    rows.append(self._cross_validate(name, seed, z, folds, log_jacobian, scored,
                                                     weights))
                except KeyboardInterrupt:  # Ctrl-C: stop here, choose among those done
                    self.interrupted_ = name
                    rows.append((name, -math.inf, math.nan, time.perf_counter() - start,
                                 "interrupted: its folds were cut short, not compared", None))
                advance(rows[-1])
        order = sorted(range(len(rows)), key=lambda i: -rows[i][1])
        if self.interrupted_ is not None and not math.isfinite(rows[order[0]][1]):
            raise KeyboardInterrupt
        if not math.isfinite(rows[order[0]][1]):
            raise ValueError("no candidate could fit these data: "
                             + "; ".join(f"{r[0]}: {r[4]}" for r in rows))
        if self.interrupted_ is not None:
            done = [r[0] for r in rows if math.isfinite(r[1])]
            warnings.warn(f"model selection interrupted during {self.interrupted_}: chose "
                          f"among {', '.join(done)}", UserWarning, stacklevel=2)
        ranks = np.empty(len(rows), dtype=int)
        ranks[order] = np.arange(1, len(rows) + 1)
        self.cv_results_ = {
            "candidate": [r[0] for r in rows],
            "mean_log_likelihood": [r[1] for r in rows],
            "std_error": [r[2] for r in rows],
            "seconds": [r[3] for r in rows],
            "rank": [int(k) for k in ranks],
            "note": [r[4] for r in rows],
        }
        self.best_name_ = rows[order[0]][0]
        self.oof_score_samples_ = rows[order[0]][5]
        self._training_digest = _digest(x)
        with torch_threads(self.threads):
            self.best_estimator_ = fit_weighted(self._candidate(self.best_name_, seed), z,
                                                weights)
        return self

    def _fit_by_category(self, X: Any, seed: int, sample_weight: ArrayLike | None
                         ) -> AutoDensity:
        """A table with categorical columns: ``P(category) x p(rest | category)``, a
        :class:`~densitylab.CategoricalDensity` whose strategy for the rest (one shared model,
        one per category, a conditional flow) is chosen by this cross-validation."""
        from densitylab import CategoricalDensity  # a model of AutoDensities, built on them

        if self.column_types == "continuous":
            raise ValueError("column_types='continuous' cannot hold a text column: declare "
                             "types per column (the text ones are categorical)")
        model = CategoricalDensity(
            column_types=self.column_types, candidates=self.candidates, cv=self.cv,
            random_state=seed, threads=self.threads, missing=self.missing)
        self._adopt(model.fit(X, sample_weight=sample_weight))
        return self

    def _adopt(self, model: Any) -> None:
        """Take a fitted CategoricalDensity as the model (from :meth:`fit` or a saved file)."""
        self.best_name_, self.best_estimator_ = BY_CATEGORY, model
        self.cv_results_, self.oof_score_samples_ = model.cv_results_, model.oof_score_samples_
        self.column_types_, self.n_features_in_ = model.column_types_, model.n_features_in_
        self.categorical_columns_, self.categories_ = (model.categorical_columns_,
                                                       model.categories_)
        self.interrupted_, self.n_dropped_ = None, getattr(model, "n_dropped_", 0)
        names = getattr(model, "feature_names_in_", None)
        if names is not None:
            self.feature_names_in_ = names
        elif hasattr(self, "feature_names_in_"):
            del self.feature_names_in_

    def describe_columns(self) -> list[str]:
        """One line per column: its type and whether it is scored as a log-density or a
        log-probability."""
        _check_fitted(self, "best_estimator_")
        if self.best_name_ == BY_CATEGORY:
            return self.best_estimator_.describe_columns()
        return [t.describe() for t in self.column_types_]

    def _standardised_for_fitting(self, x: np.ndarray, seed: int) -> np.ndarray:
        """Training rows as the model sees them: mapped (discrete columns dequantised with
        ``seed``) and standardised (a conditional model of these columns trains on them)."""
        return (self._table.for_fitting(x, seed) - self.mean_) / self.scale_

    def _to_data(self, z: np.ndarray) -> np.ndarray:
        """Points of the model's standardised space back in the data's units."""
        return self._table.to_data(np.asarray(z, dtype=np.float64) * self.scale_ + self.mean_)

    def _candidate(self, name: str, seed: int) -> BaseEstimator:
        """A new candidate ``name``, on ``threads`` threads where it has that option."""
        estimator = CANDIDATES[name](seed)
        if self.threads is not None and "threads" in estimator.get_params():
            estimator.set_params(threads=self.threads)
        return estimator

    def _cross_validate(self, name: str, seed: int, z: np.ndarray, folds,
                        log_jacobian: np.ndarray, scored: np.ndarray,
                        weights: np.ndarray | None = None,
                        ) -> tuple[str, float, float, float, str, np.ndarray]:
        """``(name, mean, standard error, seconds, note, out-of-fold scores)`` of one
        candidate's folds."""
        start, means, note = time.perf_counter(), [], ""
        oof = np.full(len(z), -math.inf)
        try:
            held_out = _fold_scores(partial(self._candidate, name, seed), z, folds, scored,
                                    weights)
            for (_, test), scores in zip(folds, held_out, strict=True):
                oof[test] = scores + log_jacobian[test]
            means = [float(np.average(oof[test], weights=None if weights is None
                                      else weights[test])) for _, test in folds]
        except ValueError as err:  # this candidate cannot model these data
            note = f"failed: {err}"
        mean = float(np.mean(means)) if len(means) == len(folds) else -math.inf
        if not math.isfinite(mean) and not note:
            note = "non-finite held-out log-density"
            mean = -math.inf
        se = float(np.std(means, ddof=1) / math.sqrt(len(means))) if not note else math.nan
        return name, mean, se, time.perf_counter() - start, note, oof

    def recorded_out_of_fold(self, X: ArrayLike) -> np.ndarray | None:
        """``oof_score_samples_`` when ``X`` is the training data, else ``None`` (also when
        not fitted: nothing was recorded)."""
        if not hasattr(self, "best_estimator_"):
            return None
        if self.best_name_ == BY_CATEGORY:
            return self.best_estimator_.recorded_out_of_fold(X)
        recorded = getattr(self, "oof_score_samples_", None)
        x = validate_data(self, X, dtype=np.float64, reset=False)
        if recorded is None or _digest(x) != getattr(self, "_training_digest", None):
            return None
        return recorded.copy()

    def score_samples(self, X: ArrayLike) -> np.ndarray:
        """Log-density of each row of ``X`` in nats, in the units of the training data. A row
        with missing cells (NaN) is scored by the exact marginal of its observed cells where
        the winner is a KDE or a Gaussian mixture (the column maps act column by column)."""
        _check_fitted(self, "best_estimator_")
        if self.best_name_ == BY_CATEGORY:  # log-probability of the labels + the rest's
            return self.best_estimator_.score_samples(X)
        x = validate_data(self, X, dtype=np.float64, reset=False, ensure_all_finite="allow-nan")
        if np.isnan(x).any() and self.best_name_ not in MARGINALISING:
            row, j = (int(v) for v in np.argwhere(np.isnan(x))[0])
            raise ValueError(f"X has missing values (first at row {row}, column {j}); the chosen "
                             f"{self.best_name_} cannot integrate them out (a KDE or a Gaussian "
                             "mixture can): drop or fill those rows")
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            z, log_jacobian = self._mapped(x)
        # rows beyond float64 once mapped and standardised, or outside the support: -inf
        reach = (np.all(np.isfinite(z) | np.isnan(x), axis=1) & np.isfinite(log_jacobian))
        log_p = np.full(len(x), -math.inf)
        if reach.any():
            with np.errstate(over="ignore", invalid="ignore", under="ignore"):
                inner = np.asarray(self.best_estimator_.score_samples(z[reach]), dtype=np.float64)
            log_p[reach] = np.where(np.isnan(inner), -math.inf, inner) + log_jacobian[reach]
        return log_p

    def _set_types(self, x: np.ndarray) -> None:
        """``column_types_`` of the training data, and the map they make."""
        from densitylab.columns import ColumnType, TableMap, column_types

        declared = self.column_types
        if isinstance(declared, str) and declared in ("auto", "continuous"):
            types = (column_types(x) if declared == "auto"
                     else [ColumnType() for _ in range(x.shape[1])])
        elif isinstance(declared, dict):
            names = getattr(self, "feature_names_in_", None)
            types = column_types(x, declared, None if names is None else list(names))
        else:
            raise ValueError("column_types must be 'auto', 'continuous' or a dict of column -> "
                             f"type, got {declared!r}")
        self.column_types_ = types
        self._table = TableMap(types)

    def _mapped(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rows mapped and standardised as the model sees them, and the log-Jacobian per row
        that carries its log-density back to the units of ``x`` (``-inf`` outside)."""
        y, log_jacobian = self._table.for_scoring(x)
        log_scale = np.where(np.isnan(x), 0.0, np.log(self.scale_)).sum(axis=1)  # observed
        return (y - self.mean_) / self.scale_, log_jacobian - log_scale

    def score(self, X: ArrayLike, y: Any = None) -> float:
        """Total log-likelihood of ``X``: higher is better."""
        return float(np.sum(self.score_samples(X)))

    def sample(self, n_samples: int = 1, random_state: int | None = None) -> np.ndarray:
        """``(n_samples, d)`` points from the chosen estimator, in the units of ``X``; with
        categorical columns, rows carrying their labels (a DataFrame of the training columns
        when fitted on one, else an object array)."""
        _check_fitted(self, "best_estimator_")
        from densitylab._validation import check_positive_int

        check_positive_int(n_samples, "n_samples")
        z = self.best_estimator_.sample(n_samples, random_state=random_state)
        if self.best_name_ == BY_CATEGORY:  # labels beside numbers, in the data's units
            return z
        return self._to_data(z)

    def results_csv(self) -> str:
        """``cv_results_`` as CSV text, best first (what ``densitylab train --model auto``
        writes to ``model_selection.csv``)."""
        _check_fitted(self, "cv_results_")
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(self.cv_results_)
        for i in np.argsort(self.cv_results_["rank"]):
            writer.writerow([f"{v[i]:.6g}" if isinstance(v[i], float) else v[i]
                             for v in self.cv_results_.values()])
        return out.getvalue()


# -- save / load (through densitylab.save / densitylab.load: safetensors + JSON) ----------------
Tensors = dict[str, Any]


def _kde_state(kde: Any) -> tuple[Tensors, dict]:
    support = getattr(kde, "support_", None)
    config = {} if support is None else {"bounds": support.to_json()}
    if getattr(kde, "guard_weight_", 0.0) > 0:  # the defensive component (densitylab.guard)
        config["guard"] = kde.guard_weight_
    return ({"data": kde.data_, "weights": kde.weights_, "bandwidth": kde.bandwidth_}, config)


def _kde_restore(tensors: Tensors, config: dict, device: Any) -> Any:
    """The KDE refitted on its saved points, weights and bandwidth: ``KDE.fit`` checks each
    (finite points, non-negative weights of positive sum, an invertible bandwidth)."""
    from densitylab.kde import KDE
    from densitylab.support import Support

    _exactly(tensors, ("data", "weights", "bandwidth"), "KDE")
    if set(config) - {"bounds", "guard"}:
        raise ValueError("the KDE's configuration may hold only its bounds and guard weight")
    data, weights, bounds = tensors["data"], tensors["weights"], config.get("bounds")
    if data.ndim != 2 or weights.shape != (len(data),) or len(data) == 0:
        raise ValueError("the KDE's data and weights do not fit together")
    if not (np.all(weights > 0) and abs(float(weights.sum()) - 1.0) < 1e-9):
        raise ValueError("the KDE's weights must be positive and sum to 1")
    if bounds is not None:  # the kernels' points were saved in the mapped coordinates
        data = Support(bounds, data.shape[1]).to_data(data)
    equal = bool(np.all(weights == weights[0]))  # fitted unweighted: the same arithmetic again
    return KDE(bandwidth=tensors["bandwidth"], bounds=bounds, guard=config.get("guard")).fit(
        data, sample_weight=None if equal else weights)


def _exactly(tensors: Tensors, names: Sequence[str], what: str) -> None:
    if set(tensors) != set(names):
        raise ValueError(f"the {what} needs tensors {sorted(names)}, got {sorted(tensors)}")


def _check_mixture(tensors: Tensors, covariance_type: str, k: int, d: int) -> None:
    """Shapes by covariance type, finite values, weights on the simplex, precision factors with
    a positive diagonal (triangular for full and tied) and covariances their inverse's."""
    per = {"full": (k, d, d), "tied": (d, d), "diag": (k, d), "spherical": (k,)}[covariance_type]
    shapes = {"weights_": (k,), "means_": (k, d), "covariances_": per, "precisions_": per,
              "precisions_cholesky_": per}
    for name, shape in shapes.items():
        array = tensors[name]
        if array.shape != shape or not np.all(np.isfinite(array)):
            raise ValueError(f"the mixture's {name} must be finite of shape {shape}")
    weights = tensors["weights_"]
    if np.any(weights < 0) or not abs(float(weights.sum()) - 1.0) < 1e-6:
        raise ValueError("the mixture's weights must be non-negative and sum to 1")
    chol = tensors["precisions_cholesky_"]
    if covariance_type in ("full", "tied"):
        factors = chol.reshape(-1, d, d)
        diagonals = np.diagonal(factors, axis1=1, axis2=2)
        if np.any(np.tril(factors, -1) != 0) or np.any(diagonals <= 0):
            raise ValueError("the mixture's precision factors must be upper triangular with a "
                             "positive diagonal")
        precisions = factors @ np.swapaxes(factors, 1, 2)
        covariances = tensors["covariances_"].reshape(-1, d, d)
    else:
        if np.any(chol <= 0):
            raise ValueError("the mixture's precision factors must be positive")
        precisions, covariances = chol**2, tensors["covariances_"]
    if not (np.allclose(tensors["precisions_"].reshape(precisions.shape), precisions,
                        rtol=1e-6, atol=0)
            and np.allclose(covariances @ precisions if covariance_type in ("full", "tied")
                            else covariances * precisions,
                            np.eye(d) if covariance_type in ("full", "tied") else 1.0,
                            rtol=0, atol=1e-6)):
        raise ValueError("the mixture's covariances, precisions and their factors disagree")


MIXTURE_ARRAYS = ("weights_", "means_", "covariances_", "precisions_", "precisions_cholesky_")


def _mixture_state(est: GaussianMixtureBIC) -> tuple[Tensors, dict]:
    gmm = est.mixture_
    config = {"params": {k: list(v) if isinstance(v, tuple) else v
                         for k, v in est.get_params().items()},
              "covariance_type": gmm.covariance_type, "n_components": gmm.n_components,
              "n_features_in": est.n_features_in_}
    return {name: getattr(gmm, name) for name in MIXTURE_ARRAYS}, config


def _mixture_restore(tensors: Tensors, config: dict, device: Any) -> GaussianMixtureBIC:
    from densitylab._schema import checked_arguments, conforms

    _exactly(tensors, MIXTURE_ARRAYS, "mixture")
    if not isinstance(config, dict) or set(config) != {"params", "covariance_type",
                                                       "n_components", "n_features_in"}:
        raise ValueError("the mixture's configuration needs params, covariance_type, "
                         "n_components and n_features_in")
    if config["covariance_type"] not in COVARIANCE_TYPES:
        raise ValueError(f"unknown covariance type {config['covariance_type']!r}; "
                         f"densitylab saves {list(COVARIANCE_TYPES)}")
    k, d = config["n_components"], config["n_features_in"]
    if not (conforms(k, int) and conforms(d, int) and k >= 1 and d >= 1):
        raise ValueError("n_components and n_features_in must be positive integers")
    _check_mixture(tensors, config["covariance_type"], k, d)
    arguments = checked_arguments(GaussianMixtureBIC.__init__, config["params"], None,
                                  "the mixture", sized=False)
    params = {k: tuple(v) if isinstance(v, list) else v for k, v in arguments.items()}
    est = GaussianMixtureBIC(**params)
    gmm = GaussianMixture(config["n_components"], covariance_type=config["covariance_type"],
                          reg_covar=est.reg_covar, random_state=est.random_state)
    for name in MIXTURE_ARRAYS:
        setattr(gmm, name, tensors[name])
    gmm.converged_, gmm.n_features_in_ = True, config["n_features_in"]
    est.mixture_, est.n_features_in_ = gmm, config["n_features_in"]
    return est


STATES: dict[str, tuple[Callable[[Any], tuple[Tensors, dict]],
                        Callable[[Tensors, dict, Any], Any]]] = {
    "kde": (_kde_state, _kde_restore),
    "gaussian-mixture": (_mixture_state, _mixture_restore),
}
"""How each NumPy candidate's fitted state becomes tensors + JSON, and back (the flow's is
:mod:`densitylab.io`'s, passed to :func:`to_state` and :func:`from_state`)."""


def json_number(v: float) -> float | None:
    return v if math.isfinite(v) else None


def to_state(auto: AutoDensity, flow_state: Callable[[Any], tuple[Tensors, dict]]
             ) -> tuple[dict[str, Any], dict]:
    """The fitted ``auto`` as ``(torch tensors, JSON-able config)`` for :func:`densitylab.save`;
    ``flow_state`` saves a winning flow estimator."""
    import torch

    _check_fitted(auto, "best_estimator_")
    params = {k: list(v) if isinstance(v, tuple) else v for k, v in auto.get_params().items()}
    if auto.best_name_ == BY_CATEGORY:
        raise ValueError("an AutoDensity of a table with categories is saved by "
                         "densitylab.save, through its CategoricalDensity")
    state = flow_state if auto.best_name_ in FLOW_CANDIDATES else STATES[auto.best_name_][0]
    tensors, config = state(auto.best_estimator_)
    out = {"mean": torch.as_tensor(auto.mean_), "scale": torch.as_tensor(auto.scale_)}
    if getattr(auto, "oof_score_samples_", None) is not None:
        out["oof"] = torch.as_tensor(auto.oof_score_samples_)
    out |= {f"best.{k}": v if isinstance(v, torch.Tensor) else torch.as_tensor(np.asarray(v))
            for k, v in tensors.items()}
    results = {k: [json_number(x) if isinstance(x, float) else x for x in v]
               for k, v in auto.cv_results_.items()}
    return out, {"params": params, "best_name": auto.best_name_, "best": config,
                 "cv_results": results, "training_digest": getattr(auto, "_training_digest", None),
                 "column_types": [t.to_json() for t in auto.column_types_]}


def from_state(tensors: dict[str, Any], config: dict, device: Any,
               flow_restore: Callable[[Tensors, dict, Any], Any]) -> AutoDensity:
    """Rebuild what :func:`to_state` wrote (``flow_restore`` rebuilds a winning flow);
    ``ValueError`` when the pieces do not fit."""
    from densitylab._schema import checked_arguments

    required = {"params", "best_name", "best", "cv_results"}
    if not required <= set(config) <= required | {"training_digest", "column_types"}:
        raise ValueError("the saved AutoDensity needs params, best_name, best and cv_results "
                         "(and may hold training_digest and column_types)")
    name = config.get("best_name")
    if name not in (*STATES, *FLOW_CANDIDATES):
        raise ValueError(f"the saved AutoDensity names an unknown estimator {name!r}")
    params = checked_arguments(AutoDensity.__init__, config["params"], None, "the AutoDensity",
                               sized=False)
    auto = AutoDensity(**{k: tuple(v) if isinstance(v, list) else v for k, v in params.items()})
    auto._candidate_names()  # unknown candidates are refused
    best = {k.removeprefix("best."): v for k, v in tensors.items() if k.startswith("best.")}
    if not {"mean", "scale"} <= set(tensors) - {f"best.{k}" for k in best} <= {
            "mean", "scale", "oof"}:
        raise ValueError("the saved AutoDensity needs tensors mean, scale and best.* (and may "
                         "hold oof)")
    mean, scale = (tensors[k].cpu().double().numpy() for k in ("mean", "scale"))
    if mean.ndim != 1 or scale.shape != mean.shape or not (
            np.all(np.isfinite(mean)) and np.all(np.isfinite(scale)) and np.all(scale > 0)):
        raise ValueError("the saved AutoDensity's mean and scale must be finite vectors of one "
                         "length, the scale positive")
    if name not in FLOW_CANDIDATES:  # NumPy estimators: float64 arrays
        best = {k: v.cpu().double().numpy() for k, v in best.items()}
    try:
        restore = flow_restore if name in FLOW_CANDIDATES else STATES[name][1]
        auto.best_estimator_ = restore(best, config["best"], device)
    except (KeyError, TypeError) as err:
        raise ValueError(f"the saved AutoDensity is incomplete: {err}") from err
    if auto.best_estimator_.n_features_in_ != len(mean):
        raise ValueError("the saved AutoDensity's winner and standardisation differ in dimension")
    auto.mean_, auto.scale_ = mean, scale
    auto.best_name_ = name
    auto.n_features_in_ = len(auto.mean_)
    auto.categorical_columns_, auto.categories_ = [], []
    from densitylab.columns import KINDS, ColumnType, TableMap

    types = config.get("column_types") or [{}] * auto.n_features_in_
    if not isinstance(types, list) or len(types) != auto.n_features_in_:
        raise ValueError("the saved AutoDensity's column types do not fit its columns")
    try:
        auto.column_types_ = [ColumnType(**t) for t in types]
        if any(t.kind not in KINDS for t in auto.column_types_):  # labels are not numbers
            raise ValueError(f"a kind is not one of {list(KINDS)}")
        auto._table = TableMap(auto.column_types_)
    except (TypeError, ValueError) as err:
        raise ValueError(f"the saved AutoDensity's column types are invalid: {err}") from None
    if "oof" in tensors and isinstance(config.get("training_digest"), str):
        oof = tensors["oof"].cpu().double().numpy()
        if oof.ndim != 1 or np.any(np.isnan(oof)) or np.any(oof == np.inf):
            raise ValueError("the saved AutoDensity's out-of-fold scores must be a vector of "
                             "log-densities (finite or -inf)")
        auto.oof_score_samples_ = oof
        auto._training_digest = config["training_digest"]
    auto.cv_results_ = checked_results(config["cv_results"])
    return auto


def adopting(params: Any, model: Any) -> AutoDensity:
    """The saved AutoDensity of a table with categories: its checked ``params`` around the
    restored :class:`~densitylab.CategoricalDensity` ``model`` (see :func:`densitylab.load`)."""
    from densitylab._schema import checked_arguments

    params = checked_arguments(AutoDensity.__init__, params, None, "the AutoDensity",
                               sized=False)
    auto = AutoDensity(**{k: tuple(v) if isinstance(v, list) else v for k, v in params.items()})
    auto._candidate_names()  # unknown candidates are refused
    auto._adopt(model)
    return auto


RESULT_COLUMNS = {"candidate": str, "mean_log_likelihood": float | None,
                  "std_error": float | None, "seconds": float | None, "rank": int, "note": str}
"""The columns of ``cv_results_`` and what a saved file may hold in each."""


def checked_results(results: Any) -> dict[str, list]:
    """``cv_results`` of a saved AutoDensity: the known columns, lists of one length, each
    value of its column's type (``None`` for a non-finite number)."""
    from densitylab._schema import conforms

    if not isinstance(results, dict) or set(results) != set(RESULT_COLUMNS):
        raise ValueError(f"cv_results must hold the columns {list(RESULT_COLUMNS)}")
    lengths = {len(v) if isinstance(v, list) else -1 for v in results.values()}
    if len(lengths) != 1 or -1 in lengths:
        raise ValueError("cv_results must hold lists of one length")
    for column, kind in RESULT_COLUMNS.items():
        if not all(conforms(value, kind) for value in results[column]):
            raise ValueError(f"cv_results[{column!r}] holds a value that is not {kind}")
    return {k: [(-math.inf if k == "mean_log_likelihood" else math.nan) if x is None else x
                for x in v] for k, v in results.items()}

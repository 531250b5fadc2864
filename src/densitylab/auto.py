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
from sklearn.utils.validation import validate_data

from densitylab.mixtures import COVARIANCE_TYPES, select_by_bic


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

    def fit(self, X: ArrayLike, y: Any = None) -> GaussianMixtureBIC:
        """Fit every (type, k) with at least 2 points per component; keep the lowest BIC."""
        x = validate_data(self, X, dtype=np.float64, ensure_min_samples=2)
        if isinstance(self.max_components, bool) or not isinstance(
                self.max_components, int | np.integer) or self.max_components < 1:
            raise ValueError(f"max_components must be an integer >= 1, "
                             f"got {self.max_components!r}")
        self.mixture_, self.bic_ = select_by_bic(
            x, self.max_components, self.covariance_types, self.reg_covar,
            _check_random_state(self.random_state))
        return self

    def score_samples(self, X: ArrayLike) -> np.ndarray:
        """Log-density of each row of ``X``."""
        _check_fitted(self, "mixture_")
        return self.mixture_.score_samples(validate_data(self, X, dtype=np.float64, reset=False))

    def score(self, X: ArrayLike, y: Any = None) -> float:
        """Total log-likelihood of ``X``."""
        return float(np.sum(self.score_samples(X)))

    def sample(self, n_samples: int = 1, random_state: int | None = None) -> np.ndarray:
        """``(n_samples, d)`` points; ``random_state`` seeds this draw only (no global state)."""
        _check_fitted(self, "mixture_")
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
FLOW_CANDIDATES = ("flow", "flow-mixture", "maf", "cnf", "cnf-fm")
"""The candidates that are :class:`~densitylab.estimators.FlowDensity` estimators (saved by
:mod:`densitylab.io`'s flow state, not by :data:`STATES`)."""


def equal_folds(n: int, k: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Shuffled ``k``-fold ``(train, test)`` indices of ``n`` points whose training sets all
    have the smallest one's size (a larger one leaves out one point, drawn by ``seed``), so
    that a flow's folds can train together; every point is tested once."""
    folds = list(KFold(k, shuffle=True, random_state=seed).split(np.zeros((n, 1))))
    size = min(len(train) for train, _ in folds)
    rng = np.random.default_rng(seed)
    return [(np.sort(rng.choice(train, size, replace=False)), test) for train, test in folds]


def _fold_means(make: Callable[[], BaseEstimator], z: np.ndarray,
                folds: list[tuple[np.ndarray, np.ndarray]]) -> list[float]:
    """Mean held-out log-density of each fold, by new estimators from ``make``; the folds of
    an estimator that can fit several data sets at once (``fit_together``: the flows) train
    as one batched computation."""
    estimator, trains = make(), [z[train] for train, _ in folds]
    if hasattr(estimator, "fit_together"):
        fitted = estimator.fit_together(trains)
    else:
        fitted = [make().fit(x) for x in trains]
    return [float(np.mean(f.score_samples(z[test])))
            for f, (_, test) in zip(fitted, folds, strict=True)]


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


def _check_fitted(estimator: BaseEstimator, attribute: str) -> None:
    if not hasattr(estimator, attribute):
        raise NotFittedError(f"this {type(estimator).__name__} is not fitted yet; call fit first")


class AutoDensity(DensityMixin, BaseEstimator):
    """Chooses the density estimator with the best cross-validated held-out log-likelihood.

    ``fit(X)`` standardises ``X`` (the standardisation is part of the model: densities stay in
    the units of ``X``), scores every candidate by ``cv``-fold cross-validation on ``X`` (mean
    held-out log-likelihood per point and its standard error over the folds), then refits the
    winner on all of ``X``. The training sets of the folds have one size (see
    :func:`equal_folds`), so a flow candidate trains its folds together, as one batched
    computation. Candidates that fail on the data (a singular covariance, say) are
    listed with the reason and skipped.

    Args:
        candidates: names from :data:`CANDIDATES`; ``None`` means :data:`DEFAULT_CANDIDATES`.
        cv: number of folds (at least 2).
        random_state: seeds the folds and every candidate; the same seed, the same choice.
        threads: torch threads for every candidate (the KDE's sums share their work among
            them; a flow candidate's compiled engine trains that many folds at a time);
            ``None`` leaves torch's setting and the candidates' own (one for a flow).
        verbose: a progress bar over the candidates (``None``: when stderr is a terminal).

    Attributes:
        cv_results_: dict of lists, one entry per candidate: ``candidate``,
            ``mean_log_likelihood`` (nats per point, in the units of ``X``), ``std_error``,
            ``seconds`` (fitting and scoring all folds), ``rank``, ``note``.
        best_name_, best_estimator_: the winner, refitted on all of ``X`` (standardised).
        mean_, scale_: the standardisation.

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
                 verbose: bool | None = False) -> None:
        self.candidates = candidates
        self.cv = cv
        self.random_state = random_state
        self.threads = threads
        self.verbose = verbose

    def _candidate_names(self) -> list[str]:
        names = list(DEFAULT_CANDIDATES if self.candidates is None else self.candidates)
        unknown = [c for c in names if c not in CANDIDATES]
        if unknown or not names:
            raise ValueError(f"unknown candidate(s) {unknown or names!r}; choose from "
                             f"{', '.join(CANDIDATES)}")
        return names

    def fit(self, X: ArrayLike, y: Any = None) -> AutoDensity:
        """Cross-validate every candidate on ``X`` ``(n, d)``, refit the best; ``y`` ignored."""
        names = self._candidate_names()
        seed = _check_random_state(self.random_state)
        if isinstance(self.cv, bool) or not isinstance(self.cv, int | np.integer) or self.cv < 2:
            raise ValueError(f"cv must be an integer >= 2, got {self.cv!r}")
        x = validate_data(self, X, dtype=np.float64, ensure_min_samples=2)
        if len(x) < 2 * self.cv:
            raise ValueError(f"AutoDensity needs at least {2 * self.cv} points for {self.cv}-fold "
                             f"cross-validation, got {len(x)}")
        self.mean_ = x.mean(axis=0)
        self.scale_ = x.std(axis=0)
        if np.any(self.scale_ <= 0):
            raise ValueError(f"column {int(np.argmin(self.scale_))} of X is constant; a density "
                             "needs every column to vary (drop it)")
        z = (x - self.mean_) / self.scale_
        log_jacobian = -float(np.sum(np.log(self.scale_)))
        folds = equal_folds(len(z), self.cv, seed)
        from densitylab.runtime import progress_enabled, torch_threads

        rows = []
        with torch_threads(self.threads), _progress(progress_enabled(self.verbose),
                                                    names) as advance:
            for name in names:
                rows.append(self._cross_validate(name, seed, z, folds, log_jacobian))
                advance(rows[-1])
        order = sorted(range(len(rows)), key=lambda i: -rows[i][1])
        if not math.isfinite(rows[order[0]][1]):
            raise ValueError("no candidate could fit these data: "
                             + "; ".join(f"{r[0]}: {r[4]}" for r in rows))
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
        with torch_threads(self.threads):
            self.best_estimator_ = self._candidate(self.best_name_, seed).fit(z)
        return self

    def _candidate(self, name: str, seed: int) -> BaseEstimator:
        """A new candidate ``name``, on ``threads`` threads where it has that option."""
        estimator = CANDIDATES[name](seed)
        if self.threads is not None and "threads" in estimator.get_params():
            estimator.set_params(threads=self.threads)
        return estimator

    def _cross_validate(self, name: str, seed: int, z: np.ndarray, folds,
                        log_jacobian: float) -> tuple[str, float, float, float, str]:
        """``(name, mean, standard error, seconds, note)`` of one candidate's folds."""
        start, means, note = time.perf_counter(), [], ""
        try:
            means = [m + log_jacobian
                     for m in _fold_means(partial(self._candidate, name, seed), z, folds)]
        except ValueError as err:  # this candidate cannot model these data
            note = f"failed: {err}"
        mean = float(np.mean(means)) if len(means) == len(folds) else -math.inf
        if not math.isfinite(mean) and not note:
            note = "non-finite held-out log-density"
            mean = -math.inf
        se = float(np.std(means, ddof=1) / math.sqrt(len(means))) if not note else math.nan
        return name, mean, se, time.perf_counter() - start, note

    def score_samples(self, X: ArrayLike) -> np.ndarray:
        """Log-density of each row of ``X`` in nats, in the units of the training data."""
        _check_fitted(self, "best_estimator_")
        x = validate_data(self, X, dtype=np.float64, reset=False)
        z = (x - self.mean_) / self.scale_
        return self.best_estimator_.score_samples(z) - float(np.sum(np.log(self.scale_)))

    def score(self, X: ArrayLike, y: Any = None) -> float:
        """Total log-likelihood of ``X``: higher is better."""
        return float(np.sum(self.score_samples(X)))

    def sample(self, n_samples: int = 1, random_state: int | None = None) -> np.ndarray:
        """``(n_samples, d)`` points from the chosen estimator, in the units of ``X``."""
        _check_fitted(self, "best_estimator_")
        z = self.best_estimator_.sample(n_samples, random_state=random_state)
        return np.asarray(z, dtype=np.float64) * self.scale_ + self.mean_

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
    return {"data": kde.data_, "weights": kde.weights_, "bandwidth": kde.bandwidth_}, {}


def _kde_restore(tensors: Tensors, config: dict, device: Any) -> Any:
    from densitylab.kde import KDE

    weights = tensors["weights"]
    equal = bool(np.all(weights == weights[0]))  # fitted unweighted: the same arithmetic again
    return KDE(bandwidth=tensors["bandwidth"]).fit(tensors["data"],
                                                   sample_weight=None if equal else weights)


MIXTURE_ARRAYS = ("weights_", "means_", "covariances_", "precisions_", "precisions_cholesky_")


def _mixture_state(est: GaussianMixtureBIC) -> tuple[Tensors, dict]:
    gmm = est.mixture_
    config = {"params": {k: list(v) if isinstance(v, tuple) else v
                         for k, v in est.get_params().items()},
              "covariance_type": gmm.covariance_type, "n_components": gmm.n_components,
              "n_features_in": est.n_features_in_}
    return {name: getattr(gmm, name) for name in MIXTURE_ARRAYS}, config


def _mixture_restore(tensors: Tensors, config: dict, device: Any) -> GaussianMixtureBIC:
    params = {k: tuple(v) if isinstance(v, list) else v for k, v in config["params"].items()}
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


def _json_number(v: float) -> float | None:
    return v if math.isfinite(v) else None


def to_state(auto: AutoDensity, flow_state: Callable[[Any], tuple[Tensors, dict]]
             ) -> tuple[dict[str, Any], dict]:
    """The fitted ``auto`` as ``(torch tensors, JSON-able config)`` for :func:`densitylab.save`;
    ``flow_state`` saves a winning flow estimator."""
    import torch

    _check_fitted(auto, "best_estimator_")
    state = flow_state if auto.best_name_ in FLOW_CANDIDATES else STATES[auto.best_name_][0]
    tensors, config = state(auto.best_estimator_)
    out = {"mean": torch.as_tensor(auto.mean_), "scale": torch.as_tensor(auto.scale_)}
    out |= {f"best.{k}": v if isinstance(v, torch.Tensor) else torch.as_tensor(np.asarray(v))
            for k, v in tensors.items()}
    results = {k: [_json_number(x) if isinstance(x, float) else x for x in v]
               for k, v in auto.cv_results_.items()}
    params = {k: list(v) if isinstance(v, tuple) else v for k, v in auto.get_params().items()}
    return out, {"params": params, "best_name": auto.best_name_, "best": config,
                 "cv_results": results}


def from_state(tensors: dict[str, Any], config: dict, device: Any,
               flow_restore: Callable[[Tensors, dict, Any], Any]) -> AutoDensity:
    """Rebuild what :func:`to_state` wrote (``flow_restore`` rebuilds a winning flow);
    ``ValueError`` when the pieces do not fit."""
    name = config.get("best_name")
    if name not in (*STATES, *FLOW_CANDIDATES):
        raise ValueError(f"the saved AutoDensity names an unknown estimator {name!r}")
    auto = AutoDensity(**{k: tuple(v) if isinstance(v, list) else v
                          for k, v in config["params"].items()})
    best = {k.removeprefix("best."): v for k, v in tensors.items() if k.startswith("best.")}
    if name not in FLOW_CANDIDATES:  # NumPy estimators: float64 arrays
        best = {k: v.cpu().numpy() for k, v in best.items()}
    try:
        restore = flow_restore if name in FLOW_CANDIDATES else STATES[name][1]
        auto.best_estimator_ = restore(best, config["best"], device)
        auto.mean_ = tensors["mean"].cpu().numpy()
        auto.scale_ = tensors["scale"].cpu().numpy()
    except (KeyError, TypeError) as err:
        raise ValueError(f"the saved AutoDensity is incomplete: {err}") from err
    auto.best_name_ = name
    auto.n_features_in_ = len(auto.mean_)
    auto.cv_results_ = {k: [(-math.inf if k == "mean_log_likelihood" else math.nan)
                            if x is None else x for x in v]
                        for k, v in config["cv_results"].items()}
    return auto

"""Anomaly and novelty detection from any density estimator, with scikit-learn's conventions.

A point is an outlier when the model gives it a low density. :class:`OutlierDetector` wraps a
densitylab estimator (KDE, FlowDensity, AutoDensity, or any scikit-learn estimator with
``score_samples``) and follows ``IsolationForest`` and ``LocalOutlierFactor(novelty=True)``:
``score_samples`` is higher for more normal points (here the log-density itself), ``offset_`` is
the ``contamination`` quantile of the training scores, ``decision_function = score_samples -
offset_`` is negative for outliers, and ``predict`` returns +1 (inlier) or -1 (outlier).

The training scores are out-of-fold: each training row is scored by a model fitted without it
(K-fold), as a new row would be. In-sample scores flatter the training rows (a KDE rates each
row with its own kernel included), which set the threshold too high for new data.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from sklearn.base import BaseEstimator, OutlierMixin, clone
from sklearn.model_selection import KFold, check_cv
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data


def check_contamination(contamination: Any) -> float:
    """Return ``contamination`` as a float in (0, 0.5], else a one-line ``ValueError``."""
    if isinstance(contamination, bool) or not isinstance(contamination, int | float | np.number):
        raise ValueError(f"contamination must be a number in (0, 0.5], got {contamination!r}")
    if not 0 < contamination <= 0.5:
        raise ValueError(f"contamination must lie in (0, 0.5], got {contamination!r}")
    return float(contamination)


QUANTILE_LEVELS = np.linspace(0.0, 0.5, 501)
"""Levels at which a run records its training log-densities (``train`` writes them to
``metrics.json``), so ``densitylab score --contamination`` can set an offset later."""


def outlier_offset(train_scores: np.ndarray, contamination: float) -> float:
    """The threshold below which a ``contamination`` fraction of the training scores lie."""
    return float(np.quantile(train_scores, check_contamination(contamination)))


def offset_from_quantiles(quantiles: list[float], contamination: float) -> float:
    """:func:`outlier_offset` from training quantiles recorded at ``QUANTILE_LEVELS``."""
    if len(quantiles) != len(QUANTILE_LEVELS):
        raise ValueError("the recorded training quantiles do not match this densitylab version")
    return float(np.interp(check_contamination(contamination), QUANTILE_LEVELS, quantiles))


def out_of_fold_scores(estimator: Any, X: ArrayLike, cv: Any = 5, random_state: int = 0,
                       sample_weight: ArrayLike | None = None) -> np.ndarray:
    """Log-density of each row of ``X`` under a clone of ``estimator`` fitted on the other
    folds: scores of the training data as new data would get them. ``cv``: a number of
    shuffled folds, or any scikit-learn splitter or list of ``(train, test)`` indices.

    An estimator that recorded such scores when it was fitted on these very rows (AutoDensity,
    from its cross-validation: ``recorded_out_of_fold``) gives them without refitting.
    """
    recorded = getattr(estimator, "recorded_out_of_fold", None)
    if callable(recorded):
        scores = recorded(X)
        if scores is not None:
            return scores
    n = len(X)
    if isinstance(cv, int | np.integer) and not isinstance(cv, bool):
        if n < 2 * cv:
            raise ValueError(f"out-of-fold scores need at least {2 * cv} rows for {cv} folds, "
                             f"got {n}")
        cv = KFold(int(cv), shuffle=True, random_state=random_state)
    scores = np.full(n, np.nan)
    take = (lambda rows: X.iloc[rows]) if hasattr(X, "iloc") else (lambda rows: X[rows])
    for train, test in check_cv(cv).split(np.zeros((n, 1))):
        weights = {} if sample_weight is None else {
            "sample_weight": np.asarray(sample_weight)[train]}
        fold = clone(estimator).fit(take(train), **weights)
        scores[test] = fold.score_samples(take(test))
    if np.isnan(scores).any():
        raise ValueError("the folds of cv leave some rows unscored: every row must be tested once")
    return scores


class OutlierDetector(OutlierMixin, BaseEstimator):
    """Flag points of low density under a fitted density model.

    Args:
        estimator: a density estimator with ``fit`` and ``score_samples`` (log-density);
            default ``densitylab.KDE(bandwidth="cv")``. It is cloned and fitted by :meth:`fit`,
            unless ``prefit``.
        contamination: the expected fraction of outliers in the training data, in (0, 0.5]:
            ``offset_`` is that quantile of the out-of-fold training log-densities.
        prefit: ``estimator`` is already fitted (on the ``X`` given to :meth:`fit`): it is used
            as it is, and ``fit`` only sets the threshold.
        cv: folds of the out-of-fold scores (at least 2), or a scikit-learn splitter.
        random_state: seeds the folds.

    Attributes:
        estimator_: the fitted density model. offset_: the threshold.
        training_scores_: the out-of-fold log-density of every training row.

    Example:
        >>> import numpy as np, densitylab as dl
        >>> x = np.random.default_rng(0).normal(size=(500, 2))
        >>> det = dl.OutlierDetector(dl.KDE(), contamination=0.05).fit(x)
        >>> det.predict([[0.0, 0.0], [6.0, 6.0]]).tolist()
        [1, -1]
        >>> det.top(1, [[0.0, 0.0], [6.0, 6.0], [0.5, 0.5]]).tolist()
        [1]
    """

    def __init__(self, estimator: Any = None, contamination: float = 0.01, prefit: bool = False,
                 cv: int = 5, random_state: int = 0) -> None:
        self.estimator = estimator
        self.contamination = contamination
        self.prefit = prefit
        self.cv = cv
        self.random_state = random_state

    def fit(self, X: ArrayLike, y: Any = None,
            sample_weight: ArrayLike | None = None) -> OutlierDetector:
        """Fit the density model on ``X`` (unless ``prefit``) and set ``offset_`` from the
        out-of-fold log-densities of ``X``."""
        check_contamination(self.contamination)
        if isinstance(self.cv, bool) or (isinstance(self.cv, int | np.integer) and self.cv < 2):
            raise ValueError(f"cv must be an integer >= 2 or a splitter, got {self.cv!r}")
        x = self._rows(X, reset=True)
        if len(x) < 2:
            raise ValueError(f"fit needs at least 2 rows, got {len(x)}")
        if sample_weight is not None:
            sample_weight = _check_sample_weight(sample_weight, np.zeros((len(x), 1)))
            if not sample_weight.sum() > 0:
                raise ValueError("sample_weight is zero for every row: no row to fit")
        if self.estimator is None:
            if self.prefit:
                raise ValueError("prefit=True needs a fitted estimator")
            from densitylab.kde import KDE

            base = KDE(bandwidth="cv")
        else:
            base = self.estimator
        if not hasattr(base, "score_samples"):
            raise ValueError(f"{type(base).__name__} has no score_samples: it is not a density "
                             "estimator")
        weights = {} if sample_weight is None else {"sample_weight": sample_weight}
        if self.prefit:
            check_is_fitted(base)
            self.estimator_ = base
        else:
            self.estimator_ = clone(base).fit(self._named(x), **weights)
        self.training_scores_ = out_of_fold_scores(
            self.estimator_ if self.prefit else base, self._as_fitted(x), self.cv,
            self.random_state, sample_weight)
        self.offset_ = outlier_offset(self.training_scores_, self.contamination)
        return self

    def _rows(self, X: ArrayLike, reset: bool = False) -> np.ndarray:
        """``X`` as float64 rows, or, for a table holding text (the labels of categorical
        columns, for a :class:`~densitylab.CategoricalDensity` or an AutoDensity of such a
        table), as an object array whose columns the model reads."""
        from densitylab._labels import holds_categories, table_rows

        if not holds_categories(X, None):
            return validate_data(self, X, dtype=np.float64, ensure_min_samples=2 if reset
                                 else 1, reset=reset)
        rows, names = table_rows(X)
        if reset:
            self.n_features_in_ = rows.shape[1]
            if names is not None:
                self.feature_names_in_ = np.asarray(names, dtype=object)
            elif hasattr(self, "feature_names_in_"):
                del self.feature_names_in_
        elif rows.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {rows.shape[1]} columns; the detector was fitted on "
                             f"{self.n_features_in_}")
        return rows

    def _as_fitted(self, x: np.ndarray) -> Any:
        """``x`` as the model was fitted: a DataFrame of its column names if it has them."""
        return _frame(x, getattr(self.estimator_, "feature_names_in_", None))

    def _named(self, x: np.ndarray) -> Any:
        """Training rows for the model to fit: a table holding labels keeps its column names
        (the model's samples then carry them)."""
        names = getattr(self, "feature_names_in_", None)
        return _frame(x, names) if x.dtype == object else x

    def score_samples(self, X: ArrayLike) -> np.ndarray:
        """Log-density of each row: higher is more normal."""
        check_is_fitted(self)
        x = self._rows(X)
        return np.asarray(self.estimator_.score_samples(self._as_fitted(x)), dtype=np.float64)

    def decision_function(self, X: ArrayLike) -> np.ndarray:
        """``score_samples - offset_``: negative for outliers, positive for inliers."""
        return self.score_samples(X) - self.offset_

    def predict(self, X: ArrayLike) -> np.ndarray:
        """+1 for inliers, -1 for outliers (``decision_function < 0``)."""
        return np.where(self.decision_function(X) < 0, -1, 1)

    def top(self, k: int, X: ArrayLike) -> np.ndarray:
        """Row indices of the ``k`` most anomalous rows of ``X`` (lowest log-density first)."""
        from densitylab._validation import check_positive_int

        k = check_positive_int(k, "k")
        return most_anomalous(self.score_samples(X), k)


def _frame(x: np.ndarray, names: Any) -> Any:
    """``x`` as a DataFrame of ``names`` (labels stay text, numbers numbers), or itself."""
    if names is None:
        return x
    import pandas as pd

    return pd.DataFrame(x, columns=list(names)).infer_objects()


def most_anomalous(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` lowest ``scores``, lowest first (ties by row order)."""
    return np.argsort(scores, kind="stable")[:k]

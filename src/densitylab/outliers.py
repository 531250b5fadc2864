"""Anomaly and novelty detection from any density estimator, with scikit-learn's conventions.

A point is an outlier when the model gives it a low density. :class:`OutlierDetector` wraps a
densitylab estimator (KDE, FlowDensity, AutoDensity, or any scikit-learn estimator with
``score_samples``) and follows ``IsolationForest`` and ``LocalOutlierFactor(novelty=True)``:
``score_samples`` is higher for more normal points (here the log-density itself), ``offset_`` is
the ``contamination`` quantile of the training scores, ``decision_function = score_samples -
offset_`` is negative for outliers, and ``predict`` returns +1 (inlier) or -1 (outlier).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from sklearn.base import BaseEstimator, OutlierMixin, clone
from sklearn.utils.validation import check_is_fitted


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


class OutlierDetector(OutlierMixin, BaseEstimator):
    """Flag points of low density under a fitted density model.

    Args:
        estimator: a density estimator with ``fit`` and ``score_samples`` (log-density);
            default ``densitylab.KDE(bandwidth="cv")``. It is cloned and fitted by :meth:`fit`.
        contamination: the expected fraction of outliers in the training data, in (0, 0.5]:
            ``offset_`` is that quantile of the training log-densities.

    Example:
        >>> import numpy as np, densitylab as dl
        >>> x = np.random.default_rng(0).normal(size=(500, 2))
        >>> det = dl.OutlierDetector(dl.KDE(), contamination=0.05).fit(x)
        >>> det.predict([[0.0, 0.0], [6.0, 6.0]]).tolist()
        [1, -1]
    """

    def __init__(self, estimator: Any = None, contamination: float = 0.01) -> None:
        self.estimator = estimator
        self.contamination = contamination

    def fit(self, X: ArrayLike, y: Any = None) -> OutlierDetector:
        """Fit the density model on ``X`` and set ``offset_`` from its training log-densities."""
        check_contamination(self.contamination)
        if self.estimator is None:
            from densitylab.kde import KDE

            base = KDE(bandwidth="cv")
        else:
            base = self.estimator
        if not hasattr(base, "score_samples"):
            raise ValueError(f"{type(base).__name__} has no score_samples: it is not a density "
                             "estimator")
        self.estimator_ = clone(base).fit(X)
        self.offset_ = outlier_offset(self.estimator_.score_samples(X), self.contamination)
        self.n_features_in_ = self.estimator_.n_features_in_
        return self

    def score_samples(self, X: ArrayLike) -> np.ndarray:
        """Log-density of each row: higher is more normal."""
        check_is_fitted(self)
        return np.asarray(self.estimator_.score_samples(X), dtype=np.float64)

    def decision_function(self, X: ArrayLike) -> np.ndarray:
        """``score_samples - offset_``: negative for outliers, positive for inliers."""
        return self.score_samples(X) - self.offset_

    def predict(self, X: ArrayLike) -> np.ndarray:
        """+1 for inliers, -1 for outliers (``decision_function < 0``)."""
        return np.where(self.decision_function(X) < 0, -1, 1)

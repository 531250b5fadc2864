"""Rows with missing cells (NaN), scored by the model's marginal over the observed columns.

A Gaussian kernel's or a Gaussian component's marginal over some coordinates is again a
Gaussian (the sub-vector of its mean, the sub-block of its covariance), so a KDE and a Gaussian
mixture give the exact marginal density of the observed cells of a row: the log-likelihood of
what was measured, with the rest integrated out. Rows are grouped by their pattern of missing
cells and each group is scored by the marginal model of its observed columns.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Marginal = Callable[[list[int]], Callable[[np.ndarray], np.ndarray]]
"""``marginal(observed columns)`` -> the log-density of rows restricted to those columns."""


def marginal_log_density(x: np.ndarray, marginal: Marginal) -> np.ndarray:
    """Log-density of each row of ``x`` ``(n, d)`` over its observed (non-NaN) cells; a row
    with no observed cell gets 0 (the marginal over nothing is 1)."""
    missing = np.isnan(x)
    out = np.zeros(len(x))
    patterns, inverse = np.unique(missing, axis=0, return_inverse=True)
    inverse = np.ravel(inverse)
    for k, pattern in enumerate(patterns):
        observed = [int(j) for j in np.flatnonzero(~pattern)]
        if observed:
            rows = np.flatnonzero(inverse == k)
            out[rows] = marginal(observed)(x[np.ix_(rows, observed)])
    return out


def gaussian_mixture_marginal(weights: np.ndarray, means: np.ndarray,
                              covariances: np.ndarray) -> Marginal:
    """The marginal of the mixture ``sum_c w_c N(mean_c, cov_c)`` (full covariances
    ``(k, d, d)``) on any columns."""
    from scipy.special import logsumexp
    from scipy.stats import multivariate_normal

    def on(observed: list[int]) -> Callable[[np.ndarray], np.ndarray]:
        def log_density(rows: np.ndarray) -> np.ndarray:
            terms = [np.log(w) + multivariate_normal(m[observed],
                                                     c[np.ix_(observed, observed)]).logpdf(rows)
                     for w, m, c in zip(weights, means, covariances, strict=True)]
            return logsumexp(np.reshape(terms, (len(weights), len(rows))), axis=0)

        return log_density

    return on


def full_covariances(mixture) -> np.ndarray:
    """A fitted scikit-learn ``GaussianMixture``'s covariances as ``(k, d, d)`` matrices,
    whatever its ``covariance_type``."""
    cov, k, d = mixture.covariances_, len(mixture.weights_), mixture.means_.shape[1]
    expand = {
        "full": lambda: cov,
        "tied": lambda: np.broadcast_to(cov, (k, d, d)),
        "diag": lambda: np.stack([np.diag(c) for c in cov]),
        "spherical": lambda: np.stack([c * np.eye(d) for c in cov]),
    }
    return np.asarray(expand[mixture.covariance_type]())

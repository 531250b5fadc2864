"""Gaussian mixtures chosen the usual way: scikit-learn's ``GaussianMixture`` for every number
of components and covariance type, the one with the lowest Bayesian information criterion kept.
One search for every place that needs one (``AutoDensity``'s candidate, the mixture base of a
flow, the scikit-learn baseline of the real-data study)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from densitylab import threads

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")
# scikit-learn's EM on fewer rows runs on one BLAS thread: its products are too small to share
# (on a busy machine two spinning BLAS threads made the 800-row search 20x slower than one)
ROWS_PER_THREAD = 50_000


def select_by_bic(
    x: np.ndarray, max_components: int = 10, covariance_types: Sequence[str] = COVARIANCE_TYPES,
    reg_covar: float = 1e-6, seed: int = 0,
):
    """The lowest-BIC ``GaussianMixture`` of ``x`` over ``k = 1..max_components`` (at least two
    points per component) and ``covariance_types``, and every BIC as ``{(type, k): bic}``."""
    from sklearn.mixture import GaussianMixture

    unknown = [t for t in covariance_types if t not in COVARIANCE_TYPES]
    if unknown or not covariance_types:
        raise ValueError(f"unknown covariance type(s) {unknown or covariance_types!r}; "
                         f"choose from {', '.join(COVARIANCE_TYPES)}")
    scores: dict[tuple[str, int], float] = {}
    best, best_bic = None, math.inf
    with threads.budget(work=len(x), grain=ROWS_PER_THREAD):
        for kind in covariance_types:
            for k in range(1, max(1, min(max_components, len(x) // 2)) + 1):
                mixture = GaussianMixture(k, covariance_type=kind, reg_covar=reg_covar,
                                          random_state=seed).fit(x)
                scores[(kind, k)] = bic = float(mixture.bic(x))
                if bic < best_bic:
                    best, best_bic = mixture, bic
    return best, scores

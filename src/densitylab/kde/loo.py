"""Leave-one-out log-likelihood of a KDE, the criterion the ``"cv"`` bandwidth rules maximise.

``log f_{-i}(x_i) = log(sum_{j != i} w_j N(x_i; x_j, H H^T) / (1 - w_i))``: each point scored by
the estimate of all the others, summed exactly by the tree engine with each point leaving itself
out. The kd-tree is built once per kernel shape and rescaled for every width tried.

A point is left out with all its copies (rows equal, or equal to ``1e-6`` standard deviations:
:func:`densitylab._ties.tie_groups`): copies are merged into one point carrying their summed
weight first. Otherwise a copy left in scores its twin at distance zero, and the criterion grows
without bound as the kernel shrinks.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from scipy.linalg import solve_triangular

from densitylab.kde.engines import Index, tree_log_kernel_sums

__all__ = ["kfold_score", "loo_scorer", "merge_copies"]

_LOG_2PI = math.log(2.0 * math.pi)


def merge_copies(x: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(points, weights)`` with every group of copies merged into one point (their weighted
    mean) carrying their summed weight; ``x`` and ``weights`` unchanged when there are none."""
    from densitylab._ties import tie_groups

    groups = tie_groups(x)
    count = int(groups.max()) + 1 if len(groups) else 0
    if count == len(x):
        return x, weights
    merged_w = np.bincount(groups, weights=weights, minlength=count)
    merged = np.stack([np.bincount(groups, weights=weights * x[:, j], minlength=count)
                       for j in range(x.shape[1])], axis=1) / merged_w[:, None]
    return merged, merged_w


def loo_scorer(x: np.ndarray, weights: np.ndarray, chol: np.ndarray) -> Callable[[float], float]:
    """``score(c)``: the weighted mean leave-one-out log-likelihood with ``H = c * chol``, each
    point left out with its copies (see :func:`merge_copies`).

    ``x`` ``(n, d)`` are the points, ``weights`` ``(n,)`` their normalised weights and ``chol`` a
    lower-triangular ``(d, d)`` factor; the index is built once and rescaled for each ``c``.
    """
    x, weights = merge_copies(x, weights)
    if len(x) < 2:
        raise ValueError("leave-one-out needs at least 2 distinct points")
    d = x.shape[1]
    u = solve_triangular(chol, (x - weights @ x).T, lower=True).T
    index = Index.build(np.ascontiguousarray(u), np.log(weights))
    w = np.exp(index.log_w)
    const = float(np.dot(w, np.log1p(-w))) + 0.5 * d * _LOG_2PI
    const += float(np.sum(np.log(np.abs(np.diag(chol)))))

    def score(c: float) -> float:
        sums = tree_log_kernel_sums(index.scaled(1.0 / c), None)
        return float(np.dot(w, sums)) - const - d * math.log(c)

    return score


def kfold_score(x: np.ndarray, weights: np.ndarray, chol: np.ndarray, folds: int,
                seed: int = 0) -> float:
    """Weighted mean held-out log-likelihood of ``H = chol`` over ``folds`` folds that keep
    every copy of a point in one fold (:func:`densitylab._ties.grouped_kfold`): each fold
    scored by the KDE of the others. What the ``"cv"`` rule compares shapes by where ties
    would decide a leave-one-out comparison."""
    from densitylab._ties import grouped_kfold, tie_groups

    d = x.shape[1]
    u = solve_triangular(chol, (x - weights @ x).T, lower=True).T
    log_norm = 0.5 * d * _LOG_2PI + float(np.sum(np.log(np.abs(np.diag(chol)))))
    total = 0.0
    for test in grouped_kfold(tie_groups(x), folds, seed):
        train = np.ones(len(x), dtype=bool)
        train[test] = False
        w_train = weights[train] / weights[train].sum()
        index = Index.build(np.ascontiguousarray(u[train]), np.log(w_train))
        sums = tree_log_kernel_sums(index, np.ascontiguousarray(u[test]))
        total += float(np.dot(weights[test], sums - log_norm))
    return total / float(weights.sum())

"""Leave-one-out log-likelihood of a KDE, the criterion the ``"cv"`` bandwidth rules maximise.

``log f_{-i}(x_i) = log(sum_{j != i} w_j N(x_i; x_j, H H^T) / (1 - w_i))``: each point scored by
the estimate of all the others, summed exactly by the tree engine with each point leaving itself
out. The kd-tree is built once per kernel shape and rescaled for every width tried.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from scipy.linalg import solve_triangular

from densitylab.kde.engines import Index, tree_log_kernel_sums

__all__ = ["loo_scorer"]

_LOG_2PI = math.log(2.0 * math.pi)


def loo_scorer(x: np.ndarray, weights: np.ndarray, chol: np.ndarray) -> Callable[[float], float]:
    """``score(c)``: the weighted mean leave-one-out log-likelihood with ``H = c * chol``.

    ``x`` ``(n, d)`` are the points, ``weights`` ``(n,)`` their normalised weights and ``chol`` a
    lower-triangular ``(d, d)`` factor; the index is built once and rescaled for each ``c``.
    """
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

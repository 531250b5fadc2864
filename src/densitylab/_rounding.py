"""Columns of rounded measurements: detection, and dequantisation by uniform noise.

Real measurements are often rounded (lengths to 0.1 cm, counts, pixel levels), so a column holds
few distinct values, each repeated. A density fitted to such a column can collapse onto the
repeated values (a kernel or a flow shrinks towards point masses and the likelihood grows without
bound). The remedy is to treat each recorded value ``v`` as the rounding of a true value in
``[v - step/2, v + step/2]``: add uniform noise of that width before fitting (dequantisation), or
keep every kernel at least as wide as that noise.

References:
    Uria, B., Murray, I. and Larochelle, H. (2013). RNADE: The real-valued neural autoregressive
    density-estimator. NeurIPS (uniform dequantisation of discrete data).
"""

from __future__ import annotations

import numpy as np

MAX_DISTINCT_FRACTION = 0.5
"""A column is read as rounded when it holds at most this fraction of distinct values."""


def rounding_steps(
    x: np.ndarray, max_distinct_fraction: float = MAX_DISTINCT_FRACTION
) -> np.ndarray:
    """Rounding step of each column of ``x`` ``(n, d)``, ``0.0`` for a column read as continuous.

    A column is rounded when it has at most ``max_distinct_fraction * n`` distinct values (and at
    least two); its step is the smallest gap between two neighbouring distinct values.

    Example:
        >>> rounding_steps(np.array([[0.1, 1.0], [0.2, 1.5], [0.1, 2.25], [0.2, 3.0]]))
        array([0.1, 0. ])
    """
    steps = np.zeros(x.shape[1])
    for j in range(x.shape[1]):
        values = np.unique(x[:, j])
        if 2 <= len(values) <= max_distinct_fraction * len(x):
            steps[j] = float(np.min(np.diff(values)))
    return steps


def dequantise(x: np.ndarray, steps: np.ndarray, seed: int) -> np.ndarray:
    """``x`` plus independent uniform noise on ``[-step/2, step/2]`` in each rounded column."""
    rng = np.random.default_rng(seed)
    return x + (rng.random(x.shape) - 0.5) * steps

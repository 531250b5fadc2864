"""The defensive component of a cross-validated KDE: a wide Gaussian that bounds its tails.

A bandwidth chosen by leave-one-out likelihood fits the training points, and the data's own
covariance shapes the kernels (the ``"full"`` and ``"per-axis"`` shapes of
:mod:`densitylab.kde.bandwidth`). On strongly correlated columns that covariance has directions
of almost no spread, estimated from the very points that score it, so a held-out point slightly
off such a direction lies hundreds of kernel widths from every kernel: on scikit-learn's
breast-cancer table (30 columns) one held-out row got -543 nats where the BIC mixture's worst
was -412 and a diagonal Gaussian gives about -250. Leave-one-out cannot see this (every
training point helped shape the covariance), and one such point costs the mean more than the
best shape gains.

The guard is the defensive mixture of importance sampling (Hesterberg 1995)::

    f(x) = (1 - eps) * KDE(x) + eps * N(x; m, diag(s^2))

with ``m`` and ``s^2`` the KDE's own mean and per-axis variance (weighted data variance plus the
kernel's), so ``N`` is the estimate with its correlations and modes forgotten: as wide as the
estimate along every axis, and no narrower in any direction. Everywhere ``log f >= log KDE +
log(1 - eps)``, so the guard costs at most ``-log(1 - eps)`` (0.01 nats for ``eps = 0.01``)
where the data are, leaves the chosen bandwidth unchanged, and bounds every point's
log-density below by ``log eps`` plus the Gaussian's, which is finite and moderate within a few
standard deviations of the data along each axis. On breast-cancer (3 folds) the worst held-out
value went from -543 to -128 nats and the mean from 29.60 to 31.72 (the absurd points had
dominated it); see ``benchmarks/RESULTS.md``, issue #34.

References:
    Hesterberg, T. (1995). Weighted average importance sampling and defensive mixture
    distributions. Technometrics 37(2), 185-194.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["GUARD_WEIGHT", "Guard", "check_guard_weight"]

GUARD_WEIGHT = 0.01
"""The defensive weight ``eps`` of ``KDE(bandwidth="cv")``: costs at most 0.01 nats per point,
and adds ``log(0.01) = -4.6`` nats to the Gaussian's log-density as the floor of the estimate."""

_LOG_2PI = math.log(2.0 * math.pi)


def check_guard_weight(guard: object) -> float | None:
    """``guard`` as a float in ``[0, 1)``, ``None`` left as is (the rule's default), or a
    ``ValueError``."""
    if guard is None:
        return None
    if isinstance(guard, bool) or not isinstance(guard, int | float | np.integer | np.floating):
        raise ValueError(f"guard must be None or a number in [0, 1), got {guard!r}")
    if not 0.0 <= float(guard) < 1.0:
        raise ValueError(f"guard must be None or a number in [0, 1), got {guard!r}")
    return float(guard)


@dataclass(frozen=True)
class Guard:
    """The wide component ``N(mean, diag(sd^2))`` and its weight ``weight`` (``eps``)."""

    weight: float
    mean: np.ndarray
    sd: np.ndarray

    @classmethod
    def of(cls, x: np.ndarray, weights: np.ndarray, h: np.ndarray, weight: float) -> Guard:
        """The guard of the KDE with points ``x`` ``(n, d)``, normalised ``weights`` and
        bandwidth ``h``: the estimate's mean and per-axis standard deviation (computed on the
        data divided by their largest deviation, so huge or tiny scales neither over- nor
        underflow)."""
        mean = weights @ x
        deviation = x - mean
        scale = np.max(np.abs(deviation), axis=0)
        scale = np.where(scale > 0, scale, 1.0)
        data_sd = scale * np.sqrt(weights @ (deviation / scale) ** 2)
        kernel_sd = np.linalg.norm(h, axis=1)  # sqrt(diag(H H^T)) without squaring H
        return cls(weight, mean, np.hypot(data_sd, kernel_sd))

    def log_density(self, y: np.ndarray) -> np.ndarray:
        """``log N(y; mean, diag(sd^2))`` per row of ``y``."""
        with np.errstate(over="ignore"):
            z2 = np.sum(((y - self.mean) / self.sd) ** 2, axis=1)
        return -0.5 * z2 - float(np.sum(np.log(self.sd))) - 0.5 * len(self.sd) * _LOG_2PI

    def mix(self, log_kernels: np.ndarray, y: np.ndarray) -> np.ndarray:
        """``log((1 - eps) exp(log_kernels) + eps N(y))``: the guarded log-density of rows
        ``y`` whose kernel sums are ``log_kernels``."""
        return np.logaddexp(math.log1p(-self.weight) + log_kernels,
                            math.log(self.weight) + self.log_density(y))

    def sample_into(self, points: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """``points`` (draws of the kernels) with each row replaced, with probability ``eps``,
        by a draw of the Gaussian."""
        wide = rng.random(len(points)) < self.weight
        z = rng.standard_normal((int(wide.sum()), points.shape[1]))
        points[wide] = self.mean + z * self.sd
        return points

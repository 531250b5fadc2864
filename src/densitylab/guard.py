"""The defensive component of densitylab's estimators: a wide Gaussian that bounds their tails.

A density fitted by likelihood can be absurdly small a little off its training data. A KDE
whose kernels are shaped like the data's covariance has directions of almost no spread,
estimated from the very points that score it: on scikit-learn's breast-cancer table (30
columns) one held-out row got -543 nats where the BIC mixture's worst was -412. A flow's tails
are whatever its layers made of the base's: on digits-64 the tabular flow, its mixture-base and
MAF variants gave held-out rows -712 to -721 nats (the mixture: -488), the MAF on breast-cancer
-1183 (the mixture: -412). One such point costs the mean more than the best fit gains.

The guard is the defensive mixture of importance sampling (Hesterberg 1995)::

    f(x) = (1 - eps) * p(x) + eps * N(x; m, diag(s^2))

with ``m`` the data's mean and ``s`` twice the model's own per-axis spread (:data:`WIDEN`), so
``N`` is the estimate with its correlations and modes forgotten and its spread doubled. For a
KDE the spread is the data's standard deviation combined with the kernel's,
``s = sqrt((2 sd)^2 + diag(H H^T))`` (:meth:`Guard.of_kde`); for a flow, which has no kernel,
``s = 2 sd`` (:meth:`Guard.of_data`). Everywhere ``log f >= log p + log(1 - eps)``, so the guard
costs at most ``-log(1 - eps)`` (0.01 nats for ``eps = 0.01``) where the data are, and it bounds
every point's log-density below by ``log eps`` plus the Gaussian's, which is finite and moderate
within a few standard deviations of the data along each axis. ``f`` integrates to 1 when ``p``
does, and is sampled exactly: with probability ``eps`` a draw of the Gaussian, else one of ``p``.

The width, one rule for both, measured on the seven sets of ``benchmarks/real_data.py`` (3 folds;
``benchmarks/RESULTS.md``, issue #34, where the commands are):

- **Flows**: with the data's own ``sd`` (a width of 1) the digits-64 flow's worst held-out value
  stays 95 nats below the BIC mixture's on a fold; with ``2 sd`` the worst values of the three
  flows on digits-64, wine and breast-cancer go from -712/-721/-713, -56/-118/-94 and
  -171/-410/-1183 to -282, -35 and -70 (the mixture: -488, -55, -412), and no mean falls (the
  MAF's on breast-cancer rises from 32.92 to 36.82).
- **KDE**: the estimate's own spread (width 1) already met the target (breast-cancer -128.5,
  digits-64 -332); with the data's part doubled the worst values rise further on every set
  (-63 and -255) and the means move by -0.04 to +0.49 nats (breast-cancer 31.72 -> 32.21).

References:
    Hesterberg, T. (1995). Weighted average importance sampling and defensive mixture
    distributions. Technometrics 37(2), 185-194.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["GUARD_WEIGHT", "WIDEN", "Guard", "check_guard_weight", "guard_weight"]

GUARD_WEIGHT = 0.01
"""The defensive weight ``eps`` where a guard is on by default (``KDE(bandwidth="cv")``, the
tabular flow recipes): costs at most 0.01 nats per point, and adds ``log(0.01) = -4.6`` nats to
the Gaussian's log-density as the floor of the estimate."""

WIDEN = 2.0
"""The Gaussian's width in the data's standard deviations, per axis (see the module text)."""

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


def _spread(x: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted mean and per-axis standard deviation of ``x`` ``(n, d)``, computed on the data
    divided by their largest deviation, so huge or tiny scales neither over- nor underflow."""
    mean = weights @ x
    deviation = x - mean
    scale = np.max(np.abs(deviation), axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    return mean, scale * np.sqrt(weights @ (deviation / scale) ** 2)


def guard_weight(guard: object, on_by_default: bool) -> float:
    """The weight in use: ``guard`` when set, else :data:`GUARD_WEIGHT` where the estimator's
    rule turns the guard on by default (``KDE(bandwidth="cv")``, the tabular flow recipes) and
    0 elsewhere; a ``ValueError`` outside ``[0, 1)``."""
    eps = check_guard_weight(guard)
    if eps is None:
        return GUARD_WEIGHT if on_by_default else 0.0
    return eps


@dataclass(frozen=True)
class Guard:
    """The wide component ``N(mean, diag(sd^2))`` and its weight ``weight`` (``eps``)."""

    weight: float
    mean: np.ndarray
    sd: np.ndarray

    @classmethod
    def of_kde(cls, x: np.ndarray, weights: np.ndarray, h: np.ndarray, weight: float) -> Guard:
        """The guard of the KDE with points ``x`` ``(n, d)``, normalised ``weights`` and
        bandwidth ``h``: the data's mean, and per axis :data:`WIDEN` times their standard
        deviation combined with the kernel's."""
        mean, data_sd = _spread(x, weights)
        kernel_sd = np.linalg.norm(h, axis=1)  # sqrt(diag(H H^T)) without squaring H
        return cls(weight, mean, np.hypot(WIDEN * data_sd, kernel_sd))

    @classmethod
    def of_data(cls, x: np.ndarray, weight: float, weights: np.ndarray | None = None) -> Guard:
        """The guard of a model trained on ``x`` ``(n, d)`` (rows weighted by ``weights``,
        ``None``: equally) without kernels of its own (a flow): the data's mean and
        :data:`WIDEN` times their standard deviation per axis (axes of no spread get a width
        of 1, so the Gaussian stays a density)."""
        w = np.full(len(x), 1.0) if weights is None else np.asarray(weights, dtype=np.float64)
        mean, sd = _spread(x, w / w.sum())
        return cls(weight, mean, WIDEN * np.where(sd > 0, sd, 1.0))

    def log_density(self, y: np.ndarray) -> np.ndarray:
        """``log N(y; mean, diag(sd^2))`` per row of ``y``."""
        with np.errstate(over="ignore"):
            z2 = np.sum(((y - self.mean) / self.sd) ** 2, axis=1)
        return -0.5 * z2 - float(np.sum(np.log(self.sd))) - 0.5 * len(self.sd) * _LOG_2PI

    def mix(self, log_p: np.ndarray, y: np.ndarray) -> np.ndarray:
        """``log((1 - eps) exp(log_p) + eps N(y))``: the guarded log-density of rows ``y``
        whose unguarded log-densities are ``log_p``."""
        return np.logaddexp(math.log1p(-self.weight) + log_p,
                            math.log(self.weight) + self.log_density(y))

    def sample_into(self, points: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """``points`` (draws of the unguarded model) with each row replaced, with probability
        ``eps``, by a draw of the Gaussian."""
        wide = rng.random(len(points)) < self.weight
        z = rng.standard_normal((int(wide.sum()), points.shape[1]))
        points[wide] = self.mean + z * self.sd
        return points

    def summary(self) -> dict[str, Any]:
        """The guard as JSON-ready numbers (for a saved model's fitted summary)."""
        return {"weight": self.weight, "mean": self.mean.tolist(), "sd": self.sd.tolist()}

    @classmethod
    def from_summary(cls, summary: Any, dim: int) -> Guard | None:
        """The guard a :meth:`summary` describes (``None``: no guard), checked: a weight in
        ``(0, 1)``, ``dim`` finite means and ``dim`` finite positive widths, else a
        ``ValueError``."""
        if summary is None:
            return None
        if not isinstance(summary, dict) or set(summary) != {"weight", "mean", "sd"}:
            raise ValueError("'guard' must hold exactly weight, mean and sd")
        weight = check_guard_weight(summary["weight"])
        if weight is None or weight == 0.0:
            raise ValueError("the guard's weight must lie in (0, 1)")
        try:
            mean = np.asarray(summary["mean"], dtype=np.float64)
            sd = np.asarray(summary["sd"], dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError("the guard's mean and sd must be lists of numbers") from None
        if mean.shape != (dim,) or not np.all(np.isfinite(mean)):
            raise ValueError(f"the guard's mean must be {dim} finite numbers")
        if sd.shape != (dim,) or not np.all(np.isfinite(sd)) or not np.all(sd > 0):
            raise ValueError(f"the guard's sd must be {dim} finite positive numbers")
        return cls(weight, mean, sd)

"""Noisy curves: two moons, the Swiss roll and two spirals.

Each density is a 1-D integral of the noise kernel along the curve, evaluated with the
panel-pruned Gauss-Legendre rule of ``_quadrature`` (relative accuracy ~1e-10 near the data,
finite everywhere).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property

import numpy as np

from densitylab.datasets._base import Distribution, positive_float
from densitylab.datasets._quadrature import (
    CurveRule,
    box_gauss_log_kernel,
    gaussian_log_kernel,
    log_curve_density,
)
from densitylab.grids import Bounds

_PANEL_FRACTION = 2.0  # panel arc length / noise scale (16-point Gauss-Legendre: error ~1e-10)


def _unit(t: np.ndarray) -> np.ndarray:
    return np.stack([np.cos(t), np.sin(t)], axis=-1)


def _uniform_log_density(length: float) -> Callable[[np.ndarray], np.ndarray]:
    """Log-density ``-log(length)`` of a uniform curve parameter, as a function of ``t``."""

    def log_density(t: np.ndarray) -> np.ndarray:
        return np.full(np.shape(t), -np.log(length))

    return log_density


def _box(points: np.ndarray, margin: float) -> Bounds:
    lo, hi = points.min(axis=0) - margin, points.max(axis=0) + margin
    return ((float(lo[0]), float(hi[0])), (float(lo[1]), float(hi[1])))


class Moons(Distribution):
    """Two interleaving half circles with isotropic Gaussian noise (``make_moons``' population).

    Half the mass lies on the upper arc ``(cos t, sin t)``, half on the lower arc
    ``(1 - cos t, 0.5 - sin t)``, with ``t ~ U[0, pi]`` and noise ``N(0, noise^2 I)``.
    Entropy: midpoint rule on a grid (see ``Distribution._compute_entropy``).

    References:
        scikit-learn, ``sklearn.datasets.make_moons``.
    """

    description = "two noisy interleaving half circles (sklearn)"
    reference = "scikit-learn make_moons"

    def __init__(self, noise: float = 0.1) -> None:
        noise = positive_float(noise, "noise")
        super().__init__("moons", {"noise": noise})
        self.noise = noise

    @property
    def length_scale(self) -> float:
        return self.noise

    @staticmethod
    def _upper(t: np.ndarray) -> np.ndarray:
        return _unit(t)

    @staticmethod
    def _lower(t: np.ndarray) -> np.ndarray:
        return np.array([1.0, 0.5]) - _unit(t)

    @cached_property
    def _rule(self) -> CurveRule:
        log_density = _uniform_log_density(2.0 * np.pi)  # half the mass on each arc of length pi
        length = _PANEL_FRACTION * self.noise
        return CurveRule.along(self._upper, log_density, (0.0, np.pi), length) + CurveRule.along(
            self._lower, log_density, (0.0, np.pi), length
        )

    def _sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        t = rng.uniform(0.0, np.pi, n)
        lower = rng.random(n) < 0.5
        points = np.where(lower[:, None], self._lower(t), self._upper(t))
        return points + self.noise * rng.standard_normal((n, 2))

    def _log_prob(self, x: np.ndarray) -> np.ndarray:
        return log_curve_density(x, self._rule, gaussian_log_kernel(self.noise), self.noise)

    def bounds(self) -> Bounds:
        return _box(np.array([[-1.0, -0.5], [2.0, 1.0]]), 6.0 * self.noise)


class SwissRoll(Distribution):
    """FFJORD's 2-D Swiss roll: ``(t cos t, t sin t) / 5`` with ``t ~ U[1.5 pi, 4.5 pi]`` plus
    ``N(0, 0.2^2 I)`` noise (scikit-learn's roll with noise 1, x/z columns, divided by 5).

    Entropy: midpoint rule on a grid (see ``Distribution._compute_entropy``).

    References:
        Grathwohl et al., "FFJORD", ICLR 2019 (``toy_data.py``); sklearn ``make_swiss_roll``.
    """

    description = "noisy Swiss roll (FFJORD)"
    reference = "Grathwohl et al. 2019 (FFJORD)"
    noise = 0.2
    t_range = (1.5 * np.pi, 4.5 * np.pi)

    def __init__(self) -> None:
        super().__init__("swissroll")

    @property
    def length_scale(self) -> float:
        return self.noise

    @staticmethod
    def _curve(t: np.ndarray) -> np.ndarray:
        return t[..., None] * _unit(t) / 5.0

    @cached_property
    def _rule(self) -> CurveRule:
        t0, t1 = self.t_range
        log_density = _uniform_log_density(t1 - t0)
        return CurveRule.along(self._curve, log_density, self.t_range, _PANEL_FRACTION * self.noise)

    def _sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        t = rng.uniform(*self.t_range, n)
        return self._curve(t) + self.noise * rng.standard_normal((n, 2))

    def _log_prob(self, x: np.ndarray) -> np.ndarray:
        return log_curve_density(x, self._rule, gaussian_log_kernel(self.noise), self.noise)

    def bounds(self) -> Bounds:
        return _box(self._curve(np.linspace(*self.t_range, 2001)), 6.0 * self.noise)


class TwoSpirals(Distribution):
    """FFJORD's two spirals, point-symmetric copies of one noisy spiral.

    With ``s = ±1`` (probability 1/2 each), ``m = 3 pi sqrt(U)``, ``U ~ U[0, 1]`` (so ``m`` has
    density ``2 m / (3 pi)^2``), a uniform square offset ``V ~ U[0, 1/2]^2`` and noise
    ``N(0, 0.1^2 I)``: ``x = s ((-m cos m, m sin m) + V) / 3 + noise``.
    The density integrates the square-plus-Gaussian kernel (closed form via ``Φ``) along ``m``.
    Entropy: midpoint rule on a grid (see ``Distribution._compute_entropy``).

    References:
        Grathwohl et al., "FFJORD", ICLR 2019 (``toy_data.py``).
    """

    description = "two interleaved noisy spirals (FFJORD)"
    reference = "Grathwohl et al. 2019 (FFJORD)"
    noise = 0.1
    box = 0.5 / 3.0  # side of the uniform square offset, after the division by 3
    m_max = 3.0 * np.pi

    def __init__(self) -> None:
        super().__init__("2spirals")

    @property
    def length_scale(self) -> float:
        return self.noise

    @staticmethod
    def _curve(m: np.ndarray) -> np.ndarray:
        return m[..., None] * np.stack([-np.cos(m), np.sin(m)], axis=-1) / 3.0

    @cached_property
    def _rule(self) -> CurveRule:
        def log_density(m: np.ndarray) -> np.ndarray:
            return np.log(2.0 * m / self.m_max**2)

        centre = np.full(2, 0.5 * self.box)
        one = CurveRule.along(
            self._curve, log_density, (0.0, self.m_max), _PANEL_FRACTION * self.noise
        ).shifted(centre, np.log(0.5))
        return one + one.scaled(-1.0)

    def _sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        m = self.m_max * np.sqrt(rng.random(n))
        offset = self.box * rng.random((n, 2))
        sign = np.where(rng.random(n) < 0.5, 1.0, -1.0)[:, None]
        return sign * (self._curve(m) + offset) + self.noise * rng.standard_normal((n, 2))

    def _log_prob(self, x: np.ndarray) -> np.ndarray:
        kernel = box_gauss_log_kernel(self.box, self.noise)
        return log_curve_density(x, self._rule, kernel, self.noise, reach=self.box / np.sqrt(2.0))

    def bounds(self) -> Bounds:
        curve = self._curve(np.linspace(0.0, self.m_max, 2001))
        extent = np.abs(curve).max(axis=0) + self.box + 6.0 * self.noise
        return ((-float(extent[0]), float(extent[0])), (-float(extent[1]), float(extent[1])))

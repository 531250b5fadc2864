"""Concentric rings with Gaussian noise: the Rice density in closed form."""

from __future__ import annotations

import numpy as np
from scipy.special import i0e, logsumexp

from densitylab.datasets._base import Distribution, positive_float
from densitylab.grids import Bounds


class Rings(Distribution):
    """Mixture of circles of radius ``r_k`` (uniform angle) blurred by ``N(0, noise^2 I)``.

    Each ring has the Rice density
    ``p_k(x) = exp(-(|x| - r_k)^2 / (2 s^2)) i0e(|x| r_k / s^2) / (2 pi s^2)``
    (exact, evaluated in log-space with the scaled Bessel function so it stays finite).
    Entropy: the density is radial, so ``H = -2 pi ∫ p(rho) log p(rho) rho d rho`` is a 1-D
    integral, done with composite 16-point Gauss-Legendre panels of width ``noise / 2``
    (accurate to ~1e-12).
    """

    def __init__(
        self,
        name: str,
        radii: tuple[float, ...],
        noise: float,
        *,
        params: dict | None = None,
        description: str = "",
        reference: str = "",
    ) -> None:
        super().__init__(name, params, description, reference)
        self.radii = np.asarray(radii, dtype=np.float64)
        self.noise = positive_float(noise, "noise")

    @property
    def length_scale(self) -> float:
        return self.noise

    def _sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        r = self.radii[rng.integers(len(self.radii), size=n)]
        angle = rng.uniform(0.0, 2.0 * np.pi, n)
        ring = r[:, None] * np.column_stack([np.cos(angle), np.sin(angle)])
        return ring + self.noise * rng.standard_normal((n, 2))

    def _log_radial(self, rho: np.ndarray) -> np.ndarray:
        s2 = self.noise**2
        r = self.radii[None, :]
        rho = rho[:, None]
        terms = -0.5 * (rho - r) ** 2 / s2 + np.log(i0e(rho * r / s2))
        return logsumexp(terms, axis=1) - np.log(2.0 * np.pi * s2 * len(self.radii))

    def _log_prob(self, x: np.ndarray) -> np.ndarray:
        return self._log_radial(np.hypot(x[:, 0], x[:, 1]))

    def _compute_entropy(self) -> float:
        rho_max = self.radii.max() + 12.0 * self.noise
        n_panels = int(np.ceil(rho_max / (0.5 * self.noise)))
        edges = np.linspace(0.0, rho_max, n_panels + 1)
        nodes, weights = np.polynomial.legendre.leggauss(16)
        half = 0.5 * np.diff(edges)[:, None]
        rho = (0.5 * (edges[:-1] + edges[1:])[:, None] + half * nodes).ravel()
        w = (half * weights).ravel()
        log_p = self._log_radial(rho)
        return float(-2.0 * np.pi * np.sum(w * rho * np.exp(log_p) * log_p))

    def bounds(self) -> Bounds:
        r = float(self.radii.max() + 6.0 * self.noise)
        return ((-r, r), (-r, r))


def circles(noise: float = 0.1, factor: float = 0.8) -> Rings:
    """Population of scikit-learn's ``make_circles``: rings of radius 1 and ``factor`` with
    half the mass each, plus ``N(0, noise^2 I)``."""
    noise = positive_float(noise, "noise")
    factor = positive_float(factor, "factor", allow_zero=True)
    if factor >= 1.0:
        raise ValueError(f"factor must be in [0, 1), got {factor!r}")
    return Rings(
        "circles",
        (1.0, factor),
        noise,
        params={"noise": noise, "factor": factor},
        description="two noisy concentric circles (sklearn)",
        reference="scikit-learn make_circles",
    )


def rings() -> Rings:
    """FFJORD's four rings: radii 3, 2.25, 1.5, 0.75, equal mass, noise std 0.08 (the reference
    code spaces the angles evenly; its population law is the uniform angle used here)."""
    return Rings(
        "rings",
        (3.0, 2.25, 1.5, 0.75),
        0.08,
        description="4 noisy concentric rings (FFJORD)",
        reference="Grathwohl et al. 2019 (FFJORD)",
    )

"""The coursework spiral: a closed-form density summed over the preimages of polar coordinates."""

from __future__ import annotations

import numpy as np
from scipy.special import logsumexp

from densitylab.datasets._base import Distribution
from densitylab.grids import Bounds

_LEGENDRE = np.polynomial.legendre.leggauss(16)


def _gauss_legendre(edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights of the composite 16-point rule on consecutive ``edges``."""
    nodes, weights = _LEGENDRE
    half = 0.5 * np.diff(edges)[:, None]
    mid = 0.5 * (edges[:-1] + edges[1:])[:, None]
    return (mid + half * nodes).ravel(), (half * weights).ravel()


class Spiral(Distribution):
    """``theta ~ U[0, 4 pi]``, ``r | theta ~ N(theta / 2, 0.25)``, ``x = r (cos theta, sin theta)``.

    0.25 is the variance of ``r`` (standard deviation 0.5), as in the coursework.
    ``r`` may be negative, so a point ``x = rho (cos phi, sin phi)`` has four preimages in
    ``[0, 4 pi] x R``: ``(phi, rho)``, ``(phi + 2 pi, rho)``, ``(psi, -rho)`` and
    ``(psi + 2 pi, -rho)`` with ``psi = phi + pi (mod 2 pi)``. The density sums them, each
    divided by ``rho`` (the polar Jacobian): exact, with an integrable ``1 / rho`` peak at the
    origin (``+inf`` exactly there) and jumps across the x-axis, where the spiral starts and ends.

    Entropy: with ``q = rho p(x)`` the density of ``(rho, phi)``,
    ``H = -∫∫ q log q + ∫∫ q log rho`` over ``(0, inf) x [0, 2 pi)``: a smooth 2-D integral done
    with composite Gauss-Legendre rules (geometrically graded towards ``rho = 0`` for the log,
    split at the jumps ``phi = 0, pi``), accurate to ~1e-10.
    """

    description = "noisy spiral, KDE part (coursework)"
    reference = "coursework KDE spiral"
    variance = 0.25
    theta_max = 4.0 * np.pi

    def __init__(self) -> None:
        super().__init__("spiral")

    @property
    def length_scale(self) -> float:
        return float(np.sqrt(self.variance))

    def _sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        theta = rng.uniform(0.0, self.theta_max, n)
        r = 0.5 * theta + np.sqrt(self.variance) * rng.standard_normal(n)
        return r[:, None] * np.column_stack([np.cos(theta), np.sin(theta)])

    def _log_q(self, rho: np.ndarray, phi: np.ndarray) -> np.ndarray:
        """Log-density of the polar coordinates ``(rho > 0, phi in [0, 2 pi))``."""
        psi = np.mod(phi + np.pi, 2.0 * np.pi)
        r = np.stack([rho, rho, -rho, -rho], axis=-1)
        theta = np.stack([phi, phi + 2.0 * np.pi, psi, psi + 2.0 * np.pi], axis=-1)
        log_normal = -0.5 * (r - 0.5 * theta) ** 2 / self.variance
        log_norm = 0.5 * np.log(2.0 * np.pi * self.variance) + np.log(self.theta_max)
        return logsumexp(log_normal, axis=-1) - log_norm

    def _log_prob(self, x: np.ndarray) -> np.ndarray:
        rho = np.hypot(x[:, 0], x[:, 1])
        phi = np.mod(np.arctan2(x[:, 1], x[:, 0]), 2.0 * np.pi)
        with np.errstate(divide="ignore"):
            return self._log_q(rho, phi) - np.log(rho)

    def _compute_entropy(self) -> float:
        rho_max = 0.5 * self.theta_max + 14.0 * np.sqrt(self.variance)
        graded = 2.0 ** -np.arange(48.0, -1.0, -1.0)  # 2^-48 ... 1
        rho_edges = np.concatenate([[0.0], graded, np.arange(1.25, rho_max + 0.25, 0.25)])
        rho, w_rho = _gauss_legendre(rho_edges)
        phi_edges = np.linspace(0.0, 2.0 * np.pi, 17)  # jumps at 0 and pi fall on panel edges
        phi, w_phi = _gauss_legendre(phi_edges)
        rr, pp = np.meshgrid(rho, phi, indexing="ij")
        weights = np.outer(w_rho, w_phi)
        log_q = self._log_q(rr, pp)
        q = np.exp(log_q)
        return float(-np.sum(weights * q * (log_q - np.log(rr))))

    def bounds(self) -> Bounds:
        r = float(0.5 * self.theta_max + 6.0 * np.sqrt(self.variance))
        return ((-r, r), (-r, r))
